from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from tests.conftest import REDIS_URL


async def test_counters_start_at_zero_and_add_up(redis_client: aioredis.Redis, keys: Keys) -> None:
    stats = Stats(redis_client, keys)
    assert await stats.read() == dict.fromkeys(Stats.COUNTERS, 0)

    await stats.incr({"documents_indexed": 2, "chunks_embedded": 5})
    await stats.incr({"documents_indexed": 1, "deletes": 0})

    counts = await stats.read()
    assert (counts["documents_indexed"], counts["chunks_embedded"], counts["deletes"]) == (3, 5, 0)


async def test_an_unknown_counter_is_refused_and_nothing_counted(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    stats = Stats(redis_client, keys)
    with pytest.raises(ValueError, match="documents_indexd"):
        await stats.incr({"deletes": 1, "documents_indexd": 1})
    assert await stats.read() == dict.fromkeys(Stats.COUNTERS, 0)


async def test_nothing_applied_before_the_first_commit(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    assert await Stats(redis_client, keys).last_applied() is None


async def test_counters_read_through_a_client_that_decodes_replies(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    await Stats(redis_client, keys).incr({"deletes": 2})
    decoding = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        counts = await Stats(decoding, keys).read()
    finally:
        await decoding.aclose()
    assert counts["deletes"] == 2
