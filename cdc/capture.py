"""Tail the change stream into the durable queue, checkpointing exactly what is queued.

Each batch of changes becomes one EventQueue.append: the batch's events and
the position after its last change, written atomically, so the saved
position never moves past an event that is not durably queued. A crash
anywhere replays at most the batches in hand (the one being queued, the one
being mapped and the changes read ahead), and replays are harmless (event ids
and versions come from the changes themselves).

The three stages overlap: the stream is read ahead on a task of its own
(cdc.readahead), the changes in hand are mapped while the batch before them
is being queued, and writes land one at a time, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import OperationFailure

from cdc.backpressure import Backpressure
from cdc.catalog import catalog_events
from cdc.mapping import ChangeMapper, CollectionChange, origin_of
from cdc.namespaces import Document, WatchScope
from cdc.positions import StreamPosition, token_cluster_time
from cdc.readahead import ReadAhead
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore, pack_timestamp
from core.errors import HISTORY_LOST_CODES, DocumentRejected, HistoryLost
from core.events import DocumentEvent, logged_keys
from core.retry import Outage, Stopped, outlast, raise_if_cancelling

log = structlog.get_logger("cdc.capture")

FullDocumentMode = Literal["updateLookup", "whenAvailable", "required"]
Fence = int | Callable[[], int]

CHECKPOINT_INTERVAL = 1.0
"""Seconds between saves of a quiet stream's position: often enough that a restart
rereads little, rarely enough that an idle pipeline barely writes to Redis."""


@dataclass
class _Batch:
    """What one read from the stream produced, not yet queued."""

    token: Mapping[str, Any] | None
    events: list[DocumentEvent] = field(default_factory=list)
    urgent: set[str] = field(default_factory=set)
    filtered: int = 0
    cluster_time: int | None = None
    invalidated_by: Mapping[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    """When its read began (for the batch's log line)."""

    @property
    def quiet(self) -> bool:
        """Nothing to queue or count: only the position may have moved."""
        return not (self.events or self.filtered)


class Capture:
    """The change stream tailer of one pipeline.

    *collections* empty watches the whole database. *fence* is the lease's
    fencing token, or a callable returning the current one; a write with a
    stale fence raises LeaseLost, which ends :meth:`run`. *max_batch* caps
    the changes of one queue write (a batch is what was read while the one
    before it was queued, so a stream that is behind fills it and a live one
    queues each change as it comes), *max_backlog* the queue length above
    which queueing pauses (backpressure), *full_document* chooses
    updateLookup or post-images ("whenAvailable" falls back to a lookup when
    the post-image is missing), *pre_images* asks for
    fullDocumentBeforeChange "whenAvailable". *max_await* bounds how long the
    server waits for changes before answering an empty read, and so how soon
    a stop is noticed. A quiet stream's position is saved at most every
    *checkpoint_interval* seconds. Outages (MongoDB or Redis unreachable) are
    waited out through core.retry with backoff up to *max_retry_wait* seconds;
    a batch queued again marks the outage over."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        collections: Sequence[str],
        mapper: ChangeMapper,
        queue: EventQueue,
        tokens: ResumeTokenStore,
        stats: Stats,
        fence: Fence,
        *,
        max_batch: int = 500,
        max_backlog: int = 10_000,
        full_document: FullDocumentMode = "updateLookup",
        pre_images: bool = False,
        max_await: float = 0.5,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        max_retry_wait: float = 10.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self._client = client
        self._scope = WatchScope(database, collections)
        self._mapper = mapper
        self._queue = queue
        self._tokens = tokens
        self._stats = stats
        self._fence = fence
        self._max_batch = max_batch
        self._backpressure = Backpressure(queue, max_backlog, poll=min(max_await, 0.2))
        self._full_document = full_document
        self._pre_images = pre_images
        self._max_await = max_await
        self._checkpoint_interval = checkpoint_interval
        self._max_retry_wait = max_retry_wait
        self._position = StreamPosition()
        self._saved_at = float("-inf")
        self._outage = Outage("the change stream (MongoDB) or the queue (Redis)")

    async def run(self, stop: asyncio.Event) -> None:
        """Capture until *stop* is set: then queue the batch in hand, save its
        position and return.

        Raises HistoryLost when the checkpointed position is no longer in the
        server's history (the caller must resynchronise), LeaseLost when the
        fence is stale; any other non-transient error propagates too. The
        caller must not run two captures of one pipeline with the same fence."""
        try:
            checkpoint = await outlast(self._tokens.load, what="the checkpoint (Redis)", stop=stop)
            self._position = StreamPosition.from_checkpoint(checkpoint)
            log.info("capture_started", scope=self._scope.describe(), **self._position.describe())
            await outlast(
                lambda: self._capture(stop),
                what="the change stream (MongoDB) or the queue (Redis)",
                stop=stop,
                max_wait=self._max_retry_wait,
                outage=self._outage,
            )
        except Stopped:
            log.info("capture_stopped_during_an_outage", **self._position.describe())
            return
        log.info("capture_stopped", **self._position.describe())

    async def _capture(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            invalidated_by = await self._follow(stop)
            if invalidated_by is None:
                return
            self._position = StreamPosition(start_after=invalidated_by)

    async def _follow(self, stop: asyncio.Event) -> Mapping[str, Any] | None:
        """Stream from the current position until stop (None) or an invalidate (its token)."""
        try:
            async with (
                await self._open() as stream,
                ReadAhead(stream, 2 * self._max_batch) as ahead,
            ):
                return await self._pump(ahead, stop)
        except OperationFailure as exc:
            if exc.code in HISTORY_LOST_CODES:
                reason = (exc.details or {}).get("errmsg", str(exc))
                log.error("history_lost", code=exc.code, error=reason, **self._position.describe())
                raise HistoryLost(self._history_lost()) from exc
            raise

    async def _pump(self, ahead: ReadAhead, stop: asyncio.Event) -> Mapping[str, Any] | None:
        """Map each batch while the one before it is being queued and the stream is read
        ahead: the server, the mapping and Redis work at once. Writes still happen one
        at a time and in order, each one atomic with its position, and a batch is
        queued only after the one before it landed, so the saved position never passes
        an event that is not queued. The backlog is read after each write lands (within
        the write's task) and waited on before the next, so the queue stays within
        max_backlog + max_batch."""
        writing: asyncio.Task[bool] | None = None
        last: _Batch | None = None
        try:
            while not stop.is_set():
                raise_if_cancelling()
                batch = await self._read(ahead)
                room = await self._landed(writing)
                writing = None
                if not room and not await self._backpressure.wait(stop):
                    # Stopped while the queue is full: no write past its limit; a
                    # batch of events is read again on the next start, a position
                    # alone is saved all the same.
                    if batch.quiet:
                        await self._commit(batch, final=True)
                    return None
                if stop.is_set() or batch.invalidated_by is not None:
                    await self._commit(batch, final=stop.is_set())
                    return batch.invalidated_by
                writing = asyncio.create_task(self._queue_batch(batch))
                # Let the write encode and send its batch, and the read ahead ask the
                # server for more, before mapping the next batch holds the thread.
                await asyncio.sleep(0)
                last = batch
            await self._landed(writing)
            writing = None
            if last is not None and last.quiet:
                # The quiet position read last may have been skipped as recent.
                await self._commit(last, final=True)
            return None
        finally:
            if writing is not None:
                await self._abandon(writing)

    async def _queue_batch(self, batch: _Batch) -> bool:
        """Commit *batch*; then whether the queue has room for the next one."""
        await self._commit(batch, final=False)
        return await self._backpressure.has_room()

    @staticmethod
    async def _landed(writing: asyncio.Task[bool] | None) -> bool:
        """Wait for the write in flight, if any (its error is raised here); whether the
        queue had room after it (False when there was none: not known)."""
        return writing is not None and await writing

    @staticmethod
    async def _abandon(writing: asyncio.Task[bool]) -> None:
        """Leave the write in flight on an error: let it land (the position it saves is
        true either way) unless capture itself is being cancelled; the error that ended
        capture is the one reported."""
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)

    def _history_lost(self) -> str:
        return (
            f"the change stream no longer holds the saved position, "
            f"{self._position.explain()}: the oplog rolled past it while nothing read "
            f"the stream, so the changes made since cannot be replayed ("
            f"with CDC_ON_HISTORY_LOST=resync, the default, the service resynchronises by "
            f"itself, deletes included; by hand: `cdc-sidecar checkpoint reset --rescan`, "
            f"then start the service: it rescans every watched collection and re-embeds only "
            f"documents whose text changed, but vectors of documents deleted meanwhile stay)"
        )

    async def _open(self) -> AsyncChangeStream[Document]:
        options: dict[str, Any] = {
            "full_document": self._full_document,
            "max_await_time_ms": max(1, round(self._max_await * 1000)),
            "batch_size": self._max_batch,
            **self._position.watch_options(),
        }
        if self._pre_images:
            options["full_document_before_change"] = "whenAvailable"
        pipeline = self._scope.pipeline(self._mapper.projection(), self._pre_images)
        stream = await self._scope.target(self._client).watch(pipeline, **options)
        log.info("stream_opened", scope=self._scope.describe(), **self._position.describe())
        return stream

    async def _read(self, ahead: ReadAhead) -> _Batch:
        """The changes in hand, up to *max_batch*, waiting only when there is none: a
        stream that is behind gives batches of what was read while the last one was
        queued, a live one each change as it comes. Ends early at an invalidate."""
        batch = _Batch(token=None)
        last: Mapping[str, Any] | None = None
        for read in await ahead.take(self._max_batch):
            change: Mapping[str, Any] | None = read.change
            if change is None:
                batch.token = read.token
                continue
            if self._lacks_post_image(change):
                change = await self._look_up(change)
            result, urgent = self._map(change)
            if isinstance(result, CollectionChange):
                if result.operation_type == "invalidate":
                    # The server refuses to resume after an invalidate: the batch
                    # keeps the position before it, so a restart replays it.
                    log.warning("stream_invalidated", scope=self._scope.describe())
                    batch.invalidated_by = result.token
                    break
                events = self._collection_changed(result)
                batch.events += events
                batch.filtered += not events
            elif result is None:
                batch.filtered += 1
            else:
                batch.events.append(result)
                if urgent:
                    batch.urgent.add(result.event_id)
            batch.token = read.token
            last = change
        if last is not None:
            batch.cluster_time = pack_timestamp(last["clusterTime"])
        return batch

    def _lacks_post_image(self, change: Mapping[str, Any]) -> bool:
        """Whether *change* needs the lookup that "whenAvailable" falls back to."""
        return (
            self._full_document == "whenAvailable"
            and change["operationType"] in ("update", "replace")
            and change.get("fullDocument") is None
            and self._mapper.relevant(change)
        )

    def _map(
        self, change: Mapping[str, Any]
    ) -> tuple[DocumentEvent | CollectionChange | None, bool]:
        """The change's event (as ChangeMapper gives it), and whether it goes to the
        priority lane."""
        try:
            return self._mapper(change), self._mapper.urgent(change)
        except DocumentRejected as exc:
            origin = origin_of(change)
            log.error(
                "document_rejected",
                namespace=origin.namespace,
                document_id=origin.document_id,
                error=str(exc),
            )
            return self._mapper.rejected(origin, exc), False

    async def _look_up(self, change: Mapping[str, Any]) -> Mapping[str, Any]:
        """*change* with the document's current state, as updateLookup would give it."""
        ns = change["ns"]
        projection = self._mapper.projection()
        current = await self._client[ns["db"]][ns["coll"]].find_one(
            change["documentKey"], projection=projection
        )
        return {**change, "fullDocument": current}

    def _collection_changed(self, change: CollectionChange) -> list[DocumentEvent]:
        """The queue events of a change to a whole collection, logged."""
        events = catalog_events(change, self._scope)
        log.warning(
            "collection_changed",
            operation=change.operation_type,
            namespace=change.namespace,
            to=change.to,
            events=[f"{event.event_type} {event.namespace}" for event in events],
        )
        return events

    async def _commit(self, batch: _Batch, *, final: bool) -> None:
        """Queue *batch* with the position after it; a read without events saves
        the position only when it moved, at most every checkpoint_interval
        unless it is the *final* read before stopping."""
        token = batch.token
        moved = token is not None and token != self._position.token
        recent = self._since_saved() < self._checkpoint_interval and not final
        if batch.quiet and (not moved or recent):
            return
        position = StreamPosition(
            resume_after=token,
            cluster_time=token_cluster_time(token)
            or batch.cluster_time
            or self._position.cluster_time,
        )
        await self._queue.append(
            batch.events, position.checkpoint(), fence=self._current_fence(), urgent=batch.urgent
        )
        self._position = position
        self._saved_at = asyncio.get_running_loop().time()
        self._outage.ended()
        if batch.filtered:
            await self._stats.incr({"events_filtered": batch.filtered})
        if batch.events:
            log.debug(
                "batch_queued",
                events=len(batch.events),
                filtered=batch.filtered,
                urgent=len(batch.urgent),
                documents=logged_keys(batch.events),
                seconds=round(time.monotonic() - batch.started, 4),
                **position.describe(),
            )

    def _current_fence(self) -> int:
        return self._fence() if callable(self._fence) else self._fence

    def _since_saved(self) -> float:
        return asyncio.get_running_loop().time() - self._saved_at
