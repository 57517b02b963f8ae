"""BSON comparison as the server's "Comparison/Sort Order" documentation states it."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

from cdc.bson_order import compare, equal, type_names_of

# One value per bracket, lowest first, as the documentation lists them.
SORT_ORDER: list[Any] = [
    MinKey(),
    None,
    3,
    "text",
    {"a": 1},
    [1],
    Binary(b"\x01"),
    ObjectId("64b7f0c2a1b2c3d4e5f60718"),
    False,
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    Timestamp(1, 1),
    Regex("^a"),
    MaxKey(),
]


def test_values_of_different_brackets_are_not_compared() -> None:
    for i, a in enumerate(SORT_ORDER):
        for b in SORT_ORDER[i + 1 :]:
            assert compare(a, b) is None, (a, b)


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        (1, 1.5),
        (Int64(2), Decimal128("2.5")),
        (-1e300, 0),
        (float("-inf"), -1e300),
        ("B", "a"),  # by UTF-8 bytes: upper case first
        ("z", "é"),
        ({"a": 1}, {"a": 2}),
        ({"a": 1}, {"b": 0}),  # field names before values
        ({"a": 1}, {"a": "x"}),  # a number sorts before a string in the same field
        ({"a": 1}, {"a": 1, "b": 1}),
        ([1, 2], [1, 3]),
        ([1], [1, 0]),
        (Binary(b"\xff"), Binary(b"\x00\x00")),  # shorter first
        (ObjectId("000000000000000000000001"), ObjectId("000000000000000000000002")),
        (False, True),
        # A naive datetime is UTC, as MongoDB stores it.
        (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 1, 0, 0, 1)),  # noqa: DTZ001
        (Timestamp(1, 9), Timestamp(2, 0)),
        (Timestamp(5, 1), Timestamp(5, 2)),
    ],
)
def test_order_within_a_bracket(smaller: Any, larger: Any) -> None:
    assert compare(smaller, larger) == -1
    assert compare(larger, smaller) == 1


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1.0, True),
        (Int64(7), Decimal128("7.00"), True),
        (True, 1, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),
        ({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2}]}, True),
        (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), True),  # noqa: DTZ001
        (float("nan"), float("nan"), True),
        (float("nan"), 0, False),
        (Regex("^a", "i"), re.compile("^a", re.IGNORECASE), True),
    ],
)
def test_equality(a: Any, b: Any, same: bool) -> None:
    assert equal(a, b) is same


def test_nan_is_neither_above_nor_below_a_number() -> None:
    assert compare(float("nan"), 1) is None
    assert compare(1, Decimal128("NaN")) is None


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (1, {"int", "number"}),
        (2**40, {"long", "number"}),
        (Int64(1), {"long", "number"}),
        (1.0, {"double", "number"}),
        (Decimal128("1"), {"decimal", "number"}),
        (True, {"bool"}),
        (None, {"null"}),
        ("x", {"string"}),
        ([], {"array"}),
        ({}, {"object"}),
        (ObjectId(), {"objectId"}),
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), {"date"}),
        (Binary(b""), {"binData"}),
    ],
)
def test_type_names(value: Any, names: set[str]) -> None:
    assert type_names_of(value) == names


def test_a_value_outside_bson_is_refused() -> None:
    with pytest.raises(TypeError, match="not a BSON value"):
        compare(object(), 1)
