"""Fault injection and robustness: dropped connections, fail points, step-down,
pauses, slow readers and many concurrent clients."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

from mongosim import MongoSim
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]


async def test_stream_survives_killed_connections_exactly_once(
    sim: MongoSim, client: Client
) -> None:
    coll = client.faults.stream
    total = 300
    seen: list[int] = []

    async def consume() -> None:
        async with await coll.watch(batch_size=7) as stream:
            ready.set()
            while len(seen) < total:
                change = await stream.try_next()
                if change is not None:
                    seen.append(change["documentKey"]["_id"])

    ready = asyncio.Event()
    consumer = asyncio.create_task(consume())
    await ready.wait()
    writer_client: Client = AsyncMongoClient(sim.uri)
    try:
        for start in range(0, total, 30):
            await writer_client.faults.stream.insert_many(
                [{"_id": i} for i in range(start, start + 30)]
            )
            sim.drop_connections()
        await asyncio.wait_for(consumer, 30)
    finally:
        consumer.cancel()
        await writer_client.close()
    assert seen == list(range(total))


async def test_fail_command_modes_and_actions(sim: MongoSim, client: Client) -> None:
    admin = client.admin
    coll = client.faults.fp
    await admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 2},
        data={"failCommands": ["find"], "errorCode": 2, "errorLabels": ["Custom"]},
    )
    for _ in range(2):
        with pytest.raises(OperationFailure) as caught:
            await coll.find_one()
        assert caught.value.code == 2
        assert caught.value.has_error_label("Custom")
    assert await coll.find_one() is None  # spent after two

    await admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={"failCommands": ["insert"], "errorCode": 10107},
    )
    other: Client = AsyncMongoClient(sim.uri, retryWrites=False)
    try:
        with pytest.raises(NotPrimaryError) as labelled:
            await other.faults.fp.insert_one({})
        assert labelled.value.has_error_label("RetryableWriteError") is False  # no txnNumber
    finally:
        await other.close()
    await admin.command("configureFailPoint", "failCommand", mode="off")

    await admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["ping"], "blockConnection": True, "blockTimeMS": 300},
    )
    started = time.monotonic()
    await admin.command("ping")
    assert time.monotonic() - started >= 0.3

    await admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": ["find"], "closeConnection": True},
    )
    with pytest.raises(AutoReconnect):
        await client.faults.command("find", "fp")
    assert await coll.find_one() is None  # the driver reconnects

    with pytest.raises(OperationFailure) as unknown:
        await admin.command("configureFailPoint", "noSuchFailPoint", mode="alwaysOn")
    assert unknown.value.code == 2


async def test_step_down_rejects_writes_until_step_up(sim: MongoSim) -> None:
    client: Client = AsyncMongoClient(
        sim.uri, retryWrites=False, heartbeatFrequencyMS=500, serverSelectionTimeoutMS=5_000
    )
    try:
        await client.faults.sd.insert_one({"_id": 1})
        sim.step_down()
        with pytest.raises(NotPrimaryError) as caught:
            await client.faults.sd.insert_one({"_id": 2})
        assert isinstance(caught.value.details, dict)
        assert caught.value.details["code"] == 10107
        pending = asyncio.create_task(client.faults.sd.insert_one({"_id": 3}))
        await asyncio.sleep(0.5)
        assert not pending.done()  # the driver waits for a primary
        sim.step_up()
        await asyncio.wait_for(pending, 10)
        assert sorted(await client.faults.sd.distinct("_id")) == [1, 3]
    finally:
        await client.close()


async def test_pause_stops_answering_then_recovers(sim: MongoSim) -> None:
    # No read retry: a retry on a fresh connection would wait out the pause in
    # its handshake and hide the timeout this test is about.
    client: Client = AsyncMongoClient(
        sim.uri,
        socketTimeoutMS=300,
        connectTimeoutMS=300,
        retryReads=False,
        serverSelectionTimeoutMS=5_000,
    )
    try:
        await client.admin.command("ping")
        # Ten times the socket timeout: the read can only fail by timing out while
        # the server is silent, never succeed by outlasting the pause.
        sim.pause(3.0)
        started = time.monotonic()
        with pytest.raises(AutoReconnect, match="timed out"):
            await client.faults.p.find_one()

        async def answers() -> bool:
            try:
                await client.admin.command("ping")
            except AutoReconnect:
                return False
            return True

        await eventually(answers, what="mongosim to answer after the pause")
        assert time.monotonic() - started >= 2.9  # it answered again only once the pause ended
    finally:
        await client.close()


async def test_slow_reader_does_not_block_writers(sim: MongoSim, client: Client) -> None:
    coll = client.faults.big
    blob = "x" * 100_000
    await coll.insert_many([{"_id": i, "blob": blob} for i in range(150)])
    _, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        body = bson.encode({"find": "big", "batchSize": 150, "$db": "faults"})
        payload = struct.pack("<I", 0) + b"\x00" + body
        writer.write(struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload)
        await writer.drain()
        # That ~15 MB reply is never read; everyone else must carry on.
        async with await client.faults.other.watch() as stream, asyncio.timeout(30):
            await client.faults.other.insert_many([{"_id": i} for i in range(200)])
            events = [await stream.next() for _ in range(200)]
        assert [e["documentKey"]["_id"] for e in events] == list(range(200))
    finally:
        writer.close()
        await writer.wait_closed()


async def test_twenty_concurrent_clients(sim: MongoSim, client: Client) -> None:
    clients: list[Client] = [AsyncMongoClient(sim.uri) for _ in range(20)]

    async def work(number: int, driver: Client) -> int:
        coll = driver.faults.concurrent
        for i in range(25):
            await coll.insert_one({"client": number, "i": i})
            await coll.find_one({"client": number, "i": i})
        return await coll.count_documents({"client": number})

    try:
        async with await client.faults.concurrent.watch() as stream:
            counts = await asyncio.gather(*(work(n, c) for n, c in enumerate(clients)))
            events = [await stream.next() for _ in range(500)]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    assert counts == [25] * 20
    assert len({e["documentKey"]["_id"] for e in events}) == 500


async def test_stream_scanning_long_history_does_not_stall_others() -> None:
    async with MongoSim(port=0, oplog_size=50_000) as sim:
        client: Client = AsyncMongoClient(sim.uri)
        try:
            started_at = (await client.admin.command("ping"))["operationTime"]
            for start in range(0, 30_000, 1_000):
                await client.faults.history.insert_many(
                    [{"_id": i} for i in range(start, start + 1_000)]
                )
            latencies: list[float] = []
            answering, done = asyncio.Event(), asyncio.Event()

            async def ping_until_done() -> None:
                while not done.is_set():
                    before = time.monotonic()
                    await client.admin.command("ping")
                    latencies.append(time.monotonic() - before)
                    answering.set()

            pinger = asyncio.create_task(ping_until_done())
            await answering.wait()
            scan_started = time.monotonic()
            async with await client.faults.history.watch(
                # $project runs through mongomock for every event: a slow scan.
                [{"$project": {"key": "$fullDocument._id"}}, {"$match": {"key": -1}}],
                start_at_operation_time=started_at,
                max_await_time_ms=3_000,
            ) as stream:
                await stream.try_next()
            scan_seconds = time.monotonic() - scan_started
            done.set()
            await pinger
        finally:
            await client.close()
    # Pings kept being answered all through the scan, each in a small part of it: a
    # scan that held the server would have made one ping wait for all of it.
    assert len(latencies) >= 10
    assert max(latencies) < scan_seconds / 4
