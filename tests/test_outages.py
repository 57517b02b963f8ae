"""The service waits out outages of Redis (killed, down for a while, restarted on the same
address) and of a Milvus server (the connection cut by a proxy, then restored). It stays
up, logs each outage's start and end, dead-letters nothing, and the index ends equal to
the source. In-process, with the deterministic embedder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from api.app import create_app
from api.metrics import Metrics
from api.state import ServiceState
from checkpoints.keys import Keys
from checkpoints.queue import applied_through
from checkpoints.tokens import pack_timestamp
from sidecar.app import Sidecar
from sidecar.redis_server import PrivateRedis
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE, REDIS_URL
from tests.embedders import HashEmbedder
from tests.tcp_proxy import TcpProxy, milvus_lite_server
from tests.waiting import eventually

Mongo = AsyncMongoClient[dict[str, Any]]
Switch = Callable[[], Awaitable[None]]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, with an append-only file, that the test can kill."""
    server = PrivateRedis(data_dir=tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def milvus_proxy(tmp_path: Path) -> AsyncIterator[TcpProxy]:
    """A Milvus Lite server in its own process, reached through a proxy the test cuts."""
    with milvus_lite_server(tmp_path / "milvus") as port:
        proxy = TcpProxy(port)
        await proxy.start()
        try:
            yield proxy
        finally:
            await proxy.cut()


async def survives(
    settings: Settings, mongo: Mongo, *, cut: Switch, restore: Switch, down_seconds: float
) -> None:
    """Run the sidecar; cut a dependency after the first documents are indexed, write
    while it is down, restore it; require the service to stay up and converge."""
    keys = Keys(settings.pipeline)
    articles = mongo[DATABASE][COLLECTION]
    client = aioredis.Redis.from_url(settings.redis_url or REDIS_URL, socket_timeout=5)
    try:
        with structlog.testing.capture_logs() as logs:
            async with Sidecar(settings, redis=client, embedder=HashEmbedder()) as sidecar:
                stop = asyncio.Event()
                service = asyncio.create_task(sidecar.run(stop))

                async def applied() -> bool:
                    assert not service.done(), "the service must stay up through the outage"
                    reply = await mongo[DATABASE].command("ping")
                    written = pack_timestamp(reply["operationTime"])
                    try:
                        return await applied_through(client, keys, written)
                    except (aioredis.ConnectionError, aioredis.TimeoutError):
                        return False

                await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(20)])
                await eventually(applied, what="the first documents indexed")

                await cut()
                await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(20, 40)])
                await articles.update_one({"_id": 3}, {"$set": {"title": "changed"}})
                await articles.delete_one({"_id": 4})
                await asyncio.sleep(down_seconds)
                await restore()

                await eventually(applied, within=90, what="every change indexed after the outage")
                await sidecar.store.flush()
                rows = await sidecar.store.chunk_ids_by_document()
                texts = {
                    r.text for r in await sidecar.store.chunks_of(f"{DATABASE}.{COLLECTION}/$num:3")
                }
                stop.set()
                await asyncio.wait_for(service, 15)
        dead = int(await client.xlen(keys.dead))
    finally:
        await client.aclose()

    assert set(rows) == {f"{DATABASE}.{COLLECTION}/$num:{n}" for n in range(40) if n != 4}
    assert all(len(ids) == 1 for ids in rows.values())
    assert texts == {"changed"}
    assert dead == 0, "an outage must never dead-letter a document"
    events = [entry["event"] for entry in logs]
    assert "outage_started" in events and "outage_ended" in events


@pytest.mark.parametrize(
    "down_seconds",
    [0.0, 3.0, pytest.param(60.0, marks=pytest.mark.long)],
    ids=["restarted", "down-3s", "down-60s"],
)
async def test_a_redis_outage_is_waited_out_and_the_index_converges(
    make_settings: Callable[..., Settings],
    private_redis: PrivateRedis,
    mongo: Mongo,
    down_seconds: float,
) -> None:
    async def kill() -> None:
        private_redis.kill()

    async def start() -> None:
        await asyncio.to_thread(private_redis.start)

    settings = make_settings(redis_url=private_redis.url, index_batch_size=5)
    await survives(settings, mongo, cut=kill, restore=start, down_seconds=down_seconds)


@pytest.mark.parametrize(
    "down_seconds", [5.0, pytest.param(60.0, marks=pytest.mark.long)], ids=["5s", "60s"]
)
async def test_a_milvus_server_unreachable_for_a_while_is_waited_out(
    make_settings: Callable[..., Settings],
    milvus_proxy: TcpProxy,
    mongo: Mongo,
    down_seconds: float,
) -> None:
    settings = make_settings(milvus_uri=f"http://127.0.0.1:{milvus_proxy.port}", index_batch_size=5)
    await survives(
        settings,
        mongo,
        cut=milvus_proxy.cut,
        restore=milvus_proxy.restore,
        down_seconds=down_seconds,
    )


async def test_readiness_and_the_outage_metric_follow_a_milvus_outage(
    make_settings: Callable[..., Settings],
    milvus_proxy: TcpProxy,
    mongo: Mongo,
) -> None:
    """/readyz answers 503 naming the dependency while the service waits an outage out,
    outage_active says which, and both recover with the dependency."""
    settings = make_settings(milvus_uri=f"http://127.0.0.1:{milvus_proxy.port}", index_batch_size=5)
    articles = mongo[DATABASE][COLLECTION]
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    state = ServiceState(settings, Metrics(settings.pipeline), asyncio.Event(), redis=client)
    transport = httpx.ASGITransport(app=create_app(state))
    try:
        async with (
            Sidecar(
                settings, redis=client, embedder=HashEmbedder(), observer=state.metrics
            ) as sidecar,
            httpx.AsyncClient(transport=transport, base_url="http://sidecar") as http,
        ):
            state.pipeline = sidecar
            service = asyncio.create_task(sidecar.run(state.stop))

            async def readiness(status: int, outages: list[str]) -> bool:
                assert not service.done(), "the service must stay up through the outage"
                answer = await http.get("/readyz")
                return answer.status_code == status and answer.json()["outages"] == outages

            async def outage_active() -> float:
                scrape = (await http.get("/metrics")).text
                return next(
                    sample.value
                    for family in text_string_to_metric_families(scrape)
                    for sample in family.samples
                    if sample.name == "cdc_sidecar_outage_active"
                    and sample.labels["dependency"] == "milvus"
                )

            await eventually(lambda: readiness(200, []), what="ready while streaming")
            assert await outage_active() == 0
            await milvus_proxy.cut()
            await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(10)])
            await eventually(
                lambda: readiness(503, ["milvus"]), within=60, what="503 during the outage"
            )
            assert await outage_active() == 1
            await milvus_proxy.restore()
            await eventually(lambda: readiness(200, []), within=90, what="ready after it")
            assert await outage_active() == 0
            state.stop.set()
            await asyncio.wait_for(service, 15)
    finally:
        await client.aclose()
