"""What the operator-command tests share: a running in-process service (deterministic
embedder) that has indexed 30 documents, and ways to plant what the index should not hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from indexer.store import ChunkRow
from sidecar.app import Sidecar
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]
WITHIN = 60.0


@pytest.fixture
async def service(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, mongo: Client
) -> AsyncIterator[Sidecar]:
    """A running sidecar that has indexed 30 documents and streams."""
    await mongo[DATABASE][COLLECTION].insert_many(
        [{"_id": n, "title": f"title {n}", "body": f"body of document {n} " * 5} for n in range(30)]
    )
    stop = asyncio.Event()
    async with Sidecar(make_settings(), redis=redis_client, embedder=HashEmbedder()) as sidecar:
        task = asyncio.create_task(sidecar.run(stop))

        async def indexed() -> bool:
            if task.done():
                task.result()
            counters = await Stats(redis_client, sidecar.keys).read()
            return counters["documents_indexed"] >= 30 and await idle(sidecar)

        await eventually(indexed, within=WITHIN, what="the first scan to be indexed")
        yield sidecar
        stop.set()
        await asyncio.wait_for(task, WITHIN)


async def idle(sidecar: Sidecar) -> bool:
    queue = EventQueue(sidecar.redis, sidecar.keys)
    return (await queue.backlog(), await queue.bulk_backlog(), await queue.pending()) == (0, 0, 0)


async def orphan_rows(service: Sidecar, doc_key: str) -> list[ChunkRow]:
    """A row for a document the source never had (a leftover of another system)."""
    namespace, _, document = doc_key.partition("/")
    (vector,) = await service.embedder.embed(["orphan"])
    return [
        ChunkRow(
            id=f"orphan-{document}", doc_key=doc_key, namespace=namespace,
            document_id=document, chunk_index=0, text="orphan", vector=vector,
            updated_at=0, metadata={},
        )
    ]
