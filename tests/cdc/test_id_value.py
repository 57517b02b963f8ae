"""id_value inverts document_id: the key a document is known by leads back to its _id."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from hypothesis import given
from hypothesis import strategies as st

from cdc.fields import document_id, id_value

OBJECT_ID = ObjectId("5f1d7a3b9c0e4d2a1b3c4d5e")
UUID = uuid.UUID("1078432f-59bd-4419-a07d-b25994db759e")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def round_trip(value: Any) -> str:
    """The key of the _id that id_value returns for *value*'s key."""
    return document_id(id_value(document_id(value)))


@pytest.mark.parametrize(
    ("value", "back"),
    [
        pytest.param(OBJECT_ID, OBJECT_ID, id="object-id"),
        pytest.param("plain", "plain", id="plain-str"),
        pytest.param("", "", id="empty-str"),
        pytest.param("42", "42", id="str-of-digits"),
        pytest.param("5f1d7a3b9c0e4d2a1b3c4d5e", "5f1d7a3b9c0e4d2a1b3c4d5e", id="str-like-hex"),
        pytest.param("$num:1", "$num:1", id="str-like-a-number-key"),
        pytest.param("$ejson:{}", "$ejson:{}", id="str-like-an-ejson-key"),
        pytest.param(42, 42, id="int"),
        pytest.param(-7, -7, id="negative-int"),
        pytest.param(0, 0, id="zero"),
        pytest.param(Int64(2**62), 2**62, id="int64"),
        pytest.param(1.5, 1.5, id="float"),
        pytest.param(0.1, 0.1, id="float-not-exact-in-binary"),
        pytest.param(-2.25, -2.25, id="negative-float"),
        pytest.param(1e-7, 1e-7, id="float-in-exponent-form"),
        # As Binary subtype 4, which the driver sends whatever its uuidRepresentation.
        pytest.param(UUID, Binary(UUID.bytes, 4), id="uuid"),
    ],
)
def test_id_value_gives_back_the_id(value: Any, back: Any) -> None:
    found = id_value(document_id(value))

    assert found == back
    assert type(found) is type(back)
    assert document_id(found) == document_id(value)


@pytest.mark.parametrize(
    ("value", "back"),
    [
        pytest.param(2.0, 2, id="integral-float-as-int"),
        pytest.param(-0.0, 0, id="negative-zero-as-int"),
        pytest.param(Decimal128("7"), 7, id="integral-decimal-as-int"),
        pytest.param(Decimal128("1.50"), 1.5, id="decimal-a-double-holds-as-float"),
    ],
)
def test_numbers_mongodb_holds_equal_come_back_in_one_type(value: Any, back: Any) -> None:
    found = id_value(document_id(value))

    assert found == back
    assert type(found) is type(back)
    assert document_id(found) == document_id(value)


def test_a_decimal_no_double_holds_stays_a_decimal() -> None:
    value = Decimal128("0.1000000000000000000000000000000001")

    found = id_value(document_id(value))

    assert found == value
    assert isinstance(found, Decimal128)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_decimals_round_trip(text: str) -> None:
    value = Decimal128(text)

    assert round_trip(value) == document_id(value)
    assert isinstance(id_value(document_id(value)), Decimal128)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_floats_come_back_as_floats(value: float) -> None:
    assert id_value(document_id(value)) == value


def test_nan_float_round_trips() -> None:
    found = id_value(document_id(math.nan))

    assert isinstance(found, float)
    assert math.isnan(found)


def test_a_subdocument_keeps_its_key_order() -> None:
    value = {"b": 1, "a": {"y": 2, "x": 1.5}}
    reordered = {"a": {"x": 1.5, "y": 2}, "b": 1}

    found = id_value(document_id(value))

    assert found == value
    assert list(found) == ["b", "a"]
    assert list(found["a"]) == ["y", "x"]
    assert document_id(found) == document_id(value) != document_id(reordered)


def test_a_datetime_comes_back_as_the_same_instant() -> None:
    found = id_value(document_id(WHEN))

    assert isinstance(found, datetime)
    # BSON keeps UTC milliseconds; the decoded value carries no zone.
    assert found.replace(tzinfo=UTC) == WHEN
    assert document_id(found) == document_id(WHEN)


def test_a_datetime_loses_only_what_bson_drops() -> None:
    precise = WHEN + timedelta(microseconds=456)

    found = id_value(document_id(precise))

    assert found.replace(tzinfo=UTC) == WHEN
    assert round_trip(precise) == document_id(precise)


def test_keys_of_distinct_forms_stay_distinct() -> None:
    values: list[Any] = [OBJECT_ID, str(OBJECT_ID), 1, "1", "$num:1", 1.5, "1.5", UUID, str(UUID)]

    keys = [document_id(value) for value in values]
    found = [id_value(key) for key in keys]

    assert len(set(keys)) == len(values)
    assert [document_id(value) for value in found] == keys


@given(st.text())
def test_every_string_round_trips(value: str) -> None:
    assert id_value(document_id(value)) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_every_int64_round_trips(value: int) -> None:
    found = id_value(document_id(value))

    assert found == value
    assert type(found) is int


@given(st.floats())
def test_every_float_round_trips(value: float) -> None:
    assert round_trip(value) == document_id(value)


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))
def test_a_non_integral_float_comes_back_equal(value: float) -> None:
    found = id_value(document_id(value))

    assert found == value
    assert type(found) is float


@given(
    st.integers(min_value=-(10**34) + 1, max_value=10**34 - 1),
    st.integers(min_value=-60, max_value=60),
)
def test_every_decimal_round_trips(coefficient: int, exponent: int) -> None:
    value = Decimal128(f"{coefficient}E{exponent}")

    assert round_trip(value) == document_id(value)


ID_LEAVES = (
    st.text(max_size=8)
    | st.integers(min_value=-(2**31), max_value=2**31 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)


@given(st.dictionaries(st.text(max_size=5).filter(lambda k: not k.startswith("$")), ID_LEAVES))
def test_every_flat_subdocument_round_trips_in_order(value: dict[str, Any]) -> None:
    found = id_value(document_id(value))

    assert list(found) == list(value)
    assert document_id(found) == document_id(value)


@given(st.uuids())
def test_every_uuid_round_trips(value: uuid.UUID) -> None:
    found = id_value(document_id(value))
    assert found == Binary(value.bytes, 4)
    assert document_id(found) == document_id(value)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),  # noqa: DTZ001 (hypothesis bounds are naive)
        max_value=datetime(9999, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_every_datetime_round_trips(value: datetime) -> None:
    assert round_trip(value) == document_id(value)
