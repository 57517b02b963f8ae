"""How MongoDB compares two BSON values: equality, order, and their $type names.

Values fall into brackets in the server's comparison order (MinKey, null, numbers,
strings, objects, arrays, binary data, ObjectId, booleans, dates, timestamps,
regular expressions, MaxKey). Numbers of every kind (int, long, double, decimal)
are one bracket and compare by value; a bool is never a number; a naive datetime
is UTC, as MongoDB stores it. Objects compare field by field in their order."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

_MIN_KEY, _NULL, _NUMBER, _STRING, _OBJECT, _ARRAY, _BINARY = range(7)
_OBJECT_ID, _BOOL, _DATE, _TIMESTAMP, _REGEX, _MAX_KEY = range(7, 13)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal128 | Decimal) and not isinstance(value, bool)


def _bracket(value: Any) -> int:
    if value is None:
        return _NULL
    if is_number(value):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, Mapping):
        return _OBJECT
    if isinstance(value, list | tuple):
        return _ARRAY
    if isinstance(value, bytes | uuid.UUID):
        return _BINARY
    if isinstance(value, ObjectId):
        return _OBJECT_ID
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, dt.datetime):
        return _DATE
    if isinstance(value, Timestamp):
        return _TIMESTAMP
    if isinstance(value, Regex | re.Pattern):
        return _REGEX
    if isinstance(value, MinKey):
        return _MIN_KEY
    if isinstance(value, MaxKey):
        return _MAX_KEY
    raise TypeError(f"not a BSON value: {type(value).__name__}")


def _number(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return Decimal(value)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _sign(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 as *a* sorts before, with or after *b*; None when they are in
    different brackets (a query comparison then does not match)."""
    bracket = _bracket(a)
    if bracket != _bracket(b):
        return None
    if bracket == _NUMBER and _number(a).is_nan() != _number(b).is_nan():
        return None  # NaN equals only NaN and is neither above nor below a number
    return _order_within(bracket, a, b)


def _order(a: Any, b: Any) -> int:
    """Total order across brackets, as the server sorts (for values inside objects)."""
    first, second = _bracket(a), _bracket(b)
    if first != second:
        return _sign(first, second)
    return _order_within(first, a, b)


def _order_within(bracket: int, a: Any, b: Any) -> int:
    if bracket in (_NULL, _MIN_KEY, _MAX_KEY):
        return 0
    if bracket == _NUMBER:
        x, y = _number(a), _number(b)
        if x.is_nan() or y.is_nan():
            # NaN sorts below every other number and equals itself.
            return _sign(not x.is_nan(), not y.is_nan())
        return _sign(x, y)
    if bracket == _DATE:
        return _sign(_utc(a), _utc(b))
    if bracket == _OBJECT:
        return _sequence_order(list(a.items()), list(b.items()), keyed=True)
    if bracket == _ARRAY:
        return _sequence_order(list(a), list(b), keyed=False)
    if bracket == _BINARY:
        first, second = _binary(a), _binary(b)
        return _sign((len(first), first), (len(second), second))
    if bracket == _OBJECT_ID:
        return _sign(a.binary, b.binary)
    if bracket == _TIMESTAMP:
        return _sign((a.time, a.inc), (b.time, b.inc))
    if bracket == _REGEX:
        return _sign(_regex_parts(a), _regex_parts(b))
    if bracket == _STRING:
        return _sign(a.encode(), b.encode())
    return _sign(a, b)


def _sequence_order(a: list[Any], b: list[Any], *, keyed: bool) -> int:
    for x, y in zip(a, b, strict=False):
        if keyed:
            (key_x, x), (key_y, y) = x, y
            by_type = _sign(_bracket(x), _bracket(y))
            if by_type:
                return by_type
            by_name = _sign(str(key_x).encode(), str(key_y).encode())
            if by_name:
                return by_name
        by_value = _order(x, y)
        if by_value:
            return by_value
    return _sign(len(a), len(b))


def _binary(value: bytes | uuid.UUID) -> bytes:
    return value.bytes if isinstance(value, uuid.UUID) else bytes(value)


REGEX_OPTIONS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
"""The server's regular expression options, as Python's re flags."""


def option_letters(flags: int | str) -> str:
    """The server's option letters in *flags* (letters, or re flags); others are dropped."""
    if isinstance(flags, str):
        return "".join(letter for letter in REGEX_OPTIONS if letter in flags)
    return "".join(letter for letter, bit in REGEX_OPTIONS.items() if flags & bit)


def _regex_parts(value: Regex[Any] | re.Pattern[Any]) -> tuple[str, str]:
    return (str(value.pattern), option_letters(value.flags))


def equal(a: Any, b: Any) -> bool:
    """Whether the server takes *a* and *b* as the same value: numbers by value, objects
    with the same fields in the same order, arrays element by element."""
    return compare(a, b) == 0


def type_names_of(value: Any) -> set[str]:
    """The $type names *value* answers to ("number" for any number)."""
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"bool"}
    if isinstance(value, Int64):
        return {"long", "number"}
    if isinstance(value, int):
        return {"int" if -(2**31) <= value < 2**31 else "long", "number"}
    if isinstance(value, float):
        return {"double", "number"}
    if isinstance(value, Decimal128 | Decimal):
        return {"decimal", "number"}
    names = {
        _STRING: "string",
        _OBJECT: "object",
        _ARRAY: "array",
        _BINARY: "binData",
        _OBJECT_ID: "objectId",
        _DATE: "date",
        _TIMESTAMP: "timestamp",
        _REGEX: "regex",
        _MIN_KEY: "minKey",
        _MAX_KEY: "maxKey",
    }
    return {names[_bracket(value)]}


_BRACKET_TYPES = {
    _MIN_KEY: ["minKey"],
    _NULL: ["null"],
    _NUMBER: ["double", "int", "long", "decimal"],
    _STRING: ["string"],  # the deprecated symbol type is left out: no driver writes it
    _OBJECT: ["object"],
    _ARRAY: ["array"],
    _BINARY: ["binData"],
    _OBJECT_ID: ["objectId"],
    _BOOL: ["bool"],
    _DATE: ["date"],
    _TIMESTAMP: ["timestamp"],
    _REGEX: ["regex"],
    _MAX_KEY: ["maxKey"],
}


def after(field: str, value: Any) -> dict[str, Any]:
    """The query matching documents whose *field* sorts after *value* in the server's
    order: ``$gt`` compares only within *value*'s type bracket, so the later brackets
    are named by ``$type``. What a scan in ``_id`` order resumes from."""
    later = [
        name
        for bracket, names in _BRACKET_TYPES.items()
        if bracket > _bracket(value)
        for name in names
    ]
    if not later:
        return {field: {"$gt": value}}
    return {"$or": [{field: {"$gt": value}}, *({field: {"$type": name}} for name in later)]}
