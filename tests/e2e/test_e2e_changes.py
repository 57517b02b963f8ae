"""Document changes through the running service: each scenario ends with the index
equal to the source (invariant 2) and counts the model's work (invariant 3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import (
    assert_index_equals_source,
    chunker_for,
    doc_key,
    paragraphs,
    running,
)
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.versions import VersionStore
from sidecar.settings import Settings
from tests.conftest import COLLECTION
from tests.embedders import CountingEmbedder

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]


async def test_created_updated_deleted_flow_through_the_service(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    await articles.insert_one(
        {"_id": "before", "title": "Written before the first start", "body": paragraphs("a", 2)}
    )
    async with running(settings, redis_client, embedder) as service:
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)

        await articles.insert_many(
            [
                {"_id": "one", "title": "First", "body": paragraphs("one", 2), "lang": "en"},
                {"_id": "two", "title": "Second", "body": paragraphs("two", 3), "tag": "x"},
                {"_id": "three", "title": "Third", "body": paragraphs("three", 1)},
            ]
        )
        await service.applied(mongo)
        indexed = await service.assert_index_equals_source(mongo)
        assert {doc_key(settings, COLLECTION, i) for i in ("before", "one", "two", "three")} == set(
            indexed
        )

        await articles.update_one({"_id": "one"}, {"$set": {"body": paragraphs("uno", 2)}})
        await articles.delete_one({"_id": "two"})
        await articles.delete_one({"_id": "before"})
        await articles.insert_one({"_id": "four", "title": "Fourth", "body": paragraphs("iv", 2)})
        await service.applied(mongo)
        indexed = await service.assert_index_equals_source(mongo)
        assert set(indexed) == {doc_key(settings, COLLECTION, i) for i in ("one", "three", "four")}
        assert "uno part 0" in indexed[doc_key(settings, COLLECTION, "one")].chunks[0]

    versions = VersionStore(redis_client, Keys(settings.pipeline), ttl_seconds=None)
    gone = await versions.get_many([doc_key(settings, COLLECTION, "two")])
    assert gone[doc_key(settings, COLLECTION, "two")].deleted


async def test_a_document_that_shrinks_leaves_no_stale_chunk(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one({"_id": "long", "title": "Long", "body": paragraphs("p", 8)})
        await service.applied(mongo)
        before = await service.assert_index_equals_source(mongo)
        key = doc_key(settings, COLLECTION, "long")
        assert len(before[key].chunks) >= 8

        await articles.update_one({"_id": "long"}, {"$set": {"body": paragraphs("p", 1)}})
        await service.applied(mongo)
        after = await service.assert_index_equals_source(mongo)
        assert len(after[key].chunks) <= 2
        assert len(await service.sidecar.store.chunks_of(key)) == len(after[key].chunks)


async def test_changes_that_keep_the_text_compute_no_embedding(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    doc = {"_id": "d", "title": "Steady", "body": paragraphs("s", 3), "lang": "en", "views": 1}
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one(doc)
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)
        key = doc_key(settings, COLLECTION, "d")

        before = embedder.counter.texts, embedder.counter.calls
        await articles.update_one({"_id": "d"}, {"$inc": {"views": 1}})
        await articles.replace_one({"_id": "d"}, {**doc, "views": 5, "extra": "not indexed"})
        await service.applied(mongo)
        assert (embedder.counter.texts, embedder.counter.calls) == before

        rows_before = await service.sidecar.store.chunks_of(key)
        await articles.update_one({"_id": "d"}, {"$set": {"lang": "fr", "tag": "new"}})
        await service.applied(mongo)
        assert (embedder.counter.texts, embedder.counter.calls) == before
        await service.sidecar.store.flush()
        rows_after = await service.sidecar.store.chunks_of(key)
        assert [dict(row.metadata) for row in rows_after] == [{"lang": "fr", "tag": "new"}] * len(
            rows_before
        )
        assert [row.vector for row in rows_after] == [row.vector for row in rows_before]
        await service.assert_index_equals_source(mongo)


async def test_a_one_paragraph_edit_reembeds_only_the_changed_chunk(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    chunker = chunker_for(settings, embedder)
    body = paragraphs("edit", 6)
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one({"_id": "e", "title": "Edited", "body": body})
        await service.applied(mongo)
        await service.assert_index_equals_source(mongo)

        parts = body.split("\n\n")
        parts[3] = "This paragraph was rewritten by an editor today."
        edited = "\n\n".join(parts)
        old_chunks = Counter(chunker(f"Edited\n\n{body}"))
        new_chunks = Counter(chunker(f"Edited\n\n{edited}"))
        changed = sum((new_chunks - old_chunks).values())
        assert changed == 1

        before = embedder.counter.texts
        await articles.update_one({"_id": "e"}, {"$set": {"body": edited}})
        await service.applied(mongo)
        assert embedder.counter.texts - before == changed
        await service.assert_index_equals_source(mongo)


async def test_fifty_rapid_updates_end_equal_to_the_final_text(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_one({"_id": "hot", "title": "Hot", "body": paragraphs("v0", 2)})
        await service.applied(mongo)
        calls = embedder.counter.calls
        for n in range(1, 51):
            await articles.update_one({"_id": "hot"}, {"$set": {"body": paragraphs(f"v{n}", 2)}})
        await service.applied(mongo)
        made = embedder.counter.calls - calls
        indexed = await service.assert_index_equals_source(mongo)
    assert "v50 part 0" in indexed[doc_key(settings, COLLECTION, "hot")].chunks[0]
    assert 1 <= made <= 10, f"{made} embedding calls for 50 updates"


async def test_a_filter_transition_removes_and_restores_vectors(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings(filter={"status": "published"})
    async with running(settings, redis_client, embedder) as service:
        store = service.sidecar.store
        await articles.insert_many(
            [
                {
                    "_id": "p",
                    "title": "Public",
                    "body": paragraphs("pub", 2),
                    "status": "published",
                },
                {"_id": "q", "title": "Draft", "body": paragraphs("dra", 2), "status": "draft"},
            ]
        )
        await service.applied(mongo)
        indexed = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
        assert set(indexed) == {doc_key(settings, COLLECTION, "p")}

        await articles.update_one({"_id": "p"}, {"$set": {"status": "draft"}})
        await service.applied(mongo)
        assert (
            await assert_index_equals_source(settings, store, redis_client, mongo, embedder) == {}
        )

        await articles.update_one({"_id": "p"}, {"$set": {"status": "published"}})
        await articles.update_one({"_id": "q"}, {"$set": {"status": "published"}})
        await service.applied(mongo)
        indexed = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
        assert set(indexed) == {doc_key(settings, COLLECTION, i) for i in ("p", "q")}
