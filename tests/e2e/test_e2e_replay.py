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

from cdc.events import event_from_json
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


async def test_an_interrupted_apply_replayed_after_a_newer_change_leaves_no_orphan(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """A batch that wrote its chunks to Milvus and died before committing is
    redelivered; if a newer change of the same document is applied first (the
    scheduler runs batches concurrently), the old batch is stale when it comes
    back, and the chunks it wrote must still go."""
    keys = Keys(make_settings().pipeline)
    async with running(make_settings(index_auto_update=False), redis_client, embedder) as service:
        await articles.insert_one({"_id": "x", "title": "Old", "body": paragraphs("old", 3)})
        await articles.update_one({"_id": "x"}, {"$set": {"body": paragraphs("new", 2)}})
        target = await written_so_far(mongo)

        async def all_queued() -> bool:
            checkpoint = await ResumeTokenStore(redis_client, keys).load()
            return checkpoint is not None and (checkpoint.cluster_time or 0) >= target

        await until(all_queued, seconds=30, what="capture queued every change")
        older, newer = [
            event_from_json(fields[b"event"])
            for fields in await stream_entries(redis_client, keys.events)
        ]
        # The interrupted attempt: Milvus accepted the older change's chunks, and
        # the process died before the commit recorded them or acknowledged it.
        await service.sidecar.updater.handle_batch([older])
        await service.sidecar.store.flush()
        assert await service.sidecar.store.chunks_of(older.key)

    await redis_client.delete(keys.events)
    for event in (newer, older):
        await redis_client.xadd(keys.events, {"event": event.to_json(), "key": event.key})
    settings = make_settings()
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        expected = await assert_index_equals_source(
            settings, service.sidecar.store, redis_client, mongo, embedder
        )
    assert "new part 0" in expected[older.key].chunks[0]
