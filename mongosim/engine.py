"""mongomock's query and aggregation engine behind typed signatures."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import mongomock
from bson import MaxKey, MinKey, Regex, Timestamp
from mongomock import aggregate, filtering

# $type names mongomock leaves unimplemented (it raises for them) that a server
# answers: a scan resuming in _id order names every type bracket after the last _id.
filtering.TYPE_MAP.update(
    {
        "null": lambda v: v is None,
        "regex": lambda v: isinstance(v, Regex | re.Pattern),
        "timestamp": lambda v: isinstance(v, Timestamp),
        "minKey": lambda v: isinstance(v, MinKey),
        "maxKey": lambda v: isinstance(v, MaxKey),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
        "long": lambda v: isinstance(v, int)
        and not isinstance(v, bool)
        and not -(2**31) <= v < 2**31,
    }
)


def matches(query: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """Whether *document* satisfies the MongoDB *query*."""
    return bool(filtering.filter_applies(query, document))  # type: ignore[no-untyped-call]


def results(cursor: Any) -> list[dict[str, Any]]:
    """Every document a mongomock find *cursor* yields (skip and limit applied), taken
    at once. Iterating such a cursor slices its whole result list on every next(), which
    is quadratic in the result's size (50,000 documents took 15 s, blocking the server)."""
    found: list[dict[str, Any]] = cursor._compute_results(with_limit_and_skip=True)
    return list(found)


def run_pipeline(
    documents: Iterable[Mapping[str, Any]],
    database: mongomock.Database[dict[str, Any]],
    pipeline: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The result of aggregation *pipeline* over *documents*.

    *database* serves stages that read other collections ($lookup).
    """
    cursor = aggregate.process_pipeline(documents, database, pipeline, None)  # type: ignore[no-untyped-call]
    return list(cursor)


def compatible_stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    """*stage* rewritten into the form mongomock evaluates with the server's meaning.

    mongomock lacks the ``$set``/``$unset``/``$replaceWith`` aliases and reads a
    dotted computed field in ``$project`` as a top-level name.
    """
    name, spec = next(iter(stage.items()))
    if name == "$set":
        return {"$addFields": spec}
    if name == "$replaceWith":
        return {"$replaceRoot": {"newRoot": spec}}
    if name == "$unset":
        fields = [spec] if isinstance(spec, str) else list(spec)
        return {"$project": dict.fromkeys(fields, 0)}
    if name == "$project" and isinstance(spec, Mapping):
        return {"$project": _nest_computed_paths(spec)}
    return {name: spec}


def _nest_computed_paths(spec: Mapping[str, Any]) -> dict[str, Any]:
    # The server reads {"a.b": <expression>} as a computed field b inside a;
    # mongomock would create a top-level field named "a.b".
    nested: dict[str, Any] = {}
    for key, value in spec.items():
        inclusion = isinstance(value, bool | int | float)
        if "." not in key or inclusion:
            nested[key] = value
            continue
        head, _, rest = key.partition(".")
        branch = nested.setdefault(head, {})
        if isinstance(branch, dict):
            branch.update(_nest_computed_paths({rest: value}))
    return nested
