"""Invariant 2 under redelivery: events replayed into the queue with the versions
they had, and older versions queued after newer ones, leave the index as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import (
    COLLECTION,
    assert_index_equals_source,
    doc_key,
    paragraphs,
    running,
    stream_entries,
    until,
    written_so_far,
)
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from indexer.embedding import SentenceTransformerEmbedder
from sidecar.settings import Settings

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]


@pytest.mark.slow
async def test_replayed_and_reordered_deliveries_do_not_change_the_index(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: SentenceTransformerEmbedder,
) -> None:
    keys = Keys(make_settings().pipeline)
    async with running(make_settings(index_auto_update=False), redis_client, embedder) as service:
        await articles.insert_many(
            [
                {"_id": "a", "title": "Alpha", "body": paragraphs("a", 2), "lang": "en"},
                {"_id": "b", "title": "Beta", "body": paragraphs("b", 2)},
                {"_id": "c", "title": "Gamma", "body": paragraphs("c", 3), "tag": "one"},
            ]
        )
        await articles.update_one({"_id": "a"}, {"$set": {"body": paragraphs("a2", 1)}})
        await articles.delete_one({"_id": "b"})
        await articles.update_one({"_id": "c"}, {"$set": {"tag": "two"}})
        await articles.update_one({"_id": "c"}, {"$set": {"body": paragraphs("c2", 2)}})

        target = await written_so_far(mongo)

        async def all_queued() -> bool:
            checkpoint = await ResumeTokenStore(redis_client, keys).load()
            return checkpoint is not None and (checkpoint.cluster_time or 0) >= target

        await until(all_queued, seconds=30, what="capture queued every change")
    captured = await stream_entries(redis_client, keys.events)
    assert len(captured) == 7

    settings = make_settings()
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        expected = await assert_index_equals_source(
            settings, service.sidecar.store, redis_client, mongo, embedder
        )
        assert set(expected) == {doc_key(settings, COLLECTION, i) for i in ("a", "c")}
        store = service.sidecar.store
        rows_before = {key: await store.chunks_of(key) for key in expected}
        stats = Stats(redis_client, keys)
        indexed_before = (await stats.read())["documents_indexed"]
        embedded_before = embedder.counter.texts

        # Each change again as it was queued, then all of them newest first: a
        # duplicate of every event, and an older version after each newer one.
        for fields in [*captured, *reversed(captured)]:
            await redis_client.xadd(
                keys.events, {b"event": fields[b"event"], b"key": fields[b"key"]}
            )
        await service.applied(mongo)

        assert embedder.counter.texts == embedded_before
        await store.flush()
        for key, rows in rows_before.items():
            after = await store.chunks_of(key)
            assert [(r.id, r.text, r.updated_at) for r in after] == [
                (r.id, r.text, r.updated_at) for r in rows
            ], f"a replay rewrote {key}"
        assert (await stats.read())["documents_indexed"] == indexed_before
        assert (
            await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
            == expected
        )
