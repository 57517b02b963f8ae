"""A MongoDB query filter evaluated on one document in memory, as the server evaluates it.

The pipeline's filter (CDC_FILTER) decides which documents are indexed, and the
change stream hands each document over whole, so the filter runs here rather than
in the server. The semantics follow the server's documentation: a path crossing an
array reaches every element, a condition on an array field holds when the array or
any element satisfies it, null matches a missing field, comparisons never cross
type brackets (numbers of every kind are one bracket), subdocument equality is
exact including field order.

Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $type $regex (with $options
i, m, s, x) $not $all $elemMatch $size $mod, and $and $or $nor $comment. Anything
else ($expr, $where, $text, $jsonSchema, geospatial and bitwise operators) raises
UnsupportedQuery when the Query is built, never later on a document."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.regex import Regex

from cdc.bson_order import (
    REGEX_OPTIONS,
    compare,
    equal,
    is_number,
    option_letters,
    type_names_of,
)


class UnsupportedQuery(ValueError):
    """The filter uses an operator this evaluator does not implement, or is malformed."""


class _Missing:
    """A path that leads to no value: what null and $exists false match."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Test = Callable[[Any], bool]
"""A condition on one value (MISSING included)."""

Predicate = Callable[[Mapping[str, Any]], bool]
"""A condition on a whole document."""


class Query:
    """*query* compiled once; call it with a document to learn whether it matches.

    Raises UnsupportedQuery when *query* is not a query this evaluator can apply
    exactly as the server would."""

    def __init__(self, query: Mapping[str, Any]) -> None:
        if not isinstance(query, Mapping):
            raise UnsupportedQuery(f"a query must be a document, got {type(query).__name__}")
        self._predicate = _document_predicate(query)

    def __call__(self, document: Mapping[str, Any]) -> bool:
        return self._predicate(document)


def _document_predicate(query: Mapping[str, Any]) -> Predicate:
    parts: list[Predicate] = []
    for key, value in query.items():
        if key in ("$and", "$or", "$nor"):
            parts.append(_logical(key, value))
        elif key == "$comment":
            continue
        elif key.startswith("$"):
            raise UnsupportedQuery(f"{key} is not supported in a filter")
        else:
            parts.append(_field_predicate(key, value))
    return lambda document: all(part(document) for part in parts)


def _logical(operator: str, clauses: Any) -> Predicate:
    if not isinstance(clauses, list) or not clauses:
        raise UnsupportedQuery(f"{operator} needs a non-empty array of queries")
    compiled = [_document_predicate(_as_query(operator, clause)) for clause in clauses]
    if operator == "$and":
        return lambda document: all(p(document) for p in compiled)
    if operator == "$or":
        return lambda document: any(p(document) for p in compiled)
    return lambda document: not any(p(document) for p in compiled)


def _as_query(operator: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnsupportedQuery(f"{operator} takes queries (documents), got {value!r}")
    return value


def _field_predicate(path: str, condition: Any) -> Predicate:
    parts = path.split(".")
    if any(not part for part in parts):
        raise UnsupportedQuery(f"not a field path: {path!r}")
    test = _condition(condition)
    return lambda document: holds_on_path(document, parts, test)


def holds_on_path(document: Any, parts: Sequence[str], test: Test) -> bool:
    """Whether *test* holds for some value at *parts* under *document*.

    Only the positive sense is given to a path's values: a negated operator
    negates this whole answer, so that ``$ne: 5`` excludes an array holding 5."""
    return any(test(value) for value in values_at(document, parts))


def values_at(value: Any, parts: Sequence[str]) -> list[Any]:
    """The values a query path reaches: arrays on the way reach every element (and,
    for a numeric component, the element at that index too); MISSING where a branch
    ends without the field. An array at the end is one value (tests look inside)."""
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, Mapping):
        return values_at(value[head], rest) if head in value else [MISSING]
    if not isinstance(value, list):
        return [MISSING]
    found: list[Any] = []
    if head.isdigit() and int(head) < len(value):
        found += values_at(value[int(head)], rest)
    for element in value:
        if isinstance(element, Mapping):
            found += values_at(element, parts)
    return [v for v in found if v is not MISSING] or [MISSING]


