"""The priority lane (CDC_PRIORITY_FILTER): capture's urgent events are queued there in
the same atomic write as the rest of their batch, and the reader takes them before
any live or bulk entry, also when it is blocked waiting for work."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis

from checkpoints.consumer import PRIORITY_PREFIX, EventReader
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import Checkpoint, ResumeTokenStore
from tests.checkpoints.test_lanes import created, documents, fill


async def test_urgent_events_go_to_the_priority_lane_with_their_batch(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    events = [created(name) for name in ("a", "vip", "b")]
    position = Checkpoint({"_data": "82AB"}, 7, None, datetime(2026, 1, 2, tzinfo=UTC))

    await EventQueue(redis_client, keys).append(events, position, fence=fence, urgent={"vip"})

    assert await redis_client.xlen(keys.priority) == 1
    assert await redis_client.xlen(keys.events) == 2
    assert await EventQueue(redis_client, keys).backlog() == 3  # backpressure counts both
    assert await ResumeTokenStore(redis_client, keys).load() == position
    assert (await Stats(redis_client, keys).read())["events_captured"] == 3


async def test_priority_entries_are_read_first_and_acknowledged_in_their_lane(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await fill(redis_client, keys, fence, live=2, bulk=2)
    queue = EventQueue(redis_client, keys)
    await queue.append([created("vip-0"), created("vip-1")], None, fence=fence, urgent={"vip-0"})
    reader = EventReader(redis_client, keys, consumer="c1", bulk_batch=10)
    await reader.start()

    first = await reader.read(10, block_ms=0)
    assert documents(first) == ["vip-0"]
    assert first[0].entry_id.startswith(PRIORITY_PREFIX)
    assert documents(await reader.read(10, block_ms=0)) == ["live-0", "live-1", "vip-1"]
    assert documents(await reader.read(10, block_ms=0)) == ["bulk-0", "bulk-1"]

    await reader.commit([first[0].entry_id], versions={}, counts={}, last_applied=None)
    assert await redis_client.xlen(keys.priority) == 0
    assert await redis_client.xlen(keys.events) == 3  # the live lane is untouched
    assert await queue.pending() == 5


async def test_a_dead_lettered_priority_entry_leaves_its_lane(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await EventQueue(redis_client, keys).append([created("vip")], None, fence=fence, urgent={"vip"})
    reader = EventReader(redis_client, keys, consumer="c1")
    await reader.start()
    [entry] = await reader.read(10, block_ms=0)

    await reader.dead_letter(entry, "cannot be indexed")

    assert await redis_client.xlen(keys.priority) == 0
    assert await redis_client.xlen(keys.dead) == 1
    assert await EventQueue(redis_client, keys).pending() == 0


async def test_a_blocked_read_wakes_for_a_priority_entry(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    reader = EventReader(redis_client, keys, consumer="c1")
    await reader.start()
    started = time.monotonic()
    waiting = asyncio.create_task(reader.read(10, block_ms=5_000))
    await asyncio.sleep(0.2)
    await EventQueue(redis_client, keys).append([created("vip")], None, fence=fence, urgent={"vip"})

    entries = await asyncio.wait_for(waiting, 5)

    assert documents(entries) == ["vip"]
    assert time.monotonic() - started < 2.0
