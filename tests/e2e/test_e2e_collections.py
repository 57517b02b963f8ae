"""Whole-collection changes through the real service process (`main.py run`, the model,
mongosim, Redis, Milvus Lite): a rename inside the watched set keeps the vectors
(0 chunks embedded), a rename out of it deletes them, a rename into it indexes the
collection, a drop empties the index of it and a recreated collection indexes again,
and dropDatabase empties every watched collection. Between steps `cdc-sidecar check`
(which compares the source, the records and Milvus) must find the index in sync; at
the end the index is compared with the source exhaustively."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import assert_index_equals_source, opened_store, wait_applied
from pymongo import AsyncMongoClient
from service_process import cdc, service_process, streaming

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from sidecar.settings import Settings
from tests.conftest import DATABASE
from tests.embedders import CountingEmbedder

pytestmark = [pytest.mark.model, pytest.mark.slow]
Mongo = AsyncMongoClient[dict[str, Any]]


def documents(label: str, count: int) -> list[dict[str, Any]]:
    return [
        {"_id": f"{label}-{n}", "title": f"{label} {n}", "body": f"Text of {label} {n}. " * 6}
        for n in range(count)
    ]


async def namespaces_indexed(settings: Settings) -> dict[str, int]:
    """Documents with rows in Milvus, by namespace (no service may hold the index)."""
    counts: dict[str, int] = {}
    async with opened_store(settings, CountingEmbedder()) as store:
        await store.flush()
        for namespace, _ in (await store.documents()).values():
            counts[namespace] = counts.get(namespace, 0) + 1
    return counts


async def test_renames_drops_and_drop_database_keep_the_index_true_to_the_source(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings(collections=["articles", "notes", "moved"])
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    database = mongo[DATABASE]
    await database["articles"].insert_many(documents("article", 4))
    await database["notes"].insert_many(documents("note", 2))
    await database["inbox"].insert_many(documents("inbox", 3))  # not watched

    async def in_sync() -> dict[str, int]:
        await wait_applied(redis_client, keys, mongo)
        report = await cdc(settings, "check")  # exit 0: no problem left
        assert sum(report["problems"].values()) == 0, report
        return await stats.read()

    async with service_process(settings, tmp_path / "service.log") as service:
        await streaming(service, redis_client, keys)
        before = await in_sync()

        await database["articles"].rename("moved")  # inside the watched set
        after = await in_sync()
        assert after["documents_rehomed"] - before["documents_rehomed"] == 4
        assert after["embeddings_computed"] == before["embeddings_computed"]

        await database["notes"].rename("archive")  # out of the watched set
        await in_sync()
        await database["inbox"].rename("notes")  # into the watched set: read from source
        after_in = await in_sync()
        assert after_in["chunks_embedded"] > after["chunks_embedded"]

        await database["moved"].drop()
        await in_sync()
        await database["moved"].insert_many(documents("recreated", 2))
        await in_sync()
        await mongo.drop_database(DATABASE)
        await in_sync()
        await database["articles"].insert_many(documents("after", 2))
        await in_sync()
        service.require_alive()
        assert await service.signal_and_wait(signal.SIGTERM) == 0

    assert await namespaces_indexed(settings) == {f"{DATABASE}.articles": 2}
    async with opened_store(settings, embedder) as store:
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
