"""CDC_FILTER means what it means to MongoDB.

Each row is a query, a document and whether MongoDB returns the document for the
query, written by hand from the server's documentation (the query operator pages and
"Query an Array", "Query on Embedded/Nested Documents", "Query for Null or Missing
Fields", "Comparison/Sort Order"), not computed by any query engine. The pipeline's
filter decides which documents are indexed, so it must agree with the server on
every row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Int64, ObjectId
from bson.decimal128 import Decimal128
from bson.regex import Regex

from cdc.fields import IndexedText, MetadataFields, UserField
from cdc.mapping import ChangeMapper

ITEMS = {"items": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 5}]}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # Query an Array
    ("element equality", {"tags": "a"}, {"tags": ["a", "b"]}, True),
    ("whole array, same order", {"tags": ["a", "b"]}, {"tags": ["a", "b"]}, True),
    ("whole array, other order", {"tags": ["b", "a"]}, {"tags": ["a", "b"]}, False),
    ("whole array, subset", {"tags": ["a"]}, {"tags": ["a", "b"]}, False),
    ("any element satisfies $gt", {"n": {"$gt": 5}}, {"n": [1, 10]}, True),
    ("no element satisfies $gt", {"n": {"$gt": 50}}, {"n": [1, 10]}, False),
    (
        "compound bounds met by different elements",
        {"n": {"$gt": 5, "$lt": 8}},
        {"n": [1, 10]},
        True,
    ),
    (
        "$elemMatch needs one element",
        {"n": {"$elemMatch": {"$gt": 5, "$lt": 8}}},
        {"n": [1, 10]},
        False,
    ),
    (
        "$elemMatch met by one element",
        {"n": {"$elemMatch": {"$gt": 5, "$lt": 8}}},
        {"n": [1, 7]},
        True,
    ),
    (
        "$elemMatch on subdocuments, split",
        {"items": {"$elemMatch": {"sku": "x", "qty": {"$gte": 2}}}},
        ITEMS,
        False,
    ),
    (
        "$elemMatch on subdocuments, one",
        {"items": {"$elemMatch": {"sku": "y", "qty": {"$gte": 2}}}},
        ITEMS,
        True,
    ),
    (
        "dotted conditions may use different elements",
        {"items.sku": "x", "items.qty": {"$gte": 2}},
        ITEMS,
        True,
    ),
    ("$size", {"tags": {"$size": 2}}, {"tags": ["a", "b"]}, True),
    ("$size other length", {"tags": {"$size": 1}}, {"tags": ["a", "b"]}, False),
    ("$all in any order", {"tags": {"$all": ["b", "a"]}}, {"tags": ["a", "b", "c"]}, True),
    ("$all with one absent", {"tags": {"$all": ["a", "z"]}}, {"tags": ["a", "b"]}, False),
    # $exists
    ("$exists true on null", {"a": {"$exists": True}}, {"a": None}, True),
    ("$exists true on missing", {"a": {"$exists": True}}, {}, False),
    ("$exists false on missing", {"a": {"$exists": False}}, {}, True),
    ("$exists false on null", {"a": {"$exists": False}}, {"a": None}, False),
    # Query for Null or Missing Fields
    ("null matches missing", {"a": None}, {}, True),
    ("null matches null", {"a": None}, {"a": None}, True),
    ("null does not match 0", {"a": None}, {"a": 0}, False),
    ("$ne null excludes missing", {"a": {"$ne": None}}, {}, False),
    ("$type null excludes missing", {"a": {"$type": "null"}}, {}, False),
    ("$type null matches null", {"a": {"$type": "null"}}, {"a": None}, True),
    # $in / $nin
    ("$in", {"a": {"$in": [1, 2]}}, {"a": 2}, True),
    ("$in any element", {"a": {"$in": [1, 2]}}, {"a": [5, 2]}, True),
    ("$in none", {"a": {"$in": [1, 2]}}, {"a": [5, 6]}, False),
    ("$in null matches missing", {"a": {"$in": [None, 9]}}, {}, True),
    ("$nin matches missing", {"a": {"$nin": [1, 2]}}, {}, True),
    ("$nin excludes an array holding a value", {"a": {"$nin": [1, 2]}}, {"a": [2, 3]}, False),
    ("$nin", {"a": {"$nin": [1, 2]}}, {"a": 3}, True),
    # $regex and its options
    ("$regex is case-sensitive", {"s": {"$regex": "^acme"}}, {"s": "ACME corp"}, False),
    ("$regex option i", {"s": {"$regex": "^acme", "$options": "i"}}, {"s": "ACME corp"}, True),
    ("$regex ^ without m", {"s": {"$regex": "^b"}}, {"s": "a\nb"}, False),
    ("$regex option m", {"s": {"$regex": "^b", "$options": "m"}}, {"s": "a\nb"}, True),
    ("$regex . without s", {"s": {"$regex": "a.b"}}, {"s": "a\nb"}, False),
    ("$regex option s", {"s": {"$regex": "a.b", "$options": "s"}}, {"s": "a\nb"}, True),
    ("$regex option x", {"s": {"$regex": "a c # spaced", "$options": "x"}}, {"s": "xacx"}, True),
    ("$regex on an array element", {"s": {"$regex": "^acme"}}, {"s": ["x", "acme"]}, True),
    ("$regex never matches a number", {"s": {"$regex": "1"}}, {"s": 1}, False),
    # Comparison/Sort Order: no comparison across type brackets; numbers are one bracket
    ("$gt number vs string", {"a": {"$gt": 5}}, {"a": "10"}, False),
    ("$lt number vs string", {"a": {"$lt": 5}}, {"a": "1"}, False),
    ("$gt string vs number", {"a": {"$gt": "a"}}, {"a": 1}, False),
    ("$gt double vs int", {"a": {"$gt": 5}}, {"a": 10.5}, True),
    ("$gt long vs int", {"a": {"$gt": 5}}, {"a": Int64(6)}, True),
    ("$lte decimal vs int", {"a": {"$lte": 5}}, {"a": Decimal128("4.5")}, True),
    ("int equals double", {"a": 5}, {"a": 5.0}, True),
    (
        "$lt date vs date",
        {"d": {"$lt": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)}},
        {"d": dt.datetime(2024, 6, 1, tzinfo=dt.UTC)},
        True,
    ),
    (
        "$lt date vs string",
        {"d": {"$lt": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)}},
        {"d": "2024-06-01"},
        False,
    ),
    ("$ne matches missing", {"a": {"$ne": 5}}, {}, True),
    ("$ne excludes an array holding the value", {"a": {"$ne": 5}}, {"a": [5, 6]}, False),
    # Query on Embedded/Nested Documents, and dotted paths into arrays
    ("dotted path into a subdocument", {"author.name": "Ada"}, {"author": {"name": "Ada"}}, True),
    (
        "whole subdocument, same field order",
        {"author": {"name": "Ada", "x": 1}},
        {"author": {"name": "Ada", "x": 1}},
        True,
    ),
    (
        "whole subdocument, other field order",
        {"author": {"x": 1, "name": "Ada"}},
        {"author": {"name": "Ada", "x": 1}},
        False,
    ),
    ("dotted path through an array", {"a.b": 2}, {"a": [{"b": 1}, {"b": 2}]}, True),
    ("positional path, other element", {"a.0.b": 2}, {"a": [{"b": 1}, {"b": 2}]}, False),
    ("positional path", {"a.1.b": 2}, {"a": [{"b": 1}, {"b": 2}]}, True),
    ("path through nested arrays", {"a.b": 3}, {"a": [{"b": [1, 3]}]}, True),
    ("positional index of a scalar array", {"a.1": 5}, {"a": [4, 5]}, True),
    ("dotted path missing everywhere", {"a.b": 1}, {"a": [{"c": 1}]}, False),
    # $type, $mod, and equality of other BSON types
    ("a bool is not the number 1", {"a": 1}, {"a": True}, False),
    ("$type number", {"a": {"$type": "number"}}, {"a": 1.5}, True),
    ("$type by number", {"a": {"$type": 2}}, {"a": "x"}, True),
    ("$type array", {"a": {"$type": "array"}}, {"a": [1]}, True),
    ("$type reaches array elements", {"a": {"$type": "string"}}, {"a": [1, "x"]}, True),
    ("$type int is not long", {"a": {"$type": "int"}}, {"a": Int64(1)}, False),
    ("$mod", {"a": {"$mod": [4, 1]}}, {"a": 9}, True),
    ("$mod other remainder", {"a": {"$mod": [4, 1]}}, {"a": 8}, False),
    ("$mod keeps the dividend's sign", {"a": {"$mod": [4, -1]}}, {"a": -9}, True),
    ("$all with $elemMatch", {"items": {"$all": [{"$elemMatch": {"sku": "y"}}]}}, ITEMS, True),
    (
        "$elemMatch with $or",
        {"items": {"$elemMatch": {"$or": [{"sku": "z"}, {"qty": 5}]}}},
        ITEMS,
        True,
    ),
    (
        "ObjectId equality",
        {"o": ObjectId("64b7f0c2a1b2c3d4e5f60718")},
        {"o": ObjectId("64b7f0c2a1b2c3d4e5f60718")},
        True,
    ),
    (
        "ObjectId is not its hex string",
        {"o": "64b7f0c2a1b2c3d4e5f60718"},
        {"o": ObjectId("64b7f0c2a1b2c3d4e5f60718")},
        False,
    ),
    ("a regex value matches", {"s": Regex("^a", "i")}, {"s": "Abc"}, True),
    ("$gte null matches missing", {"a": {"$gte": None}}, {}, True),
    ("$gt null matches nothing", {"a": {"$gt": None}}, {"a": 5}, False),
    ("$gt between strings", {"s": {"$gt": "b"}}, {"s": "c"}, True),
    # Logical operators
    ("$or", {"$or": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
    ("$and", {"$and": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 3}, False),
    ("$nor on missing", {"$nor": [{"a": 1}]}, {}, True),
    ("$not matches missing", {"a": {"$not": {"$gt": 5}}}, {}, True),
    ("$not matches another type", {"a": {"$not": {"$gt": 5}}}, {"a": "x"}, True),
    ("$not", {"a": {"$not": {"$gt": 5}}}, {"a": 7}, False),
]


def mapper(query: dict[str, Any]) -> ChangeMapper:
    return ChangeMapper(IndexedText(["title"]), MetadataFields([]), UserField(None), query)


@pytest.mark.parametrize(
    ("query", "document", "expected"),
    [pytest.param(query, document, expected, id=name) for name, query, document, expected in CASES],
)
def test_the_filter_agrees_with_mongodb(
    query: dict[str, Any], document: dict[str, Any], expected: bool
) -> None:
    assert mapper(query).matches({"_id": 1, **document}) is expected


def test_no_filter_matches_every_document() -> None:
    assert mapper({}).matches({"_id": 1})