def _condition(condition: Any) -> Test:
    """The test a field's condition applies to each value at the field's path."""
    if isinstance(condition, Mapping) and condition and _operators(condition):
        return _operator_test(condition)
    return _equality(condition)


def _operators(condition: Mapping[str, Any]) -> bool:
    """Whether *condition* is an operator expression (all keys are operators)."""
    keys = [str(key).startswith("$") for key in condition]
    if any(keys) and not all(keys):
        raise UnsupportedQuery(f"mixes operators and fields: {dict(condition)!r}")
    return all(keys)


def _operator_test(expression: Mapping[str, Any]) -> Test:
    options = expression.get("$options")
    if options is not None and "$regex" not in expression:
        raise UnsupportedQuery("$options needs $regex")
    tests = [
        _operator(name, argument, options)
        for name, argument in expression.items()
        if name != "$options"
    ]
    return lambda value: all(test(value) for test in tests)


def _operator(name: str, argument: Any, options: Any) -> Test:
    if name == "$eq":
        return _equality(argument)
    if name == "$ne":
        matches = _equality(argument)
        return lambda value: not matches(value)
    if name in _COMPARISONS:
        return _comparison(name, argument)
    if name in ("$in", "$nin"):
        return _membership(name, argument)
    if name == "$exists":
        wanted = bool(argument)
        return lambda value: (value is not MISSING) == wanted
    if name == "$type":
        return _type_test(argument)
    if name == "$regex":
        return _elementwise(_regex_test(_regex(argument, options)))
    if name == "$not":
        return _negation(argument)
    if name == "$all":
        return _all(argument)
    if name == "$elemMatch":
        return _elem_match(argument)
    if name == "$size":
        if not isinstance(argument, int) or isinstance(argument, bool) or argument < 0:
            raise UnsupportedQuery(f"$size needs a non-negative whole number, got {argument!r}")
        return lambda value: isinstance(value, list) and len(value) == argument
    if name == "$mod":
        return _elementwise(_modulo(argument))
    raise UnsupportedQuery(f"{name} is not supported in a filter")


def _elementwise(test: Test) -> Test:
    """*test* on a value, or on any element when the value is an array."""
    return lambda value: (
        test(value) or (isinstance(value, list) and any(test(element) for element in value))
    )


def _equality(expected: Any) -> Test:
    if isinstance(expected, Regex | re.Pattern):
        return _elementwise(_regex_test(_regex(expected, None)))
    if expected is None:
        return _elementwise(lambda value: value is None or value is MISSING)
    # An array equals the whole array, or an element that is itself that array.
    return _elementwise(lambda value: value is not MISSING and equal(value, expected))


_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "$gt": lambda order: order > 0,
    "$gte": lambda order: order >= 0,
    "$lt": lambda order: order < 0,
    "$lte": lambda order: order <= 0,
}


def _comparison(name: str, bound: Any) -> Test:
    if isinstance(bound, Regex | re.Pattern):
        raise UnsupportedQuery(f"{name} cannot take a regular expression")
    accepts = _COMPARISONS[name]
    if bound is None:
        # Only null is in null's bracket: $gte/$lte null are null equality.
        return _equality(None) if accepts(0) else (lambda value: False)

    def within(value: Any) -> bool:
        if value is MISSING:
            return False
        order = compare(value, bound)
        return order is not None and accepts(order)

    return _elementwise(within)


def _membership(name: str, candidates: Any) -> Test:
    if not isinstance(candidates, list):
        raise UnsupportedQuery(f"{name} needs an array, got {candidates!r}")
    for candidate in candidates:
        if isinstance(candidate, Mapping) and any(str(k).startswith("$") for k in candidate):
            raise UnsupportedQuery(f"{name} cannot hold an operator expression: {candidate!r}")
    tests = [_equality(candidate) for candidate in candidates]

    def member(value: Any) -> bool:
        return any(test(value) for test in tests)

    if name == "$in":
        return member
    return lambda value: not member(value)


