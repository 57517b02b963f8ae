"""The service as operators run it: `main.py run` in its own process, configured by
CDC_* variables, killed with SIGKILL in the middle of a batch or stopped with
SIGTERM, then started again. The index must converge (invariants 1 and 2)."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import (
    CONVERGE_SECONDS,
    assert_index_equals_source,
    opened_store,
    paragraphs,
    running,
    written_so_far,
)
from pymongo import AsyncMongoClient
from service_process import ServiceProcess, service_process, streaming

from checkpoints.keys import Keys
from checkpoints.queue import applied_through
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from sidecar.settings import Settings
from sidecar.status import pipeline_status
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = [pytest.mark.model, pytest.mark.slow]

Mongo = AsyncMongoClient[dict[str, Any]]


async def wait_applied_by(
    service: ServiceProcess, redis: aioredis.Redis, keys: Keys, mongo: Mongo
) -> None:
    target = await written_so_far(mongo)

    async def applied() -> bool:
        service.require_alive()
        return await applied_through(redis, keys, target)

    await eventually(applied, within=CONVERGE_SECONDS, what="the service applied every change")


async def test_sigkill_during_a_batch_then_restart_converges(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    # A short lease: the restart takes over from the killed process within seconds.
    settings = make_settings(lease_ttl=5)
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    total = 40
    await articles.insert_many(
        [{"_id": n, "title": f"Doc {n}", "body": paragraphs(f"k{n}", 2)} for n in range(total)]
    )
    log = tmp_path / "service.log"

    async with service_process(settings, log) as first:

        async def mid_indexing() -> bool:
            first.require_alive()
            return (await stats.read())["documents_indexed"] > 0

        await eventually(
            mid_indexing, within=CONVERGE_SECONDS, what="indexing has begun", every=0.01
        )
        assert await first.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    indexed_at_kill = (await stats.read())["documents_indexed"]
    assert 0 < indexed_at_kill < total, "the kill did not land in the middle of indexing"

    await articles.update_many({"_id": {"$lt": 5}}, {"$set": {"body": "Rewritten while down."}})
    await articles.delete_many({"_id": {"$gte": total - 3}})

    async with service_process(settings, log) as second:
        await wait_applied_by(second, redis_client, keys, mongo)
        assert await second.signal_and_wait(signal.SIGTERM) == 0, second.log_tail()

    async with opened_store(settings, embedder) as store:
        expected = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
    assert len(expected) == total - 3


async def test_sigterm_mid_stream_exits_cleanly_and_saves_the_checkpoint(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    tokens = ResumeTokenStore(redis_client, keys)
    enough = asyncio.Event()

    async def write() -> int:
        n = 0
        while not enough.is_set():
            await articles.insert_one(
                {"_id": n, "title": f"Doc {n}", "body": paragraphs(f"t{n}", 2)}
            )
            n += 1
            # About as fast as the model indexes: the stream never goes quiet.
            await asyncio.sleep(0.1)
        return n

    async with service_process(settings, tmp_path / "service.log") as service:

        async def streaming() -> bool:
            service.require_alive()
            return await tokens.load() is not None

        await eventually(streaming, within=CONVERGE_SECONDS, what="the service streams")
        writer = asyncio.create_task(write())

        async def indexing() -> bool:
            service.require_alive()
            return (await stats.read())["documents_indexed"] >= 3

        await eventually(indexing, within=CONVERGE_SECONDS, what="some documents are indexed")
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
        assert not writer.done()

    # The saved position is exactly the end of what was captured: the first change
    # after it is the insert that follows the last one queued (the writer goes on).
    checkpoint = await tokens.load()
    assert checkpoint is not None and checkpoint.token is not None
    captured = (await stats.read())["events_captured"]
    async with await articles.watch(resume_after=checkpoint.token) as stream:
        following = await stream.next()
    assert following["documentKey"]["_id"] == captured
    enough.set()
    written = await writer

    async with running(settings, redis_client, embedder) as restarted:
        await restarted.applied(mongo)
        expected = await assert_index_equals_source(
            settings, restarted.sidecar.store, redis_client, mongo, embedder
        )
    assert len(expected) == written


async def test_sigterm_with_batches_in_flight_exits_within_the_deadline_and_converges(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    """Three batches in flight hold ten times the embedding work the drain deadline
    allows, measured on this machine with this model: the service must give up what
    it cannot finish in time, leaving it queued for the next start."""
    settings = make_settings(
        index_batch_size=20, chunk_size=500, chunk_overlap=50, index_drain_seconds=1.0
    )
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    total = settings.index_batch_size * settings.index_max_workers
    per_document = await paragraphs_for(
        embedder, 10 * settings.index_drain_seconds, documents=total
    )
    async with service_process(settings, tmp_path / "service.log") as service:
        # Written once the service streams, so they come as live changes, in batches
        # of index_batch_size (the first start's load reads small bulk batches).
        await streaming(service, redis_client, keys)
        await articles.insert_many(
            [
                {"_id": n, "title": f"Doc {n}", "body": paragraphs(f"b{n}", per_document, words=60)}
                for n in range(total)
            ]
        )

        async def all_in_flight() -> bool:
            service.require_alive()
            return await pipeline_pending(redis_client, keys) == total

        await eventually(all_in_flight, within=CONVERGE_SECONDS, what="every batch is in flight")
        assert (await stats.read())["documents_indexed"] < total
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
    assert (await stats.read())["documents_indexed"] < total

    async with running(settings, redis_client, embedder) as restarted:
        await restarted.applied(mongo)
        expected = await assert_index_equals_source(
            settings, restarted.sidecar.store, redis_client, mongo, embedder
        )
    assert len(expected) == total


async def paragraphs_for(
    embedder: CountingEmbedder, seconds: float, *, documents: int
) -> int:
    """Paragraphs of 60 words (one chunk each) per document so that *documents* take
    at least *seconds* to embed with *embedder* on this machine (at least 10)."""
    sample = paragraphs("sample", 16, words=60).split("\n\n")
    started = time.monotonic()
    await embedder.embed(sample)
    per_second = len(sample) / (time.monotonic() - started)
    return max(10, math.ceil(seconds * per_second / documents))


async def pipeline_pending(redis: aioredis.Redis, keys: Keys) -> int:
    """Entries the indexer read and has not acknowledged (0 before it started)."""
    return int((await pipeline_status(redis, keys))["pending"])
