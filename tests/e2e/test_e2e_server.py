"""The service on the embedding server backend, against a real server (Infinity serving
the packaged model): the server killed in the middle of the indexing and started
again loses, duplicates and dead-letters nothing; with a list of servers, losing
one of them does not even pause the indexing; a service process started before its
server waits for it, not ready meanwhile, and indexes once it is up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from e2e_harness import paragraphs, running, stream_entries, wait_applied
from pymongo import AsyncMongoClient
from service_process import service_process

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from core.retry import BOARD
from indexer.remote import RemoteEmbedder
from sidecar.app import build_embedder
from sidecar.settings import Settings
from tests.infinity_server import API_KEY, InfinityServer
from tests.tcp_proxy import TcpProxy, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]
DOCUMENTS = 60


@asynccontextmanager
async def server_backend(settings: Settings) -> AsyncIterator[RemoteEmbedder]:
    """The embedder the service builds from *settings*, started."""
    embedder = build_embedder(settings)
    assert isinstance(embedder, RemoteEmbedder)
    await embedder.start()
    try:
        yield embedder
    finally:
        await embedder.stop()


async def write_documents(articles: Any) -> None:
    await articles.insert_many(
        [{"_id": n, "title": f"Doc {n}", "body": paragraphs(f"d{n}", 3)} for n in range(DOCUMENTS)]
    )


async def indexed(stats: Stats) -> int:
    return int((await stats.read())["documents_indexed"])


async def assert_nothing_dead_lettered(redis: aioredis.Redis, keys: Keys) -> None:
    assert await stream_entries(redis, keys.dead) == []
    assert (await Stats(redis, keys).read())["dead_lettered"] == 0


async def test_the_server_killed_mid_batch_and_restarted_loses_nothing(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    infinity: InfinityServer,
) -> None:
    settings = make_settings(embedding_url=infinity.url, embedding_api_key=API_KEY)
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    async with (
        server_backend(settings) as embedder,
        running(settings, redis_client, embedder) as service,
    ):
        await write_documents(articles)

        async def some_indexed() -> bool:
            return await indexed(stats) >= 10

        await eventually(some_indexed, within=60, what="some documents are indexed")
        infinity.kill()
        assert await indexed(stats) < DOCUMENTS, "the server died after the work was done"

        async def outage_reported() -> bool:
            return BOARD.in_progress().get("embedder", 0) > 0

        await eventually(outage_reported, within=30, what="the embedder outage is reported")
        stalled = await indexed(stats)
        await asyncio.to_thread(infinity.start)
        await service.applied(mongo)
        assert await indexed(stats) > stalled
        await service.assert_index_equals_source(mongo)
        await assert_nothing_dead_lettered(redis_client, keys)
    assert "embedder" not in BOARD.in_progress()


async def test_one_server_of_a_list_lost_mid_batch_does_not_stop_the_indexing(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    infinity: InfinityServer,
) -> None:
    proxy = TcpProxy(infinity.port)
    await proxy.start()
    try:
        settings = make_settings(
            embedding_url=f"{infinity.url},http://127.0.0.1:{proxy.port}/v1",
            embedding_api_key=API_KEY,
        )
        keys = Keys(settings.pipeline)
        stats = Stats(redis_client, keys)
        async with (
            server_backend(settings) as embedder,
            running(settings, redis_client, embedder) as service,
        ):
            await write_documents(articles)

            async def some_indexed() -> bool:
                return await indexed(stats) >= 10

            await eventually(some_indexed, within=60, what="some documents are indexed")
            await proxy.cut()
            assert await indexed(stats) < DOCUMENTS, "the server was lost after the work was done"
            await service.applied(mongo)
            await service.assert_index_equals_source(mongo)
            await assert_nothing_dead_lettered(redis_client, keys)
    finally:
        await proxy.cut()


async def test_a_service_started_before_its_server_waits_for_it(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    tmp_path: Path,
) -> None:
    server = InfinityServer(tmp_path / "infinity.log")
    port = free_port()
    settings = make_settings(
        embedding_url=server.url,
        embedding_api_key=API_KEY,
        http_host="127.0.0.1",
        http_port=port,
    )
    keys = Keys(settings.pipeline)
    await articles.insert_many(
        [{"_id": n, "title": f"Doc {n}", "body": paragraphs(f"w{n}", 2)} for n in range(5)]
    )
    async with (
        service_process(settings, tmp_path / "service.log") as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):

        async def readiness() -> dict[str, Any] | None:
            service.require_alive()
            try:
                answer = await client.get("/readyz")
            except httpx.TransportError:
                return None
            report: dict[str, Any] = answer.json()
            return report

        async def waiting_for_the_server() -> bool:
            report = await readiness()
            return report is not None and "embedder" in report["outages"]

        await eventually(waiting_for_the_server, within=60, what="/readyz names the embedder")
        assert not (await readiness() or {}).get("ready")
        await asyncio.to_thread(server.start)
        try:

            async def ready() -> bool:
                report = await readiness()
                return report is not None and bool(report["ready"])

            await eventually(ready, within=60, what="/readyz ready once the server is up")
            await wait_applied(redis_client, keys, mongo)
            assert (await Stats(redis_client, keys).read())["documents_indexed"] == 5
            await assert_nothing_dead_lettered(redis_client, keys)
        finally:
            server.stop()