def _type_test(argument: Any) -> Test:
    wanted = argument if isinstance(argument, list) else [argument]
    if not wanted:
        raise UnsupportedQuery("$type needs a type")
    names = {type_name(alias) for alias in wanted}

    def of_type(value: Any) -> bool:
        return value is not MISSING and bool(type_names_of(value) & names)

    return _elementwise(of_type)


_TYPE_NUMBERS = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    -1: "minKey",
    127: "maxKey",
}


def type_name(alias: Any) -> str:
    """The $type alias of *alias* (a number or a name); raises UnsupportedQuery."""
    if isinstance(alias, str) and (alias in _TYPE_NUMBERS.values() or alias == "number"):
        return alias
    if isinstance(alias, int | float) and not isinstance(alias, bool) and alias in _TYPE_NUMBERS:
        return _TYPE_NUMBERS[int(alias)]
    raise UnsupportedQuery(f"$type does not know the type {alias!r}")


def _regex(pattern: Any, options: Any) -> re.Pattern[str]:
    flags = 0
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, Regex):
        options, pattern = (options or "") + option_letters(pattern.flags), pattern.pattern
    if not isinstance(pattern, str):
        raise UnsupportedQuery(f"$regex needs a string, got {pattern!r}")
    for letter in str(options or ""):
        if letter not in REGEX_OPTIONS and letter != "u":
            raise UnsupportedQuery(f"$options does not know the option {letter!r}")
        flags |= REGEX_OPTIONS.get(letter, 0)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise UnsupportedQuery(f"$regex {pattern!r} is not a valid pattern: {exc}") from exc


def _regex_test(pattern: re.Pattern[str]) -> Test:
    return lambda value: isinstance(value, str) and pattern.search(value) is not None


def _negation(argument: Any) -> Test:
    if isinstance(argument, Regex | re.Pattern):
        positive = _equality(argument)
    elif isinstance(argument, Mapping) and argument and _operators(argument):
        positive = _operator_test(argument)
    else:
        raise UnsupportedQuery(f"$not needs an operator expression or a regex, got {argument!r}")
    return lambda value: not positive(value)


def _all(argument: Any) -> Test:
    if not isinstance(argument, list):
        raise UnsupportedQuery(f"$all needs an array, got {argument!r}")
    tests = [
        _elem_match(item["$elemMatch"])
        if isinstance(item, Mapping) and "$elemMatch" in item
        else _equality(item)
        for item in argument
    ]
    # An empty $all matches nothing.
    return lambda value: bool(tests) and all(test(value) for test in tests)


def _elem_match(spec: Any) -> Test:
    if not isinstance(spec, Mapping) or not spec:
        raise UnsupportedQuery(f"$elemMatch needs a non-empty document, got {spec!r}")
    if _operators(spec) and not set(spec) & {"$and", "$or", "$nor"}:
        element_test = _operator_test(spec)
    else:
        document = _document_predicate(spec)

        def element_test(element: Any) -> bool:
            return isinstance(element, Mapping) and document(element)

    return lambda value: isinstance(value, list) and any(element_test(e) for e in value)


def _modulo(argument: Any) -> Test:
    if (
        not isinstance(argument, list)
        or len(argument) != 2
        or not all(is_number(part) for part in argument)
    ):
        raise UnsupportedQuery(f"$mod needs [divisor, remainder], got {argument!r}")
    divisor, remainder = (int(_as_decimal(part)) for part in argument)
    if divisor == 0:
        raise UnsupportedQuery("$mod cannot divide by 0")

    def modulo(value: Any) -> bool:
        if not is_number(value):
            return False
        number = _as_decimal(value)
        if not number.is_finite():
            return False
        dividend = int(number)  # the server truncates toward zero
        rest = abs(dividend) % abs(divisor)
        return (rest if dividend >= 0 else -rest) == remainder

    return modulo


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return Decimal(value)
