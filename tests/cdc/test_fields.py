"""Field extraction: dotted paths through arrays, text typing, JSON-safe metadata, document ids."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from hypothesis import given
from hypothesis import strategies as st

from cdc.fields import IndexedText, MetadataFields, UserField, document_id, values_at
from core.errors import DocumentRejected


def test_text_joins_paths_in_order_with_a_blank_line() -> None:
    text = IndexedText(["title", "body"])
    assert text({"body": "second", "title": "first"}) == "first\n\nsecond"


def test_text_walks_arrays_of_subdocuments() -> None:
    document = {"sections": [{"text": "one"}, {"title": "no text"}, {"text": "two"}]}
    assert IndexedText(["sections.text"])(document) == "one\n\ntwo"


def test_text_numeric_component_indexes_an_array() -> None:
    document = {"sections": [{"text": "one"}, {"text": "two"}]}
    assert IndexedText(["sections.1.text"])(document) == "two"


def test_text_takes_lists_of_strings_and_numbers() -> None:
    document = {"tags": ["a", "b"], "n": 3, "price": Decimal128("9.50"), "x": 1.5}
    assert IndexedText(["tags", "n", "price", "x"])(document) == "a\n\nb\n\n3\n\n9.50\n\n1.5"


def test_text_skips_missing_null_and_empty() -> None:
    assert IndexedText(["a", "b", "c"])({"b": None, "c": ""}) == ""


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Binary(b"\x00\x01"), "Binary"),
        ({"nested": "doc"}, "dict"),
        (datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
        (True, "bool"),
        (["ok", {"bad": 1}], "dict"),
    ],
)
def test_text_rejects_a_wrong_type_naming_path_and_type(value: object, type_name: str) -> None:
    with pytest.raises(DocumentRejected, match=rf"'body\.text'.*{type_name}"):
        IndexedText(["body.text"])({"body": {"text": value}})


def test_text_refuses_no_fields_and_bad_paths() -> None:
    with pytest.raises(ValueError, match="at least one"):
        IndexedText([])
    with pytest.raises(ValueError, match="not a field path"):
        IndexedText(["a..b"])


def test_metadata_is_json_safe() -> None:
    oid = ObjectId()
    when = datetime(2024, 5, 1, 12, 0)  # noqa: DTZ001 - pymongo decodes BSON dates naive, in UTC
    document = {
        "owner": oid,
        "at": when,
        "price": Decimal128("1.10"),
        "tags": ["x", "y"],
        "nested": {"id": oid, "vals": [Decimal("2.5")]},
        "ratio": float("nan"),
    }
    metadata = MetadataFields(["owner", "at", "price", "tags", "nested", "ratio", "absent"])(
        document
    )
    assert metadata == {
        "owner": str(oid),
        "at": "2024-05-01T12:00:00+00:00",
        "price": "1.10",
        "tags": ["x", "y"],
        "nested": {"id": str(oid), "vals": ["2.5"]},
        "ratio": "nan",
    }
    json.dumps(metadata, allow_nan=False)


def test_metadata_through_an_array_is_a_list_even_of_one() -> None:
    metadata = MetadataFields(["authors.name"])
    assert metadata({"authors": [{"name": "ann"}]}) == {"authors.name": ["ann"]}
    assert metadata({"authors": {"name": "ann"}}) == {"authors.name": "ann"}


def test_user_field() -> None:
    oid = ObjectId()
    assert UserField(None)({"user": "x"}) is None
    assert UserField("user")({}) is None
    assert UserField("user")({"user": oid}) == str(oid)
    assert UserField("owner.id")({"owner": {"id": 42}}) == "42"
    with pytest.raises(DocumentRejected, match=r"'user'.*dict"):
        UserField("user")({"user": {"a": 1}})
    with pytest.raises(DocumentRejected, match="several"):
        UserField("users.id")({"users": [{"id": 1}, {"id": 2}]})


def test_document_id_forms() -> None:
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    assert document_id(oid) == "65a1b2c3d4e5f60718293a4b"
    assert document_id("65a1b2c3d4e5f60718293a4b") != document_id(oid)
    assert document_id("article-7") == "article-7"
    assert document_id(1) != document_id("1")
    assert document_id("$num:1") != document_id(1)
    # MongoDB treats these as one _id value, so they must name one document.
    assert (
        document_id(1)
        == document_id(Int64(1))
        == document_id(1.0)
        == document_id(Decimal128("1.0"))
    )
    assert document_id(1.5) != document_id(1)
    assert document_id({"a": 1, "b": 2}) != document_id({"b": 2, "a": 1})
    u = uuid.uuid4()
    assert document_id(u) == document_id(Binary.from_uuid(u))
    assert document_id(True) != document_id(1)


_ids = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=8).map(lambda b: Binary(b, 0)),
    st.dictionaries(st.text(min_size=1, max_size=3), st.integers(), max_size=3),
    st.booleans(),
)


def _mongo_equal(a: object, b: object) -> bool:
    """Equality as MongoDB's unique _id index sees it, for the generated types."""
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, numbers) and isinstance(b, numbers):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a.items()) == list(b.items())
    return a == b


@given(_ids, _ids)
def test_document_id_is_injective_on_distinct_ids(a: object, b: object) -> None:
    assert (document_id(a) == document_id(b)) == _mongo_equal(a, b)


def test_values_at_missing_and_deep() -> None:
    assert values_at({"a": {"b": [{"c": 1}, {"c": [2, 3]}]}}, "a.b.c") == [1, [2, 3]]
    assert values_at({"a": 1}, "a.b") == []
