"""The scheduler against the real Redis queue: acknowledge only what handlers accepted,
retry infrastructure failures without losing entries, contain bad documents,
serialise work per document."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import structlog.testing

from checkpoints.consumer import EventReader, QueueEntry
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from core.errors import DocumentRejected, EmbedderUnavailable, VectorStoreUnavailable
from core.events import DocumentEvent, DocumentUpdatedEvent
from indexer.handlers import Dispatcher, Outcome
from indexer.lanes import Lane, current_lane
from indexer.scheduler import IndexScheduler, TaskObserver
from tests.indexer.queue_support import enqueue


def event(doc: str, version: int, content: str = "text") -> DocumentEvent:
    return DocumentUpdatedEvent(
        event_id=f"{doc}-{version}",
        document_id=doc,
        namespace="app.docs",
        version=version,
        timestamp=datetime.now(UTC),
        content=content,
    )


class Recorder:
    """A handler that records what it applied and fails as told."""

    def __init__(self, fail: Callable[[Sequence[DocumentEvent]], Exception | None]) -> None:
        self.applied: list[DocumentEvent] = []
        self.batch_sizes: list[int] = []
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
        self.batch_sizes.append(len(events))
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


class Faulty:
    """The real queue reader, whose calls fail with a Redis outage while told to."""

    def __init__(self, reader: EventReader) -> None:
        self.reader = reader
        self.failures: dict[str, int] = {}  # method name -> failures left
        self.reads: list[tuple[int, int]] = []

    def _outage(self, method: str) -> None:
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            raise redis.exceptions.ConnectionError(f"{method}: Connection refused")

    async def start(self) -> None:
        self._outage("start")
        await self.reader.start()

    async def read(self, count: int, block_ms: int, *, bulk: bool = True) -> list[QueueEntry]:
        self.reads.append((count, block_ms))
        self._outage("read")
        return await self.reader.read(count, block_ms, bulk=bulk)

    async def commit(self, entry_ids: Sequence[str], **applied: Any) -> None:
        self._outage("commit")
        await self.reader.commit(entry_ids, **applied)

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        self._outage("dead_letter")
        await self.reader.dead_letter(entry, error)


@asynccontextmanager
async def running(
    redis_client: aioredis.Redis,
    keys: Keys,
    handler: Recorder,
    *,
    source: Faulty | None = None,
    batch_interval: float = 0.05,
    on_idle: Callable[[], Awaitable[None]] | None = None,
    paused: Callable[[], Awaitable[bool]] | None = None,
    drain_seconds: float = 5.0,
    observer: TaskObserver | None = None,
    **options: int,
) -> AsyncIterator[asyncio.Event]:
    scheduler = IndexScheduler(
        source or EventReader(redis_client, keys, consumer="c1"),
        Dispatcher([handler]),
        batch_size=options.get("batch_size", 10),
        batch_interval=batch_interval,
        max_workers=options.get("max_workers", 3),
        retry_times=options.get("retry_times", 2),
        retry_delay=0.01,
        on_idle=on_idle,
        drain_seconds=drain_seconds,
        paused=paused,
        observer=observer,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_everything_is_applied_and_acknowledged(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler = Recorder(lambda events: None)
    await enqueue(redis_client, keys, [event(f"d{i % 7}", i) for i in range(60)])
    async with running(redis_client, keys, handler):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert sorted(e.event_id for e in handler.applied) == sorted(f"d{i % 7}-{i}" for i in range(60))
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


async def test_an_outage_on_a_one_document_batch_never_dead_letters_it(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    # A single document's batch skips isolation: it must still wait the outage out.
    keys = Keys(pipeline_name)
    outage = {"on": True}
    handler = Recorder(lambda events: VectorStoreUnavailable("down") if outage["on"] else None)
    await enqueue(redis_client, keys, [event("a", 1)])
    async with running(redis_client, keys, handler, retry_times=0):
        await wait_for(lambda: _calls_at_least(handler, 3))
        outage["on"] = False
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert [e.document_id for e in handler.applied] == ["a"]
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
    assert dead[0][1][b"error"] == b"DocumentRejected: field 'content' is binary"
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
    dead = await redis_client.xrange(keys.dead)
    assert [fields[b"error"].split(b":")[0] for _, fields in dead] == [b"not a document event"]


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


def reader(redis_client: aioredis.Redis, keys: Keys) -> Faulty:
    return Faulty(EventReader(redis_client, keys, consumer="c1"))


@pytest.mark.parametrize(("batch_interval", "block_ms"), [(1.0, 1000), (0.0001, 1)])
async def test_reads_batches_of_batch_size_waiting_up_to_the_batch_interval(
    redis_client: aioredis.Redis, pipeline_name: str, batch_interval: float, block_ms: int
) -> None:
    # BLOCK 0 would wait forever: the shortest wait is 1 ms.
    keys = Keys(pipeline_name)
    source = reader(redis_client, keys)
    handler = Recorder(lambda events: None)
    await enqueue(redis_client, keys, [event(f"d{i}", i) for i in range(25)])
    async with running(
        redis_client, keys, handler, source=source, batch_interval=batch_interval, batch_size=10
    ):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert set(source.reads) == {(10, block_ms)}
    assert sum(handler.batch_sizes) == 25 and max(handler.batch_sizes) == 10


async def test_the_idle_hook_runs_while_the_queue_is_empty_and_work_queued_later_is_done(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    idle = {"calls": 0, "failures": 2}

    async def on_idle() -> None:
        if idle["failures"]:  # Redis down while the hook flushes: waited out
            idle["failures"] -= 1
            raise redis.exceptions.ConnectionError("Connection refused")
        idle["calls"] += 1

    handler = Recorder(lambda events: None)
    async with running(redis_client, keys, handler, on_idle=on_idle):
        await wait_for(lambda: _is(lambda: idle["calls"] >= 2))
        await enqueue(redis_client, keys, [event("a", 1)])
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert [e.document_id for e in handler.applied] == ["a"]


async def test_the_idle_hook_does_not_run_between_batches(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    await enqueue(redis_client, keys, [event(f"d{i}", i) for i in range(30)])
    idle_with_work_left: list[int] = []

    async def on_idle() -> None:
        idle_with_work_left.append(await EventQueue(redis_client, keys).backlog())

    handler = Recorder(lambda events: None)
    async with running(redis_client, keys, handler, on_idle=on_idle, batch_size=5, max_workers=1):
        await wait_for(lambda: _queue_empty(redis_client, keys))
        await wait_for(lambda: _is(lambda: bool(idle_with_work_left)))
    assert idle_with_work_left[0] == 0


@pytest.mark.parametrize("step", ["start", "read", "commit", "dead_letter"])
async def test_a_redis_outage_at_any_step_is_waited_out(
    redis_client: aioredis.Redis, pipeline_name: str, step: str
) -> None:
    keys = Keys(pipeline_name)
    await redis_client.xadd(keys.events, {"event": b"{not json", "key": b"x"})
    await enqueue(redis_client, keys, [event("ok", 1)])
    source = reader(redis_client, keys)
    source.failures[step] = 2
    handler = Recorder(lambda events: None)
    async with running(redis_client, keys, handler, source=source):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert source.failures[step] == 0
    assert [e.document_id for e in handler.applied] == ["ok"]
    assert await redis_client.xlen(keys.dead) == 1


async def test_a_redis_outage_while_dead_lettering_a_failing_document_is_waited_out(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    await enqueue(redis_client, keys, [event("bad", 1)])
    source = reader(redis_client, keys)
    source.failures["dead_letter"] = 2
    handler = Recorder(lambda events: DocumentRejected("field 'content' is binary"))
    async with running(redis_client, keys, handler, source=source, retry_times=0):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert source.failures["dead_letter"] == 0
    assert await redis_client.xlen(keys.dead) == 1


async def test_a_redis_outage_while_dead_lettering_a_rejected_document_is_waited_out(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)

    class Rejecting(Recorder):
        async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
            outcome = await super().handle_batch(events)
            outcome.rejected.update({e.key: "content is binary" for e in events})
            return outcome

    await enqueue(redis_client, keys, [event("bad", 1)])
    source = reader(redis_client, keys)
    source.failures["dead_letter"] = 2
    async with running(redis_client, keys, Rejecting(lambda events: None), source=source):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert source.failures["dead_letter"] == 0
    assert await redis_client.xlen(keys.dead) == 1


async def test_a_redis_outage_while_committing_a_retried_document_is_waited_out(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    await enqueue(redis_client, keys, [event("flaky", 1)])
    source = reader(redis_client, keys)
    source.failures["commit"] = 2
    handler = Recorder(lambda events: ValueError("once") if handler.calls == 1 else None)
    async with running(redis_client, keys, handler, source=source):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert source.failures["commit"] == 0
    assert [e.document_id for e in handler.applied] == ["flaky"]
    assert await redis_client.xlen(keys.dead) == 0


async def test_the_last_applied_change_is_recorded_with_the_acknowledgement(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)

    class Positioned(Recorder):
        async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
            outcome = await super().handle_batch(events)
            outcome.last_applied = {"key": events[-1].key, "version": events[-1].version}
            return outcome

    await enqueue(redis_client, keys, [event("a", 7)])
    async with running(redis_client, keys, Positioned(lambda events: None)):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert json.loads(await redis_client.get(keys.last_applied)) == {
        "key": "app.docs/a",
        "version": 7,
    }


class Slow(Recorder):
    """A handler that takes its time, counting the batches it works on at once."""

    def __init__(self) -> None:
        super().__init__(lambda events: None)
        self.now = self.peak = 0

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.05)
            return await super().handle_batch(events)
        finally:
            self.now -= 1


async def test_no_more_than_max_workers_batches_are_in_flight(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    handler = Slow()
    await enqueue(redis_client, keys, [event(f"d{i}", i) for i in range(12)])
    async with running(redis_client, keys, handler, batch_size=1, max_workers=2):
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert handler.peak == 2
    assert len(handler.applied) == 12


class Stuck(Recorder):
    """A handler whose batches never finish (a hung embedder)."""

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("reads_fail", [False, True], ids=["", "during a read outage"])
async def test_a_stop_cancels_the_batches_still_running_after_the_drain_deadline(
    redis_client: aioredis.Redis, pipeline_name: str, reads_fail: bool
) -> None:
    keys = Keys(pipeline_name)
    await enqueue(redis_client, keys, [event("a", 1)])
    source = reader(redis_client, keys)
    handler = Stuck(lambda events: None)
    async with running(redis_client, keys, handler, source=source, drain_seconds=0.1):
        await wait_for(lambda: _calls_at_least(handler, 1))
        if reads_fail:
            source.failures["read"] = 1_000_000
            reads = len(source.reads)
            await wait_for(lambda: _is(lambda: len(source.reads) > reads + 1))
    # running() gave run() 10 s to return: the drain deadline cut the batch short.
    assert await EventQueue(redis_client, keys).backlog() == 1
    assert await EventQueue(redis_client, keys).pending() == 1


async def test_nothing_is_read_while_paused_and_the_idle_hook_still_runs(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    await enqueue(redis_client, keys, [event("a", 1)])
    pause = {"on": True, "asked": 0, "idle": 0}

    async def paused() -> bool:
        pause["asked"] += 1
        return pause["on"]

    async def on_idle() -> None:
        pause["idle"] += 1

    source = reader(redis_client, keys)
    handler = Recorder(lambda events: None)
    async with running(redis_client, keys, handler, source=source, paused=paused, on_idle=on_idle):
        await wait_for(lambda: _is(lambda: pause["asked"] >= 3 and pause["idle"] >= 3))
        assert source.reads == [] and handler.calls == 0
        pause["on"] = False
        await wait_for(lambda: _queue_empty(redis_client, keys))
    assert [e.document_id for e in handler.applied] == ["a"]


async def _is(condition: Callable[[], bool]) -> bool:
    return condition()


class Observed:
    """A TaskObserver that records what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def finished(self, event: DocumentEvent | None, status: str) -> None:
        self.seen.append((None if event is None else event.document_id, status))


