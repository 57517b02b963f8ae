"""The service waits out a Redis outage: killed, down for a while, restarted on the same
address. It stays up, logs the outage's start and end, dead-letters nothing, and the
index ends equal to the source. In-process, with the deterministic embedder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog.testing
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from sidecar.app import Sidecar
from sidecar.redis_server import PrivateRedis
from sidecar.settings import Settings
from sidecar.status import applied_through
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder
from tests.waiting import eventually

Mongo = AsyncMongoClient[dict[str, Any]]


@pytest.fixture
def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A Redis of this test's own, with an append-only file, that the test can kill."""
    server = PrivateRedis(data_dir=tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def written_so_far(mongo: Mongo) -> int:
    reply = await mongo[DATABASE].command("ping")
    return int(reply["operationTime"].time << 32 | reply["operationTime"].inc)


@pytest.mark.parametrize("down_seconds", [0.0, 3.0], ids=["restarted", "down-3s"])
async def test_a_redis_outage_is_waited_out_and_the_index_converges(
    make_settings: Callable[..., Settings],
    private_redis: PrivateRedis,
    mongo: Mongo,
    down_seconds: float,
) -> None:
    settings = make_settings(redis_url=private_redis.url, index_batch_size=5)
    keys = Keys(settings.pipeline)
    articles = mongo[DATABASE][COLLECTION]
    client = aioredis.Redis.from_url(private_redis.url, socket_timeout=5)
    try:
        with structlog.testing.capture_logs() as logs:
            async with Sidecar(settings, redis=client, embedder=HashEmbedder()) as sidecar:
                stop = asyncio.Event()
                service = asyncio.create_task(sidecar.run(stop))

                async def applied() -> bool:
                    assert not service.done(), service
                    try:
                        return await applied_through(client, keys, await written_so_far(mongo))
                    except (aioredis.ConnectionError, aioredis.TimeoutError):
                        return False

                await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(20)])
                await eventually(applied, what="the first documents indexed")

                private_redis.kill()
                # Written while Redis is down: capture and the indexer must wait.
                await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(20, 40)])
                await articles.update_one({"_id": 3}, {"$set": {"title": "changed"}})
                await articles.delete_one({"_id": 4})
                await asyncio.sleep(down_seconds)
                await asyncio.to_thread(private_redis.start)

                await eventually(applied, within=60, what="every change indexed after the outage")
                assert not service.done(), "the service must stay up through the outage"
                rows = await sidecar.store.chunk_ids_by_document()
                stop.set()
                await asyncio.wait_for(service, 15)
        dead = int(await client.xlen(keys.dead))
    finally:
        await client.aclose()

    source = {f"{DATABASE}.{COLLECTION}/$num:{n}" for n in range(40) if n != 4}
    assert set(rows) == source
    assert all(len(ids) == 1 for ids in rows.values())
    assert dead == 0, "an outage must never dead-letter a document"
    events = [entry["event"] for entry in logs]
    assert "outage_started" in events and "outage_ended" in events
