"""ThreadedMongoSim: the server on its own thread, driven from synchronous code and
from async tests whose loop does not host it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import NotPrimaryError, OperationFailure

from mongosim import MongoSim, ThreadedMongoSim

SyncClient = MongoClient[dict[str, Any]]


def test_sync_stream_resumes_across_dropped_connections(
    threaded_sim: ThreadedMongoSim, sync_client: SyncClient
) -> None:
    coll = sync_client.threaded.stream
    total = 120
    seen: list[int] = []
    opened = threading.Event()

    def consume() -> None:
        with coll.watch(batch_size=5) as stream:
            opened.set()
            while len(seen) < total:
                change = stream.try_next()
                if change is not None:
                    seen.append(change["documentKey"]["_id"])

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert opened.wait(10)
    writer: SyncClient = MongoClient(threaded_sim.uri)
    try:
        for start in range(0, total, 20):
            writer.threaded.stream.insert_many([{"_id": i} for i in range(start, start + 20)])
            threaded_sim.drop_connections()
            # The next drop only once the stream resumed and read this batch: the driver
            # resumes once per error, so a drop during its resume would end the stream.
            deadline = time.monotonic() + 10
            while len(seen) < start + 20 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        writer.close()
    consumer.join(30)
    assert not consumer.is_alive()
    assert seen == list(range(total))


def test_sync_controls(threaded_sim: ThreadedMongoSim) -> None:
    client: SyncClient = MongoClient(threaded_sim.uri, retryWrites=False)
    try:
        with client.threaded.c.watch() as stream:
            client.threaded.c.insert_one({"_id": 1})
            token = stream.next()["_id"]
        threaded_sim.step_down()
        with pytest.raises(NotPrimaryError):
            client.threaded.c.insert_one({"_id": 2})
        threaded_sim.step_up()
        threaded_sim.truncate_oplog()
        with (
            pytest.raises(OperationFailure) as lost,
            client.threaded.c.watch(resume_after=token) as s,
        ):
            s.try_next()
        assert lost.value.code == 286
    finally:
        client.close()


async def test_async_client_on_a_loop_that_does_not_host_the_server(
    threaded_sim: ThreadedMongoSim,
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(threaded_sim.uri)
    try:
        async with await client.threaded.a.watch() as stream:
            await client.threaded.a.insert_one({"_id": "x"})
            assert (await stream.next())["documentKey"] == {"_id": "x"}
    finally:
        await client.close()


def test_results_larger_than_16_mb_come_in_several_batches(sync_client: SyncClient) -> None:
    coll = sync_client.threaded.big
    blob = "y" * 1_000_000
    coll.insert_many([{"_id": i, "blob": blob} for i in range(40)])
    docs = list(coll.find({}, batch_size=40))
    assert [d["_id"] for d in docs] == list(range(40))


async def test_a_port_in_use_fails_start_and_leaves_nothing_running() -> None:
    with ThreadedMongoSim(port=0) as first:
        with pytest.raises(OSError):
            ThreadedMongoSim(port=first.port).start()
        with pytest.raises(OSError):
            await MongoSim(port=first.port).start()
    assert not [t for t in threading.enumerate() if t.name == "mongosim"]