async def test_the_observer_hears_of_every_entry_with_its_fate_and_each_batch_is_logged(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)

    class Judging(Recorder):
        async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
            outcome = await super().handle_batch(events)
            outcome.rejected.update({e.key: "binary" for e in events if e.document_id == "odd"})
            return outcome

    def fail(events: Sequence[DocumentEvent]) -> Exception | None:
        broken = any(e.document_id == "bad" for e in events)
        return DocumentRejected("always fails") if broken else None

    await redis_client.xadd(keys.events, {"event": b"{not json", "key": b"x"})
    await enqueue(
        redis_client, keys, [event("ok", 1), event("odd", 2), event("bad", 3), event("ok", 4)]
    )
    observer = Observed()
    with structlog.testing.capture_logs() as logs:
        async with running(
            redis_client, keys, Judging(fail), observer=observer, retry_times=1
        ):
            await wait_for(lambda: _queue_empty(redis_client, keys))

    assert sorted(observer.seen, key=str) == sorted(
        [(None, "failed"), ("ok", "success"), ("ok", "success"), ("odd", "rejected"),
         ("bad", "failed")],
        key=str,
    )
    batches = [entry for entry in logs if entry["event"] == "batch_done"]
    assert sum(entry["entries"] for entry in batches) == 5
    first = batches[0]
    assert first["log_level"] == "debug" and first["batch"] and first["seconds"] >= 0
    logged = {key for entry in batches for key in entry["documents"]}
    assert logged == {"app.docs/ok", "app.docs/odd", "app.docs/bad"}
    assert all(
        entry["first_cluster_time"] <= entry["last_cluster_time"]
        for entry in batches
        if entry["first_cluster_time"] is not None
    )


