"""Fixtures for capture tests: a mongosim replica set reached by the real driver, and a
pipeline's Redis objects (queue, checkpoint store, stats, fence) in the shared real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from capture_support import PipelineParts

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore


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
