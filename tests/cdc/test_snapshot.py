"""First start: documents present before, plus writes during the scan, all end up queued."""

from __future__ import annotations

import asyncio
from typing import Any

from capture_support import DATABASE, PipelineParts, article_mapper
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from cdc.capture import Capture
from cdc.fields import IndexedText, document_id
from cdc.positions import StreamPosition
from cdc.snapshot import Snapshot
from core.events import DocumentCreatedEvent, DocumentEvent, DocumentUpdatedEvent
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]
PUBLISHED = {"status": "published"}


def fold(events: list[DocumentEvent]) -> dict[str, str]:
    """What an index fed *events* holds: per document the newest version wins."""
    newest: dict[str, DocumentEvent] = {}
    for event in events:
        held = newest.get(event.document_id)
        if held is None or event.version >= held.version:
            newest[event.document_id] = event
    return {
        key: event.content
        for key, event in newest.items()
        if isinstance(event, DocumentCreatedEvent | DocumentUpdatedEvent)
    }


async def test_snapshot_and_capture_converge_to_the_source(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_many(
        [
            {"_id": n, "title": f"t{n}", "status": "published" if n % 3 else "draft", "big": "x"}
            for n in range(600)
        ]
    )
    mapper = article_mapper(PUBLISHED)

    async def churn_before_scan() -> None:
        for n in range(0, 600, 7):
            await articles.update_one({"_id": n}, {"$set": {"title": f"changed{n}"}})
        for n in range(0, 600, 11):
            await articles.delete_one({"_id": n})

    async def churn_during_scan() -> None:
        for n in range(0, 600, 13):
            await articles.update_one({"_id": n}, {"$set": {"status": "published"}})
        for n in range(1, 600, 17):
            await articles.update_one({"_id": n}, {"$set": {"status": "draft"}})
        await articles.insert_many(
            [{"_id": n, "title": f"new{n}", "status": "published"} for n in range(600, 650)]
        )

    class RacingSnapshot(Snapshot):
        """Writes land between taking the position and scanning: the race that matters."""

        async def _position(self, session: AsyncClientSession) -> StreamPosition:
            position = await super()._position(session)
            await churn_before_scan()
            return position

    snapshot = RacingSnapshot(
        mongo, DATABASE, ["articles"], mapper, parts.queue, parts.fence, max_batch=50
    )

    async def scan() -> None:
        result = await snapshot.run(asyncio.Event())
        assert result is not None and result.documents > 0

    await asyncio.gather(scan(), churn_during_scan())
    checkpoint = await parts.tokens.load()
    assert checkpoint is not None and checkpoint.token is not None
    await articles.insert_one({"_id": "end", "title": "end", "status": "published"})

    stop = asyncio.Event()
    capture = Capture(
        mongo,
        DATABASE,
        ["articles"],
        mapper,
        parts.queue,
        parts.tokens,
        parts.stats,
        parts.fence,
        max_await=0.1,
    )
    task = asyncio.create_task(capture.run(stop))

    async def sentinel_queued() -> bool:
        if task.done():
            task.result()
        return any(e.document_id == "end" for e in await parts.events())

    await eventually(sentinel_queued, what="capture to reach the last write")
    stop.set()
    await asyncio.wait_for(task, 30)

    text = IndexedText(["title", "sections.text"])
    source = {document_id(doc["_id"]): text(doc) async for doc in articles.find(PUBLISHED)}
    events = await parts.events()
    assert fold(events) == source
    # The scan really overlapped the writes: it saw documents in states
    # written after its position, and those writes were streamed as well.
    streamed = {e.document_id for e in events if not e.event_id.startswith("snapshot:")}
    overlapped = [
        e
        for e in events
        if e.event_id.startswith("snapshot:")
        and isinstance(e, DocumentCreatedEvent)
        and e.content.startswith("changed")
        and e.document_id in streamed
    ]
    assert overlapped


async def test_snapshot_events_are_older_than_any_streamed_change(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(10)])
    snapshot = Snapshot(mongo, DATABASE, [], article_mapper(), parts.queue, parts.fence)
    result = await snapshot.run(asyncio.Event())
    assert result is not None
    snapshot_events = await parts.drain()
    assert {e.document_id for e in snapshot_events} == {document_id(n) for n in range(10)}
    assert {e.version for e in snapshot_events} == {result.checkpoint.cluster_time}
    assert all(e.namespace == "app.articles" for e in snapshot_events)

    await articles.update_one({"_id": 3}, {"$set": {"title": "later"}})
    stop = asyncio.Event()
    capture = Capture(
        mongo,
        DATABASE,
        [],
        article_mapper(),
        parts.queue,
        parts.tokens,
        parts.stats,
        parts.fence,
        max_await=0.1,
    )
    task = asyncio.create_task(capture.run(stop))

    async def one_queued() -> bool:
        return await parts.queue.backlog() >= 1

    await eventually(one_queued, what="the later update")
    stop.set()
    await asyncio.wait_for(task, 30)
    (update,) = await parts.events()
    assert isinstance(update, DocumentUpdatedEvent) and update.content == "later"
    assert update.version > snapshot_events[0].version


async def test_a_stopped_snapshot_saves_no_position(mongo: Client, parts: PipelineParts) -> None:
    await mongo[DATABASE]["articles"].insert_many([{"_id": n, "title": "t"} for n in range(20)])
    stop = asyncio.Event()
    stop.set()
    snapshot = Snapshot(mongo, DATABASE, ["articles"], article_mapper(), parts.queue, parts.fence)
    assert await snapshot.run(stop) is None
    assert await parts.tokens.load() is None


async def test_the_scan_holds_back_while_the_queue_is_full(
    mongo: Client, parts: PipelineParts
) -> None:
    await mongo[DATABASE]["articles"].insert_many(
        [{"_id": n, "title": f"t{n}"} for n in range(400)]
    )
    max_backlog, max_batch = 50, 20
    snapshot = Snapshot(
        mongo,
        DATABASE,
        ["articles"],
        article_mapper(),
        parts.queue,
        parts.fence,
        max_batch=max_batch,
        max_backlog=max_backlog,
    )
    task = asyncio.create_task(snapshot.run(asyncio.Event()))
    seen: list[str] = []
    held_back = 0
    async with asyncio.timeout(30):
        while not task.done():
            backlog = await parts.queue.backlog()
            assert backlog <= max_backlog + max_batch
            if backlog > max_backlog:
                held_back += 1
                seen.extend(e.document_id for e in await parts.drain())
            await asyncio.sleep(0.05)
    assert await task is not None
    seen.extend(e.document_id for e in await parts.drain())
    assert held_back > 0
    assert sorted(seen) == sorted(document_id(n) for n in range(400))
