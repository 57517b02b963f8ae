"""Nothing a client sends takes the server down: random command documents, for
every command mongosim knows, each get an answer, and service carries on."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson import Int64, ObjectId, Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongosim import ThreadedMongoSim
from mongosim.commands import COMMANDS

ARGUMENTS = [
    "documents",
    "updates",
    "deletes",
    "filter",
    "query",
    "sort",
    "projection",
    "fields",
    "pipeline",
    "cursor",
    "batchSize",
    "limit",
    "skip",
    "collection",
    "cursors",
    "update",
    "remove",
    "new",
    "upsert",
    "to",
    "dropTarget",
    "mode",
    "data",
    "indexes",
    "index",
    "key",
    "maxTimeMS",
    "ordered",
    "nameOnly",
    "changeStreamPreAndPostImages",
    "singleBatch",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.builds(Int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(ObjectId),
    st.builds(Timestamp, st.integers(0, 2**31), st.integers(0, 2**31)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "$set",
                    "$match",
                    "_id",
                    "a",
                    "$changeStream",
                    "q",
                    "u",
                    "times",
                    "_data",
                    "key",
                    "$project",
                ]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
commands = st.builds(
    lambda name, target, args: {name: target, **args},
    st.sampled_from([*sorted(COMMANDS), "bogus"]),
    st.one_of(st.just("c"), st.just(1), values),
    st.dictionaries(st.sampled_from(ARGUMENTS), values, max_size=4),
)


class Wire:
    """A blocking raw OP_MSG connection."""

    def __init__(self, port: int) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._ids = 0

    def close(self) -> None:
        self._socket.close()

    def command(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to *body*, or None if the server closed the connection."""
        self._ids += 1
        payload = struct.pack("<I", 0) + b"\x00" + bson.encode({**body, "$db": "fuzz"})
        self._socket.sendall(struct.pack("<iiii", 16 + len(payload), self._ids, 0, 2013) + payload)
        header = self._read(16)
        if header is None:
            return None
        length = struct.unpack("<i", header[:4])[0]
        rest = self._read(length - 16)
        return None if rest is None else bson.decode(rest[5:])

    def _read(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=commands)
def test_random_commands_always_get_an_answer(body: dict[str, Any]) -> None:
    with ThreadedMongoSim(port=0, oplog_size=100) as sim:
        wire = Wire(sim.port)
        try:
            reply = wire.command(body)
            if reply is None:  # only a fail point's closeConnection may hang up
                assert next(iter(body)) == "configureFailPoint" or body.get("closeConnection")
                wire.close()
                wire = Wire(sim.port)
            else:
                assert reply["ok"] in (0.0, 1.0)
                assert "operationTime" in reply
                assert reply.get("code") != 1, reply  # no unexpected exception inside mongosim
            wire.command({"configureFailPoint": "failCommand", "mode": "off"})
            wire.command({"configureFailPoint": "failGetMoreAfterCursorCheckout", "mode": "off"})
            assert wire.command({"ping": 1}) is not None
        finally:
            wire.close()


operators = st.sampled_from(
    [
        "$set",
        "$inc",
        "$unset",
        "$push",
        "$pull",
        "$addToSet",
        "$rename",
        "$min",
        "$mul",
        "$each",
        "$slice",
        "$elemMatch",
        "$gt",
        "$in",
        "$exists",
        "$regex",
        "$size",
        "$all",
        "$not",
        "$or",
        "$and",
        "$type",
        "$mod",
    ]
)
fields = st.one_of(st.sampled_from(["a", "b", "a.b", "_id", "arr", "arr.0", "$"]), operators)
documents = st.dictionaries(fields, values, max_size=3)
stages = st.dictionaries(
    st.sampled_from(
        [
            "$match",
            "$project",
            "$group",
            "$sort",
            "$limit",
            "$skip",
            "$unwind",
            "$addFields",
            "$set",
            "$unset",
            "$replaceRoot",
            "$count",
            "$lookup",
            "$facet",
        ]
    ),
    st.one_of(values, documents),
    min_size=1,
    max_size=1,
)
well_formed = st.one_of(
    st.builds(
        lambda d: {"insert": "c", "documents": d}, st.lists(documents, min_size=1, max_size=3)
    ),
    st.builds(
        lambda q, u, upsert, multi: {
            "update": "c",
            "updates": [{"q": q, "u": u, "upsert": upsert, "multi": multi}],
        },
        documents,
        st.one_of(documents, st.lists(stages, max_size=2)),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda q: {"delete": "c", "deletes": [{"q": q, "limit": 0}]}, documents),
    st.builds(
        lambda f, s, p: {"find": "c", "filter": f, "sort": s, "projection": p},
        documents,
        documents,
        documents,
    ),
    st.builds(
        lambda p: {"aggregate": "c", "pipeline": p, "cursor": {}}, st.lists(stages, max_size=3)
    ),
    st.builds(
        lambda o, p: {"aggregate": "c", "pipeline": [{"$changeStream": o}, *p], "cursor": {}},
        documents,
        st.lists(stages, max_size=2),
    ),
    st.builds(
        lambda q, u: {"findAndModify": "c", "query": q, "update": u, "new": True},
        documents,
        documents,
    ),
)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[ThreadedMongoSim]:
    """One server for many examples: what one example leaves behind is dropped after it."""
    with ThreadedMongoSim(port=0, oplog_size=1_000) as sim:
        yield sim


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=well_formed)
def test_random_contents_of_well_formed_commands(
    shared_sim: ThreadedMongoSim, body: dict[str, Any]
) -> None:
    wire = Wire(shared_sim.port)
    try:
        seed = [{"_id": 1, "a": 1, "arr": [1, {"a": 2}]}, {"_id": 2, "a": "x", "b": {"c": 1}}]
        wire.command({"insert": "c", "documents": seed})
        reply = wire.command(body)
        assert reply is not None
        assert reply.get("code") != 1, reply
        wire.command({"drop": "c"})
    finally:
        wire.close()
