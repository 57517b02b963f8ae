"""Fixtures for the checkpoints tests: the pipeline's keys and a held lease's fence."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease


@pytest.fixture
def keys(pipeline_name: str) -> Keys:
    return Keys(pipeline_name)


@pytest.fixture
async def fence(redis_client: aioredis.Redis, keys: Keys) -> int:
    """The fence of a lease acquired for the test (released when the keys are cleaned)."""
    return await Lease(redis_client, keys, owner="test-writer").acquire(wait=False)

