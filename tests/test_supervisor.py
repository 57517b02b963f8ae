"""The supervisor in-process, with a deterministic embedder: when one of its tasks meets
an error that no retry can fix, Sidecar.run ends with that error itself (not wrapped in
the task group's ExceptionGroup), so the command line can map it to its exit code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from core.errors import HistoryLost, LeaseLost
from mongosim import ThreadedMongoSim
from sidecar.app import Sidecar
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder
from tests.waiting import eventually

WITHIN = 30.0


@pytest.fixture
async def sidecar(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> AsyncIterator[Sidecar]:
    settings = make_settings()
    async with Sidecar(settings, redis=redis_client, embedder=HashEmbedder()) as service:
        yield service


async def streaming(sidecar: Sidecar, stop: asyncio.Event) -> asyncio.Task[None]:
    """Start *sidecar*; return once it has saved a position (its first scan is done)."""
    task = asyncio.create_task(sidecar.run(stop))

    async def positioned() -> bool:
        if task.done():
            task.result()
        return await sidecar.tokens.load() is not None

    await eventually(positioned, within=WITHIN, what="the sidecar to stream")
    return task


async def test_history_lost_ends_the_run_as_history_lost_when_told_to_halt(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: AsyncMongoClient[dict[str, Any]],
    sim: ThreadedMongoSim,
) -> None:
    settings = make_settings(on_history_lost="halt")
    async with Sidecar(settings, redis=redis_client, embedder=HashEmbedder()) as sidecar:
        await halts_on_lost_history(sidecar, mongo, sim)


async def halts_on_lost_history(
    sidecar: Sidecar, mongo: AsyncMongoClient[dict[str, Any]], sim: ThreadedMongoSim
) -> None:
    stop = asyncio.Event()
    task = await streaming(sidecar, stop)
    stop.set()
    await asyncio.wait_for(task, WITHIN)
    await mongo[DATABASE][COLLECTION].insert_one({"title": "written while stopped"})
    sim.truncate_oplog()

    with pytest.raises(HistoryLost, match="no longer holds the saved position"):
        await asyncio.wait_for(sidecar.run(asyncio.Event()), WITHIN)


async def test_a_lease_taken_over_ends_the_run_as_lease_lost(
    sidecar: Sidecar,
    redis_client: aioredis.Redis,
    pipeline_name: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    task = await streaming(sidecar, asyncio.Event())
    keys = Keys(pipeline_name)
    # The holder was paused past its lease's expiry and another replica took over.
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="another-replica").acquire(wait=False)
    # The stale holder's next queue write is refused by the fence.
    await mongo[DATABASE][COLLECTION].insert_one({"title": "after the take-over"})

    with pytest.raises(LeaseLost):
        await asyncio.wait_for(task, WITHIN)
