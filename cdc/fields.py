"""What a pipeline reads from a MongoDB document: its text, its metadata, its owner, its id.

Paths are dotted ("body", "sections.text"). A path walks through arrays the
way MongoDB queries do: at an array, the rest of the path applies to every
element ("sections.text" on ``{"sections": [{"text": "a"}, {"text": "b"}]}``
yields "a" then "b"); a numeric component indexes the array ("sections.0.text").
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any, Literal

from bson import json_util
from bson.binary import UuidRepresentation
from bson.decimal128 import Decimal128
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from core.errors import DocumentRejected

_OBJECT_ID_HEX = re.compile(r"[0-9a-f]{24}")
# A UUID _id renders the same whether the driver decoded it as uuid.UUID or as Binary subtype 4.
_ID_JSON = CANONICAL_JSON_OPTIONS.with_options(uuid_representation=UuidRepresentation.STANDARD)


def _components(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not part for part in parts) or path.startswith("$"):
        raise ValueError(f"not a field path: {path!r}")
    return parts


def _walk(value: Any, parts: Sequence[str]) -> Iterator[Any]:
    """Yield every value at *parts* under *value*, expanding arrays; a missing path yields none."""
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        if head in value:
            yield from _walk(value[head], rest)
    elif isinstance(value, list):
        if head.isdigit():
            index = int(head)
            if index < len(value):
                yield from _walk(value[index], rest)
        else:
            for element in value:
                if isinstance(element, Mapping):
                    yield from _walk(element, parts)


def _found(document: Mapping[str, Any], parts: Sequence[str]) -> list[Any]:
    """What _walk yields, listed; a top-level path is looked up without walking (the
    common case, on every captured change)."""
    if len(parts) == 1:
        head = parts[0]
        return [document[head]] if head in document else []
    return list(_walk(document, parts))


def values_at(document: Mapping[str, Any], path: str) -> list[Any]:
    """Every value at dotted *path* in *document* (several when the path crosses arrays).

    Raises ValueError when *path* is not a field path."""
    return list(_walk(document, _components(path)))


def _type_name(value: Any) -> str:
    return type(value).__name__


class IndexedText:
    """The text a document contributes to the index: the configured paths' values, in order.

    Strings are taken as they are, numbers as ``str()``, arrays of those element
    by element; the pieces are joined with a blank line. Missing fields, nulls
    and empty strings contribute nothing. Any other type at a text path
    (binary, a subdocument, a date, a boolean) raises DocumentRejected naming
    the path and the type, so a misconfigured path never indexes noise."""

    def __init__(self, fields: Sequence[str]) -> None:
        if not fields:
            raise ValueError("IndexedText needs at least one field path")
        self._paths = tuple(fields)
        self._parts = tuple(_components(path) for path in self._paths)

    @property
    def paths(self) -> tuple[str, ...]:
        return self._paths

    def __call__(self, document: Mapping[str, Any]) -> str:
        pieces: list[str] = []
        for path, parts in zip(self._paths, self._parts, strict=True):
            for value in _found(document, parts):
                if isinstance(value, str):
                    pieces.append(value)
                else:
                    pieces.extend(self._texts(path, value))
        return "\n\n".join(piece for piece in pieces if piece)

    def _texts(self, path: str, value: Any) -> Iterator[str]:
        if value is None:
            return
        if isinstance(value, str):
            yield value
        elif isinstance(value, bool):
            raise DocumentRejected(f"text field {path!r} holds a bool, not text")
        elif isinstance(value, int | float | Decimal | Decimal128):
            yield str(value)
        elif isinstance(value, list):
            for element in value:
                yield from self._texts(path, element)
        else:
            raise DocumentRejected(f"text field {path!r} holds a {_type_name(value)}, not text")


TRUNCATED = "$truncated"
"""Metadata key marking the rows of a document whose text was cut at the limit (its
value: the text's full length). No configured path can start with "$", so it never
collides with one."""


@dataclass(frozen=True)
class TextLimit:
    """The most characters of indexed text one document may have, and what happens to
    a longer one: "truncate" indexes the first *max_chars*, "reject" refuses it."""

    max_chars: int
    policy: Literal["truncate", "reject"] = "truncate"

    def apply(self, text: str) -> tuple[str, int | None]:
        """*text* within the limit, and its full length when it was cut (else None).

        Raises DocumentRejected for a longer text under the "reject" policy."""
        if len(text) <= self.max_chars:
            return text, None
        if self.policy == "reject":
            raise DocumentRejected(
                f"the indexed text has {len(text)} characters, over the limit of "
                f"{self.max_chars} (CDC_MAX_TEXT_CHARS)"
            )
        return text[: self.max_chars], len(text)


def json_safe(value: Any) -> Any:
    """*value* with every BSON-specific type turned into a plain JSON value.

    ObjectId becomes its hex string, a datetime an ISO 8601 string in UTC
    (MongoDB stores UTC; a naive one is taken as UTC), Decimal128 and Decimal
    a string (no precision lost), binary base64, a non-finite float a string."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat()
    if isinstance(value, Decimal128 | Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):  # Binary is a bytes subclass
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Timestamp):
        return (value.time << 32) | value.inc
    if isinstance(value, Regex):
        return value.pattern
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)


