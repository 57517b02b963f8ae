"""The index scheduler: reads the queue in batches and drives the handlers.

Up to ``max_workers`` batches are in flight at once, so reading, Redis and
Milvus I/O overlap the embedding of another batch; work on one document is
serialised by a per-document lock held from planning until acknowledgement.
An entry about a whole collection (a drop or a rename) is a barrier: it is
applied alone, once the batches read before it have finished.
An entry is acknowledged only after every handler accepted it. A retriable
failure (Milvus or the embedder down) retries the batch with backoff for as
long as it takes; any other failure is isolated to the documents that cause it,
which go to the dead-letter stream after the configured retries."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import structlog

from checkpoints.consumer import QueueEntry
from checkpoints.versions import VersionRecord
from core.events import DocumentEvent, is_collection_event, logged_keys
from core.retry import Stopped, outlast, raise_if_cancelling, sleep_unless
from indexer.handlers import Dispatcher, Outcome
from indexer.lanes import Lane, current_lane, lane_of

log = structlog.get_logger(__name__)

# How long a stop waits for the batches in flight before cancelling them: well
# inside the grace period between SIGTERM and SIGKILL (10 s is the strictest
# we expect; Kubernetes gives 30).
DRAIN_SECONDS = 5.0


class EntrySource(Protocol):
    async def start(self) -> None: ...

    async def read(self, count: int, block_ms: int, *, bulk: bool = True) -> list[QueueEntry]:
        """Up to *count* entries of one lane; *bulk* False leaves the bulk lane unread."""
        ...

    async def commit(
        self,
        entry_ids: Sequence[str],
        *,
        versions: Mapping[str, VersionRecord],
        counts: Mapping[str, int],
        last_applied: Mapping[str, Any] | None,
    ) -> None: ...

    async def dead_letter(self, entry: QueueEntry, error: str) -> None: ...


class TaskObserver(Protocol):
    def finished(self, event: DocumentEvent | None, status: str) -> None:
        """One queue entry is done with: applied ("success"), or moved to the
        dead-letter stream, "rejected" by a handler (the document's own fault) or
        "failed" after its retries. *event* is None for a malformed entry. Must not
        do I/O (a metric)."""
        ...


class _Unobserved:
    def finished(self, event: DocumentEvent | None, status: str) -> None:
        return


class DocumentLocks:
    """Turns on documents, granted in the order batches ask for them.

    A batch never overtakes an earlier one on a document they share: after a
    crash, a redelivered batch must apply before the newer changes behind it,
    or its earlier attempt's writes would come back as a stale change that
    cannot put them right. Every document's queue follows the same arrival
    order, so batches never deadlock. hold() asks for all its turns before it
    first waits: callers must enter it in the order they read their batches."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    @asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        turns = {key: loop.create_future() for key in sorted(set(keys))}
        for key, turn in turns.items():
            queue = self._queues.setdefault(key, deque())
            queue.append(turn)
            if len(queue) == 1:
                turn.set_result(None)
        try:
            for turn in turns.values():
                await turn
            yield
        finally:
            for key, turn in turns.items():
                self._leave(key, turn)

    def _leave(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues[key]
        granted = queue[0] is turn
        queue.remove(turn)
        if not queue:
            del self._queues[key]
        elif granted and not queue[0].done():
            queue[0].set_result(None)


class IndexScheduler:
    def __init__(
        self,
        source: EntrySource,
        dispatcher: Dispatcher,
        *,
        batch_size: int,
        batch_interval: float,
        max_workers: int,
        retry_times: int,
        retry_delay: float,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        drain_seconds: float = DRAIN_SECONDS,
        paused: Callable[[], Awaitable[bool]] | None = None,
        observer: TaskObserver | None = None,
    ) -> None:
        """*paused*, when given, is asked before each read: while it says True no
        new entry is read (batches in flight finish; the idle hook still runs).
        *observer* is told of each entry done with (metrics)."""
        self._source = source
        self._dispatcher = dispatcher
        self._batch_size = batch_size
        self._block_ms = max(1, int(batch_interval * 1000))
        self._max_workers = max_workers
        self._retry_times = retry_times
        self._retry_delay = retry_delay
        self._on_idle = on_idle
        self._drain_seconds = drain_seconds
        self._paused = paused
        self._observer: TaskObserver = observer or _Unobserved()
        self._was_paused = False
        self.reading_paused = asyncio.Event()
        """Set while the pause is in force and no read is outstanding: an entry queued
        from then on is not read until the pause ends."""
        self._locks = DocumentLocks()
        self._held: list[QueueEntry] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Process the queue until *stop* is set, then finish the batches in hand,
        cancelling those still running after ``drain_seconds``: their entries
        stay unacknowledged and are delivered again on the next start.

        Raises whatever a batch raised that is not a document's fault and not
        retriable (a bug): the supervisor then stops the process, unacknowledged
        entries stay queued."""
        try:
            await outlast(self._source.start, what="the queue (Redis)", stop=stop)
        except Stopped:
            return
        in_flight: set[asyncio.Task[None]] = set()
        # Bulk batches may fill every worker but one, which stays free for live changes.
        bulk_in_flight: set[asyncio.Task[None]] = set()
        async with asyncio.TaskGroup() as batches:
            stopping = batches.create_task(stop.wait())
            while not stop.is_set():
                raise_if_cancelling()
                if len(in_flight) >= self._max_workers:
                    # Waiting for a free worker must not outlast a stop.
                    await asyncio.wait({*in_flight, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                bulk = len(bulk_in_flight) < max(1, self._max_workers - 1)
                try:
                    entries = self._held or await self._read(stop, bulk=bulk)
                except Stopped:
                    break
                self._held = []
                if not entries:
                    continue
                alone = _first_collection_event(entries)
                if alone == 0:
                    # A change to a whole collection applies by itself: after what was
                    # read before it, before anything behind it is read.
                    if in_flight:
                        await asyncio.wait(in_flight)
                    await self._process(entries[:1], stop)
                    self._held = entries[1:]
                    continue
                if alone is not None:
                    entries, self._held = entries[:alone], entries[alone:]
                task = batches.create_task(self._process(entries, stop))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if lane_of(entries[0].entry_id) == Lane.BULK:
                    bulk_in_flight.add(task)
                    task.add_done_callback(bulk_in_flight.discard)
            if in_flight:
                _, unfinished = await asyncio.wait(in_flight, timeout=self._drain_seconds)
                for task in unfinished:
                    task.cancel()
                if unfinished:
                    log.warning("batches_cancelled_on_stop", batches=len(unfinished))

    async def _read(self, stop: asyncio.Event, *, bulk: bool) -> list[QueueEntry]:
        """The next batch (of the bulk lane too when *bulk*), waiting out Redis
        outages; lets the idle hook run when there is none. Raises Stopped when
        *stop* is set during an outage."""
        if await self._pausing(stop):
            await sleep_unless(stop, self._block_ms / 1000)
            entries = []
        else:
            entries = await outlast(
                lambda: self._source.read(self._batch_size, self._block_ms, bulk=bulk),
                what="the queue (Redis)",
                stop=stop,
            )
        if not entries and self._on_idle is not None:
            await outlast(self._on_idle, what="the idle flush", stop=stop)
        return entries

    async def _pausing(self, stop: asyncio.Event) -> bool:
        if self._paused is None:
            return False
        paused = await outlast(self._paused, what="the pause flag (Redis)", stop=stop)
        if paused != self._was_paused:
            log.warning("indexing_paused" if paused else "indexing_resumed")
            self._was_paused = paused
        if paused:
            self.reading_paused.set()
        else:
            self.reading_paused.clear()
        return paused

    async def _process(self, entries: list[QueueEntry], stop: asyncio.Event) -> None:
        # The batch's task has its own context: the embedder sees this batch's lane.
        current_lane.set(lane_of(entries[0].entry_id))
        try:
            await self._process_in_turn(entries, stop)
        except Stopped:
            log.info("batch_left_for_next_run", entries=len(entries))

    async def _process_in_turn(self, entries: list[QueueEntry], stop: asyncio.Event) -> None:
        started = time.monotonic()
        good = [entry for entry in entries if entry.event is not None]
        # Enter the turns before anything else awaits, so batches queue on their
        # documents in the order they were read.
        async with self._locks.hold([e.event.key for e in good if e.event]):
            for entry in entries:
                if entry.event is None:
                    log.error("entry_malformed", entry_id=entry.entry_id, error=entry.error)
                    await self._dead_letter(entry, entry.error or "malformed entry", stop)
                    self._observer.finished(None, "failed")
            if good:
                await self._apply(good, stop)
        events = [entry.event for entry in good if entry.event is not None]
        times = [event.timestamp for event in events]
        log.debug(
            "batch_done",
            batch=entries[0].entry_id,
            entries=len(entries),
            event_types=dict(Counter(event.event_type for event in events)),
            documents=logged_keys(events),
            first_cluster_time=min(times).isoformat() if times else None,
            last_cluster_time=max(times).isoformat() if times else None,
            seconds=round(time.monotonic() - started, 4),
        )

    async def _apply(self, entries: list[QueueEntry], stop: asyncio.Event) -> None:
        result = await self._retry_while_retriable(entries, stop)
        if isinstance(result, Outcome):
            await self._commit(entries, result, stop)
            return
        if len(_by_document(entries)) == 1 or stop.is_set():
            await self._apply_alone(entries, stop, first_error=result)
            return
        log.warning("batch_failed_isolating", entries=len(entries), error=repr(result))
        for group in _by_document(entries).values():
            await self._apply_alone(group, stop)

    async def _apply_alone(
        self,
        entries: list[QueueEntry],
        stop: asyncio.Event,
        first_error: BaseException | None = None,
    ) -> None:
        """Apply one document's entries, retrying a failure retry_times times
        (retry_delay apart) before dead-lettering them; *first_error* counts as
        the first attempt when the caller already made it."""
        attempt = 0
        result: Outcome | BaseException | None = first_error
        while True:
            if result is None:
                result = await self._retry_while_retriable(entries, stop)
            if isinstance(result, Outcome):
                await self._commit(entries, result, stop)
                return
            attempt += 1
            if stop.is_set():
                return
            log.warning("document_failed", key=_key(entries), attempt=attempt, error=repr(result))
            if attempt > self._retry_times:
                await self._give_up(entries, result, stop)
                return
            await sleep_unless(stop, self._retry_delay)
            result = None

    async def _commit(
        self, entries: list[QueueEntry], outcome: Outcome, stop: asyncio.Event
    ) -> None:
        """Acknowledge *entries* with what they applied; entries of documents the
        handlers rejected go to the dead-letter stream (their vectors are gone,
        their tombstone is committed), without retries: rejection is decided
        from the document itself and would repeat."""
        errors = {
            entry.entry_id: outcome.rejected[entry.event.key]
            for entry in entries
            if entry.event is not None and entry.event.key in outcome.rejected
        }
        await outlast(
            lambda: self._source.commit(
                [e.entry_id for e in entries if e.entry_id not in errors],
                versions=outcome.versions,
                counts=outcome.counts,
                last_applied=outcome.last_applied,
            ),
            what="the queue (Redis)",
            stop=stop,
        )
        for entry in entries:
            if entry.entry_id in errors:
                await self._dead_letter(entry, errors[entry.entry_id], stop)
            status = "rejected" if entry.entry_id in errors else "success"
            self._observer.finished(entry.event, status)

    async def _dead_letter(self, entry: QueueEntry, error: str, stop: asyncio.Event) -> None:
        await outlast(
            lambda: self._source.dead_letter(entry, error),
            what="the dead-letter stream (Redis)",
            stop=stop,
        )

    async def _give_up(
        self, entries: list[QueueEntry], error: BaseException, stop: asyncio.Event
    ) -> None:
        if stop.is_set():
            return
        for entry in entries:
            await self._dead_letter(entry, f"{type(error).__name__}: {error}", stop)
            self._observer.finished(entry.event, "failed")
        log.error("dead_lettered", key=_key(entries), entries=len(entries), error=repr(error))

    async def _retry_while_retriable(
        self, entries: list[QueueEntry], stop: asyncio.Event
    ) -> Outcome | BaseException:
        """Dispatch until it succeeds (its Outcome) or fails for a non-retriable reason.

        Gives up retrying when *stop* is set, returning the last error; the
        entries then stay unacknowledged for the next run."""
        events: list[DocumentEvent] = [e.event for e in entries if e.event is not None]
        try:
            return await outlast(
                lambda: self._dispatcher.dispatch(events),
                what="indexing (Milvus, the embedder or Redis)",
                stop=stop,
                initial=self._retry_delay,
            )
        except Exception as error:  # noqa: BLE001 - the caller decides: retry, dead-letter, stop
            return error


def _first_collection_event(entries: Sequence[QueueEntry]) -> int | None:
    """Where the first entry about a whole collection is in *entries*, if any."""
    for index, entry in enumerate(entries):
        if entry.event is not None and is_collection_event(entry.event):
            return index
    return None


def _by_document(entries: list[QueueEntry]) -> dict[str, list[QueueEntry]]:
    groups: dict[str, list[QueueEntry]] = defaultdict(list)
    for entry in entries:
        if entry.event is not None:
            groups[entry.event.key].append(entry)
    return groups


def _key(entries: list[QueueEntry]) -> str:
    return entries[0].event.key if entries and entries[0].event else "?"
