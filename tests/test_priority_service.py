"""VIP documents first, through the running service: with a backlog of ordinary changes
queued while indexing was paused, the change of a document the priority query admits
is indexed before all of them, and the index still converges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from checkpoints.audit import AuditEntry
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue
from sidecar.app import Sidecar
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.e2e.e2e_harness import wait_applied
from tests.embedders import HashEmbedder
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]


async def test_a_vip_change_overtakes_the_backlog(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, mongo: Client
) -> None:
    settings = make_settings(
        priority_filter={"tier": "gold"}, index_max_workers=1, index_batch_size=5
    )
    articles = mongo[DATABASE][COLLECTION]
    async with Sidecar(settings, redis=redis_client, embedder=HashEmbedder()) as sidecar:
        stop = asyncio.Event()
        task = asyncio.create_task(sidecar.run(stop))
        await wait_applied(redis_client, sidecar.keys, mongo, service=task)
        pause = PauseFlag(redis_client, sidecar.keys)
        entry = AuditEntry(datetime.now(UTC), "pause", "test", "done")
        await pause.pause("build a backlog", fence=sidecar.lease.fence, audit=entry)
        # A read already waiting when the pause came would take the changes below.
        assert await sidecar._reads_paused(10)
        await articles.insert_many([{"_id": n, "title": f"ordinary {n}"} for n in range(40)])
        await articles.insert_one({"_id": "vip", "title": "a gold customer", "tier": "gold"})

        async def backlog() -> bool:
            return await EventQueue(redis_client, sidecar.keys).backlog() == 41

        await eventually(backlog, what="the 41 changes to be queued")
        entry = AuditEntry(datetime.now(UTC), "resume", "test", "done")
        await pause.resume(fence=sidecar.lease.fence, audit=entry)
        await wait_applied(redis_client, sidecar.keys, mongo, service=task)
        records = await sidecar.versions.get_many(
            [f"{DATABASE}.{COLLECTION}/{key}" for key in ("vip", *(f"$num:{n}" for n in range(40)))]
        )
        stop.set()
        await asyncio.wait_for(task, 30)
    vip = records.pop(f"{DATABASE}.{COLLECTION}/vip")
    assert len(records) == 40
    assert vip.updated_at < min(record.updated_at for record in records.values())
