"""mongosim's own inclusion $project gives what mongomock's aggregation gave for it."""

from __future__ import annotations

import copy
import random
from typing import Any

import mongomock
import pytest

from mongosim.engine import compatible_stage, run_pipeline
from mongosim.projection import Inclusion

SPECS: list[dict[str, Any]] = [
    {"_id": 1, "a": 1},
    {"a.b": 1},
    {"a.b": 1, "c": True, "_id": 0},
    {"a.b.c": 1, "a.c": 1},
    {"_id": False, "a.a": 1.0},
    {"fullDocument._id": 1, "fullDocument.a": 1, "fullDocument.b.c": 1, "ns": 1},
]


def value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.4:
        return rng.choice([1, "x", None, 2.5])
    if roll < 0.7:
        return {key: value(rng, depth + 1) for key in rng.sample("abc", rng.randint(0, 3))}
    return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_an_inclusion_projects_as_mongomock_does(spec: dict[str, Any]) -> None:
    database = mongomock.MongoClient().db
    inclusion = Inclusion.of(spec)
    assert inclusion is not None
    rng = random.Random(11)
    names = ["a", "b", "c", "fullDocument", "ns"]
    for _ in range(500):
        count = rng.randint(0, len(names))
        document = {"_id": 1, **{name: value(rng, 0) for name in rng.sample(names, count)}}
        stage = compatible_stage({"$project": spec})
        expected = run_pipeline([copy.deepcopy(document)], database, [stage])[0]
        projected = inclusion(document)
        assert projected == expected and list(projected) == list(expected), document


@pytest.mark.parametrize(
    "spec",
    [{"a": 0}, {"_id": 0}, {"a": "$b"}, {"a": {"$literal": 1}}, {"a": 1, "a.b": 1}, {"a": 2}, {}],
    ids=str,
)
def test_anything_but_a_plain_inclusion_is_left_to_mongomock(spec: dict[str, Any]) -> None:
    assert Inclusion.of(spec) is None
