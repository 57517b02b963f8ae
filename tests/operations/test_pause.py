"""`pause` / `resume`: while paused the indexer reads nothing new from the queue (what is
queued stays queued), the pause outlives the command and is shown by status; resume
lets the queue drain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from cdc.namespaces import WatchScope
from checkpoints.audit import AuditLog
from checkpoints.consumer import EventReader
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue
from core.events import DocumentEvent, DocumentUpdatedEvent
from indexer.handlers import Dispatcher, Outcome
from indexer.scheduler import IndexScheduler
from operations.control import perform
from sidecar.status import pipeline_status
from tests.waiting import eventually

SCOPE = WatchScope("app", ["docs"])
UNUSED_MONGO = "mongodb://127.0.0.1:1"


class Applied:
    """A handler that records the documents it applied."""

    def __init__(self) -> None:
        self.documents: list[str] = []

    def can_handle(self, event: DocumentEvent) -> bool:
        return True

    async def handle(self, event: DocumentEvent) -> Outcome:
        return await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        self.documents += [event.document_id for event in events]
        return Outcome()


class CountedFlag:
    """The pause flag as the scheduler asks it, counting the questions."""

    def __init__(self, flag: PauseFlag) -> None:
        self.flag = flag
        self.asked = 0

    async def __call__(self) -> bool:
        self.asked += 1
        return await self.flag.is_set()


async def queue(redis: aioredis.Redis, keys: Keys, documents: list[str]) -> None:
    capture = Lease(redis, keys, owner="capture")
    fence = await capture.acquire(wait=False)
    events = [
        DocumentUpdatedEvent(
            event_id=doc, document_id=doc, namespace="app.docs", version=1,
            timestamp=datetime.now(UTC), content=doc,
        )
        for doc in documents
    ]
    await EventQueue(redis, keys).append(events, None, fence=fence)
    await capture.release()


async def test_a_paused_indexer_reads_nothing_until_resumed(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler, flag = Applied(), CountedFlag(PauseFlag(redis_client, keys))
    scheduler = IndexScheduler(
        EventReader(redis_client, keys, consumer="c1"),
        Dispatcher([handler]),
        batch_size=10,
        batch_interval=0.02,
        max_workers=2,
        retry_times=1,
        retry_delay=0.01,
        paused=flag,
    )
    paused = await perform(redis_client, keys, UNUSED_MONGO, SCOPE, "pause", {"reason": "reindex"})
    assert paused["paused"] is True
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        await queue(redis_client, keys, ["a", "b", "c"])
        asked = flag.asked

        async def asked_three_more_times() -> bool:
            return flag.asked >= asked + 3

        await eventually(asked_three_more_times, what="the scheduler to look at the flag")
        assert handler.documents == []
        assert await EventQueue(redis_client, keys).backlog() == 3
        status = await pipeline_status(redis_client, keys)
        assert status["paused"]["reason"] == "reindex" and "@" in status["paused"]["by"]

        resumed = await perform(redis_client, keys, UNUSED_MONGO, SCOPE, "resume", {})
        assert resumed == {"paused": False, "message": "indexing resumed"}

        async def drained() -> bool:
            return await EventQueue(redis_client, keys).backlog() == 0

        await eventually(drained, what="the queue to drain after resume")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert sorted(handler.documents) == ["a", "b", "c"]
    assert (await pipeline_status(redis_client, keys))["paused"] is None
    audit = await AuditLog(redis_client, keys).recent()
    assert [(entry.command, entry.before, entry.after) for entry in audit][:2] == [
        ("resume", audit[0].before, "indexing"),
        ("pause --reason 'reindex'", "indexing", "paused"),
    ]
    assert audit[0].before is not None and audit[0].before.startswith("paused by ")