class LaneRecorder(Recorder):
    """Holds bulk batches until released; records each batch's lane as the embedder
    would see it and how many bulk batches were in its hands at once."""

    def __init__(self) -> None:
        super().__init__(lambda events: None)
        self.release_bulk = asyncio.Event()
        self.lanes: list[tuple[Lane, str]] = []
        self.bulk_now = 0
        self.bulk_most = 0

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        lane = current_lane.get()
        self.lanes.append((lane, events[0].document_id))
        if lane is not Lane.BULK:
            return await super().handle_batch(events)
        self.bulk_now += 1
        self.bulk_most = max(self.bulk_most, self.bulk_now)
        try:
            await self.release_bulk.wait()
            return await super().handle_batch(events)
        finally:
            self.bulk_now -= 1


async def test_bulk_batches_leave_a_worker_free_for_a_live_change(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    fence = await Lease(redis_client, keys, owner="test").acquire()
    queue = EventQueue(redis_client, keys)
    job = '{"id": "job", "state": "running"}'
    await redis_client.set(keys.backfill, job)
    bulk = [event(f"bulk-{i}", 1) for i in range(40)]
    await queue.append_bulk(bulk, keys.backfill, job, fence=fence, job_id="job")
    handler = LaneRecorder()
    async with running(redis_client, keys, handler, max_workers=3, batch_size=10):
        await wait_for(lambda: _bulk_held(handler, 2))
        await queue.append([event("live", 2)], None, fence=fence)
        await wait_for(lambda: _applied(handler, "live"))
        assert handler.bulk_now == 2, "the live change must not wait for a bulk batch"
        handler.release_bulk.set()
        await wait_for(lambda: _queue_empty(redis_client, keys))
        await wait_for(lambda: _bulk_empty(queue))
    assert handler.bulk_most == 2
    assert (Lane.LIVE, "live") in handler.lanes
    assert sum(lane is Lane.BULK for lane, _ in handler.lanes) >= 4
    assert len({e.document_id for e in handler.applied}) == 41


async def _bulk_held(handler: LaneRecorder, batches: int) -> bool:
    return handler.bulk_now >= batches


async def _applied(handler: Recorder, document: str) -> bool:
    return any(e.document_id == document for e in handler.applied)


async def _bulk_empty(queue: EventQueue) -> bool:
    return await queue.bulk_backlog() == 0
