"""The backfill scan against mongosim and the real Redis: every document queued once in
the bulk lane, in `_id` order across `_id` types, resumable after a kill from the last
chunk queued, with versions that let later live changes win."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from bson import ObjectId
from capture_support import DATABASE, PipelineParts, article_mapper
from pymongo import AsyncMongoClient

from cdc.backfill import Backfill
from cdc.fields import document_id
from checkpoints.audit import AuditEntry
from checkpoints.backfills import BackfillJob, BackfillStore
from checkpoints.tokens import pack_timestamp
from core.events import DocumentEvent, event_from_json
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]
# Every _id type a collection may mix, out of order: the scan must cross type brackets.
MIXED_IDS: list[Any] = [
    "b", 7, ObjectId("65a000000000000000000002"), 2.5, "a", datetime(2026, 1, 1, tzinfo=UTC),
    ObjectId("65a000000000000000000001"), -3, True, {"k": 1}, None, "c", 10_000_000_000,
]


def job(collections: list[str], filter_json: str = "") -> BackfillJob:
    return BackfillJob("b1", collections, filter_json, "test", datetime.now(UTC).isoformat())


async def started(parts: PipelineParts, new: BackfillJob) -> BackfillJob:
    """*new* saved as the pipeline's job, as `cdc-sidecar backfill` does."""
    entry = AuditEntry(datetime.now(UTC), "backfill", "test", "started")
    await BackfillStore(parts.redis, parts.keys).start(new, fence=parts.fence, audit=entry)
    return new


async def bulk_events(parts: PipelineParts) -> list[DocumentEvent]:
    rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await parts.redis.xrange(parts.keys.bulk))
    return [event_from_json(fields[b"event"]) for _, fields in rows]


def backfill(mongo: Client, parts: PipelineParts, chunk: int) -> Backfill:
    return Backfill(
        mongo, DATABASE, article_mapper(), parts.queue, parts.keys, parts.fence, chunk=chunk
    )


async def test_every_document_is_queued_once_in_id_order_across_id_types(
    mongo: Client, parts: PipelineParts
) -> None:
    articles, notes = mongo[DATABASE]["articles"], mongo[DATABASE]["notes"]
    await articles.insert_many([{"_id": i, "title": f"t {i!r}"} for i in MIXED_IDS])
    await notes.insert_many([{"_id": n, "title": f"note {n}"} for n in range(5)])

    both = await started(parts, job(["articles", "notes"]))
    done = await backfill(mongo, parts, chunk=3).run(both, asyncio.Event())

    events = await bulk_events(parts)
    server_order = [doc["_id"] async for doc in articles.find({}, sort=[("_id", 1)])]
    assert [e.document_id for e in events] == [document_id(i) for i in server_order] + [
        document_id(n) for n in range(5)
    ]
    assert {e.namespace for e in events} == {"app.articles", "app.notes"}
    assert (done.state, done.scanned, done.queued, done.done) == (
        "done", 18, 18, ["articles", "notes"]
    )
    assert await BackfillStore(parts.redis, parts.keys).load() == done
    assert await parts.queue.backlog() == 0  # nothing went to the live lane


async def test_a_killed_backfill_resumes_after_the_last_chunk_it_queued(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_many([{"_id": n, "title": f"t {n}"} for n in range(400)])
    store = BackfillStore(parts.redis, parts.keys)
    runner = backfill(mongo, parts, chunk=4)
    one = await started(parts, job(["articles"]))
    first = asyncio.create_task(runner.run(one, asyncio.Event()))

    async def some_chunks_queued() -> bool:
        return len(await bulk_events(parts)) >= 8

    await eventually(some_chunks_queued, what="two chunks to be queued")
    first.cancel()  # as kill -9 would, at any point
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(await bulk_events(parts)) < 400  # it was stopped half-way
    saved = await store.load()
    assert saved is not None and saved.state == "running"
    before = len(await bulk_events(parts))
    assert saved.queued == before  # the progress moved exactly with the events

    done = await backfill(mongo, parts, chunk=4).run(saved, asyncio.Event())

    events = await bulk_events(parts)
    assert [e.document_id for e in events] == [document_id(n) for n in range(400)]
    assert done.state == "done" and done.queued == 400


async def test_the_operators_filter_and_the_pipelines_filter_both_apply(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_many(
        [{"_id": n, "title": f"t {n}", "lang": "zh" if n % 2 else "en"} for n in range(10)]
    )
    runner = Backfill(
        mongo, DATABASE, article_mapper({"_id": {"$lt": 8}}), parts.queue, parts.keys,
        parts.fence, chunk=3,
    )

    await runner.run(await started(parts, job(["articles"], '{"lang": "zh"}')), asyncio.Event())

    assert [e.document_id for e in await bulk_events(parts)] == [
        document_id(n) for n in (1, 3, 5, 7)
    ]


async def test_a_change_after_the_read_has_a_later_version_than_the_backfills_event(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_one({"_id": 1, "title": "as read"})
    one = await started(parts, job(["articles"]))
    await backfill(mongo, parts, chunk=10).run(one, asyncio.Event())
    (read,) = await bulk_events(parts)
    async with await articles.watch() as stream:
        await articles.update_one({"_id": 1}, {"$set": {"title": "changed after the read"}})
        change = await stream.next()
    assert pack_timestamp(change["clusterTime"]) > read.version


async def test_a_backfill_replaced_by_another_job_stops_without_writing(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_many([{"_id": n, "title": f"t {n}"} for n in range(10)])
    replaced = await started(parts, job(["articles"]))
    resync = await started(parts, replace(job(["articles"]), id="resync", reason="history lost"))

    left = await backfill(mongo, parts, chunk=3).run(replaced, asyncio.Event())

    assert left == replaced and await bulk_events(parts) == []
    assert await BackfillStore(parts.redis, parts.keys).load() == resync
