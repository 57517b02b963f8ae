"""Invariant 2 under redelivery: events replayed into the queue with the versions
they had, and older versions queued after newer ones, leave the index as it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import (
    assert_index_equals_source,
    doc_key,
    paragraphs,
    running,
    stream_entries,
    written_so_far,
)
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from core.events import DocumentEvent, event_from_json
from sidecar.settings import Settings
from tests.conftest import COLLECTION
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]


@pytest.mark.slow
async def test_replayed_and_reordered_deliveries_do_not_change_the_index(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
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

        await eventually(all_queued, within=30, what="capture queued every change")
    captured = await stream_entries(redis_client, keys.events)
    assert len(captured) == 7

    settings = make_settings()
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        expected = await service.assert_index_equals_source(mongo)
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


async def queued_events(redis: aioredis.Redis, keys: Keys, mongo: Mongo) -> list[DocumentEvent]:
    """Every change written so far, once capture has queued it (indexing is off)."""
    target = await written_so_far(mongo)

    async def all_queued() -> bool:
        checkpoint = await ResumeTokenStore(redis, keys).load()
        return checkpoint is not None and (checkpoint.cluster_time or 0) >= target

    await eventually(all_queued, within=30, what="capture queued every change")
    return [
        event_from_json(fields[b"event"]) for fields in await stream_entries(redis, keys.events)
    ]


async def requeue(redis: aioredis.Redis, keys: Keys, events: list[DocumentEvent]) -> None:
    """Replace the queue's entries by *events*, in that order."""
    await redis.delete(keys.events)
    for event in events:
        await redis.xadd(keys.events, {"event": event.to_json(), "key": event.key})


@pytest.mark.parametrize("batch_size", [10, 1], ids=["same-batch", "later-batch"])
async def test_an_interrupted_apply_replayed_after_a_newer_change_leaves_no_orphan(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    batch_size: int,
) -> None:
    """A batch that wrote its chunks to Milvus and died before committing is
    redelivered after a newer change of the same document: in the same batch
    (only the newest is planned) or in a later one (the older is then stale).
    Either way the chunks the interrupted attempt wrote must go."""
    keys = Keys(make_settings().pipeline)
    async with running(make_settings(index_auto_update=False), redis_client, embedder) as service:
        await articles.insert_one({"_id": "x", "title": "Old", "body": paragraphs("old", 3)})
        await articles.update_one({"_id": "x"}, {"$set": {"body": paragraphs("new", 2)}})
        older, newer = await queued_events(redis_client, keys, mongo)
        # The interrupted attempt: Milvus accepted the older change's chunks, and
        # the process died before the commit recorded them or acknowledged it.
        await service.sidecar.updater.handle_batch([older])
        await service.sidecar.store.flush()
        assert await service.sidecar.store.chunks_of(older.key)

    await requeue(redis_client, keys, [newer, older])
    settings = make_settings(index_batch_size=batch_size)
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        expected = await service.assert_index_equals_source(mongo)
    assert "new part 0" in expected[older.key].chunks[0]


async def test_an_interrupted_metadata_change_undone_by_the_next_change_is_undone_in_milvus(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    """The interrupted attempt rewrote the rows with new metadata; the next change
    puts the metadata back to what the record says is indexed."""
    settings = make_settings()
    keys = Keys(settings.pipeline)
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one({"_id": "m", "title": "Meta", "body": paragraphs("m", 2)})
        await articles.update_one({"_id": "m"}, {"$set": {"lang": "en"}})
        await service.applied(mongo)
    async with running(make_settings(index_auto_update=False), redis_client, embedder) as service:
        # One at a time: updateLookup reads the document when the change is read.
        await articles.update_one({"_id": "m"}, {"$set": {"lang": "fr"}})
        [french] = await queued_events(redis_client, keys, mongo)
        await articles.update_one({"_id": "m"}, {"$set": {"lang": "en"}})
        french, english = await queued_events(redis_client, keys, mongo)
        assert french.metadata == {"lang": "fr"}
        await service.sidecar.updater.handle_batch([french])

    await requeue(redis_client, keys, [french, english])
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)


async def test_a_batch_redelivered_after_a_crash_is_not_overtaken_on_its_documents(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    """The redelivered batch that holds the interrupted metadata change waits for
    an earlier batch on another document; the batch after it, with the change
    that puts the metadata back, must not apply first: the interrupted change
    would then come back stale, and nothing could put its rows right."""
    settings = make_settings(index_batch_size=2)
    keys = Keys(settings.pipeline)
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one(
            {"_id": "m", "title": "Meta", "body": paragraphs("m", 2), "lang": "en"}
        )
        await service.applied(mongo)
    async with running(make_settings(index_auto_update=False), redis_client, embedder) as service:
        await articles.insert_one({"_id": "a", "title": "Big", "body": paragraphs("a", 40)})
        await articles.insert_one({"_id": "c", "title": "Other", "body": paragraphs("c", 1)})
        await articles.update_one({"_id": "m"}, {"$set": {"lang": "fr"}})
        await queued_events(redis_client, keys, mongo)
        await articles.update_one({"_id": "a"}, {"$set": {"body": paragraphs("a", 1)}})
        await articles.update_one({"_id": "m"}, {"$set": {"lang": "en"}})
        big, other, french, shrink, english = await queued_events(redis_client, keys, mongo)
        assert french.metadata == {"lang": "fr"}
        await service.sidecar.updater.handle_batch([french])

    # Batches of two, all in flight at once: [big, other], [french, shrink]
    # (waits for "a" behind the first), [english].
    await requeue(redis_client, keys, [big, other, french, shrink, english])
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)