class MetadataFields:
    """The configured metadata paths of a document, as JSON-safe values.

    A path that crosses an array maps to the list of values found; a missing
    path is left out of the result."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._paths = tuple(fields)
        self._parts = tuple(_components(path) for path in self._paths)

    @property
    def paths(self) -> tuple[str, ...]:
        return self._paths

    def __call__(self, document: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for path, parts in zip(self._paths, self._parts, strict=True):
            found = _found(document, parts)
            if not found:
                continue
            crosses_array = len(found) > 1 or self._crosses_array(document, parts)
            result[path] = json_safe(found if crosses_array else found[0])
        return result

    @staticmethod
    def _crosses_array(document: Mapping[str, Any], parts: Sequence[str]) -> bool:
        value: Any = document
        for part in parts[:-1]:
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
            if isinstance(value, list):
                return True
        return False


class UserField:
    """The owner of a document, as a string, or None when not configured or absent.

    An ObjectId owner becomes its hex string, a string or an integer its text;
    anything else (an array, a subdocument) raises DocumentRejected."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._parts = _components(path) if path is not None else None

    @property
    def path(self) -> str | None:
        return self._path

    def __call__(self, document: Mapping[str, Any]) -> str | None:
        if self._parts is None:
            return None
        found = _found(document, self._parts)
        if not found or found[0] is None:
            return None
        value = found[0]
        if len(found) > 1:
            raise DocumentRejected(f"user field {self._path!r} holds several values")
        if isinstance(value, ObjectId | str | uuid.UUID):
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise DocumentRejected(f"user field {self._path!r} holds a {_type_name(value)}")


def document_id(value: Any) -> str:
    """A stable string naming one BSON ``_id``, distinct for distinct ids.

    - ObjectId: its 24-digit lowercase hex (the common case stays readable);
    - str: itself, unless it could be mistaken for another form (it looks like
      an ObjectId hex or starts with "$"): then ``"$str:" + value``;
    - numbers: ``"$num:" + canonical text``; MongoDB treats 1, 1.0 and
      NumberLong(1) as the same _id, so they share one string;
    - anything else (binary, UUID, date, subdocument, ...): ``"$ejson:"`` and
      its canonical extended JSON, which keeps subdocument key order (MongoDB
      does too: ``{a: 1, b: 2}`` and ``{b: 2, a: 1}`` are different ids).

    So 1 gives "$num:1" and "1" gives "1"."""
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, str):
        if _OBJECT_ID_HEX.fullmatch(value) or value.startswith("$"):
            return "$str:" + value
        return value
    if isinstance(value, int | float | Decimal128) and not isinstance(value, bool):
        return "$num:" + _canonical_number(value)
    return "$ejson:" + json_util.dumps({"_id": value}, json_options=_ID_JSON)


def id_value(key: str) -> Any:
    """The ``_id`` value that :func:`document_id` named *key*, in a form the driver can
    send whatever its UUID representation: a number comes back as an int when it fits
    in 64 bits, else as the double or Decimal128 that holds it exactly; a UUID as
    Binary subtype 4. (A Decimal128 and a double of the same text share a key; the
    double is returned, which matches the Decimal128 only when both are exact.)"""
    if key.startswith("$str:"):
        return key[len("$str:") :]
    if key.startswith("$num:"):
        return _number(key[len("$num:") :])
    if key.startswith("$ejson:"):
        return json_util.loads(key[len("$ejson:") :], json_options=CANONICAL_JSON_OPTIONS)["_id"]
    if _OBJECT_ID_HEX.fullmatch(key):
        return ObjectId(key)
    return key


def _number(text: str) -> int | float | Decimal128:
    """The number *text* (as _canonical_number wrote it) names."""
    integral = re.fullmatch(r"-?\d+", text) is not None
    if integral and -(2**63) <= int(text) < 2**63:
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return Decimal128(text)
    if integral:
        exact = math.isfinite(number) and Decimal(number) == Decimal(text)
    else:
        exact = repr(number) == text
    return number if exact else Decimal128(text)


def _canonical_number(value: int | float | Decimal128) -> str:
    if isinstance(value, int):
        return str(int(value))
    number = value.to_decimal() if isinstance(value, Decimal128) else Decimal(value)
    if number.is_finite() and number == number.to_integral_value():
        return str(int(number))
    if isinstance(value, float):
        return repr(value)
    return str(number.normalize(Context(prec=34)))
