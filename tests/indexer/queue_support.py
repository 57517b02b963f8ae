"""Filling the real Redis queue for the scheduler's tests."""

from __future__ import annotations

import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from core.events import DocumentEvent


async def enqueue(redis_client: aioredis.Redis, keys: Keys, events: list[DocumentEvent]) -> None:
    """Queue *events* in the live lane, as capture would under a fresh lease."""
    fence = await Lease(redis_client, keys, owner="test").acquire()
    await EventQueue(redis_client, keys).append(events, None, fence=fence)
