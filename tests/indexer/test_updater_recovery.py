"""Losing Redis's data must not cost the embeddings: with the version records gone
(a Redis without persistence, a FLUSHALL), replaying documents rewrites the rows
Milvus already holds from their stored vectors and embeds only chunks it lacks."""

from __future__ import annotations

from dataclasses import replace

import redis.asyncio as aioredis
from test_updater import KEY, NAMESPACE, Index, created, deleted, updated
from test_updater import index as index  # the fixture

from checkpoints.keys import Keys


async def forget_versions(redis: aioredis.Redis, pipeline: str) -> None:
    keys = [key async for key in redis.scan_iter(match=Keys(pipeline).version_prefix + "*")]
    await redis.delete(*keys)


async def test_replaying_documents_after_their_records_are_lost_embeds_nothing_new(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    await index.apply([created("one\n\ntwo\n\nthree", 10, lang="en")])
    rows = await index.rows()
    embedded = index.embedded
    await forget_versions(redis_client, pipeline_name)
    assert await index.record() is None

    outcome = await index.apply([created("one\n\ntwo\n\nthree", 20, lang="en")])

    assert index.embedded == embedded  # every chunk came from its stored row
    assert outcome.counts["chunks_embedded"] == 0
    assert [(r.id, r.text, r.vector) for r in await index.rows()] == [
        (r.id, r.text, r.vector) for r in rows
    ]
    record = await index.record()
    assert record is not None and record.version == 20
    assert record.chunk_ids == tuple(r.id for r in rows)


async def test_a_document_changed_while_its_record_was_lost_embeds_only_new_chunks(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    await index.apply([created("one\n\ntwo", 10)])
    embedded = index.embedded
    await forget_versions(redis_client, pipeline_name)

    await index.apply([updated("one\n\ntwo\n\nthree", 20)])

    assert index.embedded == embedded + 1
    assert await index.texts(KEY) == ["one", "two", "three"]


async def test_a_delete_finds_the_rows_of_a_document_whose_record_was_lost(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    await index.apply([created("one\n\ntwo", 10), updated("kept", 10, doc="d2")])
    await forget_versions(redis_client, pipeline_name)

    await index.apply([deleted(20)])

    assert await index.rows(KEY) == []
    assert await index.texts(f"{NAMESPACE}/d2") == ["kept"]
    record = await index.record()
    assert record is not None and record.deleted and record.version == 20


async def test_a_reindex_rewrites_rows_milvus_lost_behind_the_records_back(
    index: Index,
) -> None:
    await index.apply([created("one\n\ntwo\n\nthree", 10)])
    rows = await index.rows()
    await index.store.delete([rows[1].id])  # Milvus lost one row; the record still lists it
    await index.store.flush()
    embedded = index.embedded

    trusted = await index.apply([created("one\n\ntwo\n\nthree", 20)])
    assert trusted.counts["chunks_embedded"] == 0 and len(await index.rows()) == 2
    reindexed = replace(created("one\n\ntwo\n\nthree", 30), event_id="reindex:j1:30:app.docs:d1")
    await index.apply([reindexed])

    assert index.embedded == embedded + 1  # only the lost chunk; the others kept their vectors
    assert [(r.id, r.text) for r in await index.rows()] == [(r.id, r.text) for r in rows]


async def test_a_reindex_older_than_the_indexed_version_changes_nothing(index: Index) -> None:
    await index.apply([created("new text", 20)])
    stale = replace(created("old text", 10), event_id="reindex:j1:10:app.docs:d1")

    outcome = await index.apply([stale])

    assert outcome.counts["documents_indexed"] == 0
    assert await index.texts() == ["new text"]


async def test_a_reindex_removes_rows_of_its_document_that_no_record_lists(
    index: Index,
) -> None:
    await index.apply([created("one\n\ntwo", 10)])
    rows = await index.rows()
    stray = replace(rows[0], id="stray-row-of-d1", text="left by a restore")
    await index.store.upsert([stray])  # a row of d1 its version record does not list
    await index.apply([deleted(20)])
    await index.store.upsert(rows)  # a restore brings the deleted document's rows back
    await index.store.flush()

    await index.apply([replace(deleted(30), event_id="reindex:j1:30:app.docs:d1")])

    assert await index.rows() == []
