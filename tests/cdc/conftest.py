"""Fixtures for capture tests: a mongosim replica set reached by the real driver, and a
pipeline's Redis objects (queue, checkpoint store, stats, fence) in the shared real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from capture_support import PipelineParts
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from mongosim import ThreadedMongoSim


@pytest.fixture
def sim() -> Iterator[ThreadedMongoSim]:
    with ThreadedMongoSim(oplog_size=100_000) as server:
        yield server


@pytest.fixture
async def mongo(sim: ThreadedMongoSim) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        sim.uri, serverSelectionTimeoutMS=5000
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def parts(redis_client: aioredis.Redis, pipeline_name: str) -> AsyncIterator[PipelineParts]:
    keys = Keys(pipeline_name)
    lease = Lease(redis_client, keys, owner="capture-test")
    fence = await lease.acquire(wait=False)
    yield PipelineParts(
        keys=keys,
        redis=redis_client,
        queue=EventQueue(redis_client, keys),
        tokens=ResumeTokenStore(redis_client, keys),
        stats=Stats(redis_client, keys),
        lease=lease,
        fence=fence,
    )
    await lease.release()
