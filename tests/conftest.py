"""Fixtures shared by every test: a real Redis, isolated by a unique pipeline name;
mongosim reached by the real driver; the real model, loaded once per session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from mongosim import ThreadedMongoSim
from sidecar.settings import Settings, load_settings
from tests.embedders import CountingEmbedder
from tests.infinity_server import InfinityServer

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "app"
COLLECTION = "articles"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="also run the tests marked long (minutes each: the 60 s outages, the long torture)",
    )


SLOW_FIRST = (
    "tests/e2e/",
    "tests/indexer/test_quality.py",
    "tests/test_command_line.py",
    "tests/test_outages.py",
)
"""Where the tests of 10-70 s each live. They come first in the collection, so
that a parallel run is less likely to end with one worker on a minute-long test
while the others have nothing left."""


def _slow_first(item: pytest.Item) -> int:
    path = item.nodeid
    return next((rank for rank, prefix in enumerate(SLOW_FIRST) if path.startswith(prefix)), 99)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the tests marked long out unless --long asks for them (they are not skipped:
    they are not part of the run); put the slow modules first (a stable sort: each
    module's tests stay together and in order)."""
    items.sort(key=_slow_first)
    if config.getoption("--long"):
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


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


@pytest.fixture
def sim() -> Iterator[ThreadedMongoSim]:
    """mongosim on its own thread, so the test's loop only runs the code under test."""
    with ThreadedMongoSim() as server:
        yield server


@pytest.fixture
async def mongo(sim: ThreadedMongoSim) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """The test's own client: the "backend" that writes documents."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        sim.uri, serverSelectionTimeoutMS=10_000
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def minilm() -> Iterator[CountingEmbedder]:
    """The bundled all-MiniLM-L6-v2 in fp32, loaded once for the whole session;
    tests count its work by deltas of its counter."""
    embedder = CountingEmbedder()
    try:
        yield embedder
    finally:
        asyncio.run(embedder.stop())


@pytest.fixture
def make_settings(
    sim: ThreadedMongoSim, pipeline_name: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings of this test's pipeline; keyword arguments override the defaults.

    It watches COLLECTION of DATABASE on the test's mongosim. Small chunks keep
    the model's work (and the suite) short; short intervals make the service
    react within a fraction of a second."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mongo_uri": sim.uri,
            "redis_url": REDIS_URL,
            "pipeline": pipeline_name,
            "milvus_uri": str(tmp_path / "milvus.db"),
            "database": DATABASE,
            "collections": [COLLECTION],
            "text_fields": ["title", "body"],
            "metadata_fields": ["lang", "tag"],
            "filter": {},
            "chunk_size": 200,
            "chunk_overlap": 20,
            "milvus_flush_interval": 0.2,
            "index_batch_size": 10,
            "index_batch_interval": 0.1,
            "index_retry_times": 1,
            "index_retry_delay": 0.1,
            # The path the suite's vectors have always had; auto, which measures
            # every path on a first start, has its own tests (tests/indexer/test_quality.py).
            "embedding_precision": "fp32",
            "embedding_cache_dir": tmp_path / "models",
        }
        values.update(overrides)
        return load_settings(**values)

    return build


@pytest.fixture(scope="session")
def infinity_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfinityServer]:
    """A real embedding server (Infinity, the packaged model), started once per session."""
    server = InfinityServer(tmp_path_factory.mktemp("infinity") / "infinity.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def infinity(infinity_process: InfinityServer) -> InfinityServer:
    """The session's embedding server, started again if an earlier test killed it."""
    if not infinity_process.running:
        infinity_process.start()
    return infinity_process
