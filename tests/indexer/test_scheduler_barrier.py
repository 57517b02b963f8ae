"""The scheduler treats a change to a whole collection as a barrier, against the real
Redis queue: with several workers, it is dispatched alone, only after every batch read
before it has finished, and nothing behind it is read or dispatched until it has
finished; then it is acknowledged like any entry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from checkpoints.consumer import EventReader, QueueEntry
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from core.errors import VectorStoreUnavailable
from core.events import (
    CollectionDroppedEvent,
    CollectionRenamedEvent,
    DocumentEvent,
    DocumentUpdatedEvent,
    is_collection_event,
)
from indexer.handlers import Dispatcher, Outcome
from indexer.scheduler import IndexScheduler
from tests.indexer.queue_support import enqueue
from tests.waiting import eventually

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def doc(name: str, version: int) -> DocumentEvent:
    return DocumentUpdatedEvent(
        event_id=name,
        document_id=name,
        namespace="app.docs",
        version=version,
        timestamp=NOW,
        content=f"text of {name}",
    )


def drop(name: str, version: int, namespace: str = "app.docs") -> DocumentEvent:
    return CollectionDroppedEvent(
        event_id=name, namespace=namespace, version=version, timestamp=NOW
    )


def rename(name: str, version: int) -> DocumentEvent:
    return CollectionRenamedEvent(
        event_id=name, namespace="app.docs", version=version, timestamp=NOW, to="app.other"
    )


@dataclass
class Journal:
    """What happened, in order: ("read", n), ("start", ids), ("end", ids), ("fail", ids)."""

    log: list[tuple[str, Any]] = field(default_factory=list)
    running: int = 0
    peak: int = 0

    def at(self, kind: str, event_id: str) -> int:
        """Where the batch holding *event_id* started (or ended) successfully."""
        found = [
            n
            for n, (what, ids) in enumerate(self.log)
            if what == kind and event_id in ids and self._succeeded(n)
        ]
        assert len(found) == 1, f"{event_id} {kind} {len(found)} times in {self.log}"
        return found[0]

    def _succeeded(self, index: int) -> bool:
        what, ids = self.log[index]
        if what == "end":
            return True
        # A start counts when the next record of the same batch is its end, not a failure.
        for later, later_ids in self.log[index + 1 :]:
            if later in ("end", "fail") and later_ids == ids:
                return later == "end"
        return False

    def batches(self) -> list[tuple[str, ...]]:
        """The batches that succeeded, in the order they started."""
        return [
            ids for n, (what, ids) in enumerate(self.log) if what == "start" and self._succeeded(n)
        ]


class Handler:
    """Applies any event slowly, recording when each batch starts and ends; fails the
    collection events in *failing* (by event id) that many times first."""

    def __init__(self, journal: Journal, failing: dict[str, int] | None = None) -> None:
        self.journal = journal
        self.failing = dict(failing or {})

    def can_handle(self, event: DocumentEvent) -> bool:
        return True

    async def handle(self, event: DocumentEvent) -> Outcome:
        return await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        ids = tuple(event.event_id for event in events)
        journal = self.journal
        journal.log.append(("start", ids))
        journal.running += 1
        journal.peak = max(journal.peak, journal.running)
        try:
            await asyncio.sleep(0.05)
            if any(self.failing.get(i, 0) > 0 for i in ids):
                for i in ids:
                    self.failing[i] = self.failing.get(i, 0) - 1
                journal.log.append(("fail", ids))
                raise VectorStoreUnavailable("milvus down")
        finally:
            journal.running -= 1
        journal.log.append(("end", ids))
        outcome = Outcome()
        outcome.counts["deletes"] += sum(is_collection_event(e) for e in events)
        outcome.last_applied = {"event_id": events[-1].event_id}
        return outcome


class Reads:
    """The real queue reader, journaling each read that returned entries."""

    def __init__(self, reader: EventReader, journal: Journal) -> None:
        self._reader = reader
        self._journal = journal

    async def start(self) -> None:
        await self._reader.start()

    async def read(self, count: int, block_ms: int, *, bulk: bool = True) -> list[QueueEntry]:
        entries = await self._reader.read(count, block_ms, bulk=bulk)
        if entries:
            ids = tuple(e.event.event_id if e.event else "?" for e in entries)
            self._journal.log.append(("read", ids))
        return entries

    async def commit(self, entry_ids: Sequence[str], **applied: Any) -> None:
        await self._reader.commit(entry_ids, **applied)

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        await self._reader.dead_letter(entry, error)


@asynccontextmanager
async def running(
    redis_client: aioredis.Redis, keys: Keys, handler: Handler, *, batch_size: int
) -> AsyncIterator[None]:
    scheduler = IndexScheduler(
        Reads(EventReader(redis_client, keys, consumer="c1"), handler.journal),
        Dispatcher([handler]),
        batch_size=batch_size,
        batch_interval=0.05,
        max_workers=3,
        retry_times=2,
        retry_delay=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def all_acknowledged(redis_client: aioredis.Redis, keys: Keys) -> bool:
    queue = EventQueue(redis_client, keys)
    return await queue.backlog() == 0 and await queue.pending() == 0


async def run_all(
    redis_client: aioredis.Redis,
    pipeline_name: str,
    events: list[DocumentEvent],
    *,
    batch_size: int,
    failing: dict[str, int] | None = None,
) -> Journal:
    keys = Keys(pipeline_name)
    journal = Journal()
    await enqueue(redis_client, keys, events)
    async with running(redis_client, keys, Handler(journal, failing), batch_size=batch_size):
        await eventually(
            lambda: all_acknowledged(redis_client, keys), within=15, what="every entry applied"
        )
    applied = [i for ids in journal.batches() for i in ids]
    assert sorted(applied) == sorted(e.event_id for e in events), "each entry applied once"
    return journal


BEFORE = [doc(f"b{n}", n) for n in range(6)]
AFTER = [doc(f"a{n}", 100 + n) for n in range(4)]


def assert_barrier(journal: Journal, barrier: str, before: list[str], after: list[str]) -> None:
    start, end = journal.at("start", barrier), journal.at("end", barrier)
    assert ("start", (barrier,)) in journal.log, "a collection event is dispatched alone"
    for event_id in before:
        assert journal.at("end", event_id) < start, f"{barrier} started before {event_id} ended"
    for event_id in after:
        assert journal.at("start", event_id) > end, f"{event_id} started before {barrier} ended"
    reads = [n for n, (what, _) in enumerate(journal.log) if what == "read"]
    assert not [n for n in reads if start < n < end], "nothing is read while the barrier applies"


@pytest.mark.parametrize("batch_size", [1, 2, 4])
async def test_a_collection_event_waits_for_what_was_read_before_it_and_holds_back_the_rest(
    redis_client: aioredis.Redis, pipeline_name: str, batch_size: int
) -> None:
    events = [*BEFORE, drop("DROP", 50), *AFTER]
    journal = await run_all(redis_client, pipeline_name, events, batch_size=batch_size)

    assert_barrier(journal, "DROP", [e.event_id for e in BEFORE], [e.event_id for e in AFTER])
    # Batches did overlap: the order above is the barrier's doing, not a single worker's.
    assert journal.peak >= 2


async def test_entries_read_in_the_same_batch_after_a_collection_event_wait_for_it(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    events = [*BEFORE, drop("DROP", 50), *AFTER]
    journal = await run_all(redis_client, pipeline_name, events, batch_size=20)

    assert [what for what, _ in journal.log if what == "read"] == ["read"], "one read took all"
    assert journal.batches() == [
        tuple(e.event_id for e in BEFORE),
        ("DROP",),
        tuple(e.event_id for e in AFTER),
    ]
    assert_barrier(journal, "DROP", [e.event_id for e in BEFORE], [e.event_id for e in AFTER])


async def test_consecutive_collection_events_each_apply_alone_in_queue_order(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    events = [
        drop("DROP1", 1),
        rename("RENAME", 2),
        doc("x", 3),
        doc("y", 4),
        drop("DB", 5, namespace="app"),
        doc("z", 6),
    ]
    journal = await run_all(redis_client, pipeline_name, events, batch_size=20)

    assert journal.batches() == [("DROP1",), ("RENAME",), ("x", "y"), ("DB",), ("z",)]
    for n, (what, ids) in enumerate(journal.log):
        if what == "start":
            assert journal.log[n + 1] == ("end", ids), "nothing ran beside another batch"


async def test_later_entries_wait_while_a_collection_event_is_retried(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    events = [*BEFORE[:2], drop("DROP", 50), *AFTER]
    journal = await run_all(redis_client, pipeline_name, events, batch_size=2, failing={"DROP": 2})

    assert [ids for what, ids in journal.log if what == "fail"] == [("DROP",), ("DROP",)]
    first_try = journal.log.index(("start", ("DROP",)))
    for event in AFTER:
        assert journal.at("start", event.event_id) > journal.at("end", "DROP")
    assert all(journal.at("end", e.event_id) < first_try for e in BEFORE[:2])


async def test_a_collection_event_is_acknowledged_with_what_it_applied(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    journal = await run_all(
        redis_client, pipeline_name, [doc("x", 1), drop("DROP", 2)], batch_size=20
    )

    assert journal.batches() == [("x",), ("DROP",)]
    assert await EventQueue(redis_client, keys).pending() == 0
    assert await redis_client.xlen(keys.events) == 0
    assert await redis_client.xlen(keys.dead) == 0
    last = await redis_client.get(keys.last_applied)
    assert last is not None and b'"DROP"' in last
