"""Lost history heals without a person (CDC_ON_HISTORY_LOST=resync, the default): the
service keeps running, restarts capture at the stream's end, rescans, re-embeds only
what changed, deletes the vectors of documents the source no longer holds, and keeps
the other documents' vectors searchable throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from cdc.fields import document_id
from checkpoints.audit import AuditLog
from checkpoints.backfills import BackfillStore
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from indexer.store import ChunkRow
from mongosim import ThreadedMongoSim
from sidecar.app import Sidecar
from sidecar.resync import Resync
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder
from tests.waiting import eventually

WITHIN = 60.0
Client = AsyncMongoClient[dict[str, Any]]


def key(n: int) -> str:
    return f"{DATABASE}.{COLLECTION}/{document_id(n)}"


async def settled(sidecar: Sidecar) -> bool:
    queue = EventQueue(sidecar.redis, sidecar.keys)
    return (await queue.backlog(), await queue.bulk_backlog(), await queue.pending()) == (0, 0, 0)


async def test_lost_history_is_resynchronised_by_the_running_service(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Client,
    sim: ThreadedMongoSim,
) -> None:
    articles = mongo[DATABASE][COLLECTION]
    await articles.insert_many([{"_id": n, "title": f"title {n}"} for n in range(10)])
    embedder = HashEmbedder()
    async with Sidecar(make_settings(), redis=redis_client, embedder=embedder) as sidecar:
        stop = asyncio.Event()
        first = asyncio.create_task(sidecar.run(stop))

        async def indexed() -> bool:
            return len(await sidecar.store.chunk_ids_by_document()) == 10 and await settled(sidecar)

        await eventually(indexed, within=WITHIN, what="the first scan to be indexed")
        stop.set()
        await asyncio.wait_for(first, WITHIN)

        # While the service is down: changes, then the oplog rolls past its position.
        await articles.delete_one({"_id": 3})
        await articles.update_one({"_id": 5}, {"$set": {"title": "rewritten while down"}})
        await articles.insert_one({"_id": 10, "title": "created while down"})
        # A collection dropped while down (its vectors, planted here, must go too).
        dropped = ChunkRow(
            id="dropped-1", doc_key=f"{DATABASE}.dropped/x", namespace=f"{DATABASE}.dropped",
            document_id="x", chunk_index=0, text="gone", vector=[0.5] * embedder.dimension,
            updated_at=0, metadata={},
        )
        await sidecar.store.upsert([dropped])
        sim.truncate_oplog()
        embedded_before = embedder.counter.texts

        stop = asyncio.Event()
        second = asyncio.create_task(sidecar.run(stop))
        store = BackfillStore(redis_client, sidecar.keys)
        unchanged = key(0)

        async def healed() -> bool:
            if second.done():
                second.result()  # the service must not have stopped
            indexed = await sidecar.store.chunk_ids_by_document()
            assert unchanged in indexed  # searchable throughout
            job = await store.load()
            # The first start's load left a finished job too: wait for the resync's.
            resynced = job is not None and job.reason == "history lost" and job.state == "done"
            return resynced and await settled(sidecar)

        await eventually(healed, within=WITHIN, what="the resynchronisation")
        # A change after the new position is followed as usual.
        await articles.insert_one({"_id": 11, "title": "after the resync"})

        async def streaming() -> bool:
            return key(11) in await sidecar.store.chunk_ids_by_document()

        await eventually(streaming, within=WITHIN, what="capture to follow on")
        stop.set()
        await asyncio.wait_for(second, WITHIN)

        indexed = await sidecar.store.chunk_ids_by_document()
        expected = {key(n) for n in (*range(10), 10, 11) if n != 3}
        assert set(indexed) == expected
        rewritten = await sidecar.store.chunks_of(key(5))
        assert [row.text for row in rewritten] == ["rewritten while down"]
        # Only the changed and new documents were embedded again.
        assert embedder.counter.texts - embedded_before == 3
        job = await store.load()
        assert job is not None and (job.reason, job.swept, job.queued) == ("history lost", 2, 10)
        audit = [entry.command for entry in await AuditLog(redis_client, sidecar.keys).recent()]
        assert audit[:2] == ["checkpoint reset --to-now (history lost)", "resync (history lost)"]
        counters = await Stats(redis_client, sidecar.keys).read()
        assert counters["dead_lettered"] == 0


async def test_a_stop_while_the_resync_waits_out_an_outage_ends_the_run_cleanly(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Client,
    sim: ThreadedMongoSim,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with Sidecar(make_settings(), redis=redis_client, embedder=HashEmbedder()) as sidecar:
        stop = asyncio.Event()
        first = asyncio.create_task(sidecar.run(stop))

        async def positioned() -> bool:
            return await sidecar.tokens.load() is not None

        await eventually(positioned, within=WITHIN, what="the sidecar to stream")
        stop.set()
        await asyncio.wait_for(first, WITHIN)
        await mongo[DATABASE][COLLECTION].insert_one({"title": "written while down"})
        sim.truncate_oplog()
        attempts: list[str] = []

        async def unreachable(self: Resync, by: str, fence: int, why: str) -> None:
            attempts.append(why)
            raise ConnectionError("MongoDB is down")

        monkeypatch.setattr(Resync, "start", unreachable)
        stop = asyncio.Event()
        second = asyncio.create_task(sidecar.run(stop))

        async def waiting_it_out() -> bool:
            return len(attempts) >= 2

        await eventually(waiting_it_out, within=WITHIN, what="the resync to be retried")
        stop.set()
        await asyncio.wait_for(second, WITHIN)  # returns: no Stopped, no HistoryLost
