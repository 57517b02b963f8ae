"""Fixtures shared by every test: a real Redis, isolated by a unique pipeline name."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("CDC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def pipeline_name() -> str:
    """A pipeline name no other test uses, so tests share one Redis without colliding."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(pipeline_name: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"cdc:{pipeline_name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
