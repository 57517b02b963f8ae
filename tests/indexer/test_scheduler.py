"""The scheduler against the real Redis queue: acknowledge only what handlers accepted,
retry infrastructure failures without losing entries, contain bad documents,
serialise work per document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from checkpoints.consumer import EventReader
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from core.errors import DocumentRejected, EmbedderUnavailable, VectorStoreUnavailable
from core.events import DocumentEvent, DocumentUpdatedEvent
from indexer.handlers import Dispatcher, Outcome
from indexer.scheduler import IndexScheduler


def event(doc: str, version: int, content: str = "text") -> DocumentEvent:
    return DocumentUpdatedEvent(
        event_id=f"{doc}-{version}", document_id=doc, namespace="app.docs", version=version,
        timestamp=datetime.now(UTC), content=content,
    )


class Recorder:
    """A handler that records what it applied and fails as told."""

    def __init__(self, fail: Callable[[Sequence[DocumentEvent]], Exception | None]) -> None:
        self.applied: list[DocumentEvent] = []
        self.calls = 0
        self.in_flight: set[str] = set()
        self.overlaps = 0
        self._fail = fail

    def can_handle(self, event: DocumentEvent) -> bool:
        return True

    async def handle(self, event: DocumentEvent) -> Outcome:
        return await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        self.calls += 1
        keys = {e.key for e in events}
        self.overlaps += bool(keys & self.in_flight)
        self.in_flight |= keys
        try:
            await asyncio.sleep(0.01)
            error = self._fail(events)
            if error is not None:
                raise error
            self.applied.extend(events)
            outcome = Outcome()
            outcome.counts["documents_indexed"] += len(keys)
            return outcome
        finally:
            self.in_flight -= keys


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    redis_client: aioredis.Redis, keys: Keys, handler: Recorder, **options: float
) -> AsyncIterator[asyncio.Event]:
    reader = EventReader(redis_client, keys, consumer="c1")
    scheduler = IndexScheduler(
        reader,
        Dispatcher([handler]),
        batch_size=int(options.get("batch_size", 10)),
        batch_interval=0.05,
        max_workers=int(options.get("max_workers", 3)),
        retry_times=int(options.get("retry_times", 2)),
        retry_delay=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def enqueue(redis_client: aioredis.Redis, keys: Keys, events: list[DocumentEvent]) -> None:
    fence = await Lease(redis_client, keys, owner="test").acquire()
    await EventQueue(redis_client, keys).append(events, None, fence=fence)


async def test_everything_is_applied_and_acknowledged(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler = Recorder(lambda events: None)
    await enqueue(redis_client, keys, [event(f"d{i % 7}", i) for i in range(60)])
    async with running(redis_client, keys, handler):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert sorted(e.event_id for e in handler.applied) == sorted(
        f"d{i % 7}-{i}" for i in range(60)
    )
    assert handler.overlaps == 0, "two batches worked on one document at once"
    assert (await Stats(redis_client, keys).read())["documents_indexed"] > 0


async def test_vector_store_outage_is_retried_and_nothing_acknowledged_meanwhile(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    outage = {"on": True}

    def fail(events: Sequence[DocumentEvent]) -> Exception | None:
        return VectorStoreUnavailable("milvus down") if outage["on"] else None

    handler = Recorder(fail)
    await enqueue(redis_client, keys, [event("a", 1), event("b", 2)])
    async with running(redis_client, keys, handler, retry_times=0):
        await wait_for(lambda: _calls_at_least(handler, 4))
        assert await EventQueue(redis_client, keys).backlog() == 2
        assert await redis_client.xlen(keys.dead) == 0, "an outage must never dead-letter"
        outage["on"] = False
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert {e.key for e in handler.applied} == {"app.docs/a", "app.docs/b"}


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        ConnectionResetError("reset by peer"),
        EmbedderUnavailable("embedding server down"),
    ],
    ids=repr,
)
async def test_an_outage_of_any_dependency_never_dead_letters_a_document(
    redis_client: aioredis.Redis, pipeline_name: str, error: Exception
) -> None:
    # The updater reads version records from Redis: a Redis outage in the middle of
    # a batch is an outage like Milvus's, not the documents' fault.
    keys = Keys(pipeline_name)
    outage = {"on": True}
    handler = Recorder(lambda events: error if outage["on"] else None)
    await enqueue(redis_client, keys, [event("a", 1), event("b", 2)])
    async with running(redis_client, keys, handler, retry_times=0):
        await wait_for(lambda: _calls_at_least(handler, 4))
        assert await redis_client.xlen(keys.dead) == 0, "an outage must never dead-letter"
        outage["on"] = False
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert {e.key for e in handler.applied} == {"app.docs/a", "app.docs/b"}
    assert await redis_client.xlen(keys.dead) == 0


async def test_a_redis_error_that_is_not_an_outage_is_the_batchs_fault(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler = Recorder(lambda events: redis.exceptions.ResponseError("WRONGTYPE Operation"))
    await enqueue(redis_client, keys, [event("a", 1)])
    async with running(redis_client, keys, handler, retry_times=1):
        await wait_for(lambda: _dead_letters(redis_client, keys, 1))
    assert handler.calls == 2


async def test_bad_document_is_dead_lettered_after_retries_and_the_rest_flows(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    attempts_on_bad = {"n": 0}

    def fail(events: Sequence[DocumentEvent]) -> Exception | None:
        if any(e.document_id == "bad" for e in events):
            if len(events) == 1:
                attempts_on_bad["n"] += 1
            return DocumentRejected("field 'content' is binary")
        return None

    handler = Recorder(fail)
    await enqueue(redis_client, keys, [event("good1", 1), event("bad", 2), event("good2", 3)])
    async with running(redis_client, keys, handler, retry_times=2):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert {e.document_id for e in handler.applied} == {"good1", "good2"}
    assert attempts_on_bad["n"] == 3, "one first try plus retry_times retries"
    dead = await redis_client.xrange(keys.dead)
    assert len(dead) == 1
    assert b"binary" in dead[0][1][b"error"]
    assert (await Stats(redis_client, keys).read())["dead_lettered"] == 1


async def test_malformed_entry_is_dead_lettered(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    await redis_client.xadd(keys.events, {"event": b"{not json", "key": b"x"})
    await enqueue(redis_client, keys, [event("ok", 1)])
    handler = Recorder(lambda events: None)
    async with running(redis_client, keys, handler):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert [e.document_id for e in handler.applied] == ["ok"]
    assert await redis_client.xlen(keys.dead) == 1


async def test_stop_leaves_unapplied_entries_queued(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler = Recorder(lambda events: VectorStoreUnavailable("down"))
    await enqueue(redis_client, keys, [event("a", 1)])
    async with running(redis_client, keys, handler):
        await wait_for(lambda: _calls_at_least(handler, 1))
    assert await EventQueue(redis_client, keys).backlog() == 1
    assert await redis_client.xlen(keys.dead) == 0


async def _queue_empty(redis_client: aioredis.Redis, keys: Keys) -> bool:
    return await EventQueue(redis_client, keys).backlog() == 0


async def _calls_at_least(handler: Recorder, n: int) -> bool:
    return handler.calls >= n


async def test_rejected_document_is_dead_lettered_without_retries(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)

    class Rejecting(Recorder):
        async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
            outcome = await super().handle_batch(events)
            outcome.rejected.update(
                {e.key: "content is binary" for e in events if e.document_id == "bad"}
            )
            return outcome

    handler = Rejecting(lambda events: None)
    await enqueue(redis_client, keys, [event("bad", 1), event("good", 2)])
    async with running(redis_client, keys, handler):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert handler.calls == 1
    dead = await redis_client.xrange(keys.dead)
    assert [fields[b"error"] for _, fields in dead] == [b"content is binary"]


async def _dead_letters(redis_client: aioredis.Redis, keys: Keys, count: int) -> bool:
    return int(await redis_client.xlen(keys.dead)) >= count
