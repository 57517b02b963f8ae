"""Invariant 1 (no gap) through the running service: a stop in the middle of a
stream of writes, and connections dropped by the server, miss nothing and
duplicate nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import paragraphs, running
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from mongosim import ThreadedMongoSim
from sidecar.settings import Settings
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]


class Writer:
    """A backend writing until told to stop: inserts documents 0, 1, 2, ...; every
    third write also rewrites an earlier document and every seventh deletes one,
    so the stream mixes all three kinds of change."""

    def __init__(self, articles: Any) -> None:
        self._articles = articles
        self.written = 0
        self._enough = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write())

    @property
    def writing(self) -> bool:
        return self._task is not None and not self._task.done()

    async def until_written(self, more: int) -> None:
        """Wait until *more* documents beyond the current count are written."""
        target = self.written + more

        async def written() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            return self.written >= target

        await eventually(written, within=30, what=f"{target} documents are written")

    async def finish(self) -> None:
        self._enough.set()
        if self._task is not None:
            await self._task

    async def _write(self) -> None:
        articles = self._articles
        while not self._enough.is_set():
            n = self.written
            await articles.insert_one(
                {"_id": n, "title": f"Doc {n}", "body": paragraphs(f"d{n}", 2)}
            )
            if n % 3 == 2:
                await articles.update_one(
                    {"_id": n - 2}, {"$set": {"body": paragraphs(f"r{n}", 1), "tag": f"t{n}"}}
                )
            if n % 7 == 6:
                await articles.delete_one({"_id": n - 5})
            self.written += 1
            # About as fast as the model indexes: capture and indexing interleave
            # with the writes and the backlog stays small.
            await asyncio.sleep(0.1)


def indexed_at_least(stats: Stats, documents: int) -> Callable[[], Any]:
    async def check() -> bool:
        return (await stats.read())["documents_indexed"] >= documents

    return check


@pytest.mark.slow
async def test_stop_mid_stream_then_restart_misses_nothing(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    stats = Stats(redis_client, Keys(settings.pipeline))
    writer = Writer(articles)
    async with running(settings, redis_client, embedder) as service:
        writer.start()
        await eventually(
            indexed_at_least(stats, 5), within=30, what="some documents are indexed"
        )
        service.stop.set()
        await asyncio.wait_for(service.task, timeout=10)
    assert writer.writing
    await writer.until_written(10)

    async with running(settings, redis_client, embedder) as service:
        await writer.until_written(5)
        await writer.finish()
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)


async def test_connections_dropped_mid_stream_are_resumed(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    sim: ThreadedMongoSim,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    stats = Stats(redis_client, Keys(settings.pipeline))
    writer = Writer(articles)
    async with running(settings, redis_client, embedder) as service:
        writer.start()
        for documents in (3, 10):
            await eventually(
                indexed_at_least(stats, documents), within=30, what="documents are indexed"
            )
            assert writer.writing
            sim.drop_connections()
        await writer.until_written(5)
        await writer.finish()
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)
