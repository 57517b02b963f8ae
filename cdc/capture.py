"""Tail the change stream into the durable queue, checkpointing exactly what is queued.

Each batch of changes becomes one EventQueue.append: the batch's events and
the position after its last change, written atomically, so the saved
position never moves past an event that is not durably queued. A crash
anywhere replays at most the batch in hand, and replays are harmless
(event ids and versions come from the changes themselves)."""

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
    the events of one queue write, *max_backlog* the queue length above
    which reading pauses (backpressure), *full_document* chooses
    updateLookup or post-images ("whenAvailable" falls back to a lookup when
    the post-image is missing), *pre_images* asks for
    fullDocumentBeforeChange "whenAvailable". *max_await* bounds how long a
    read waits for changes, and so how late a change is queued and how soon
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
            async with await self._open() as stream:
                last: _Batch | None = None
                while not stop.is_set():
                    raise_if_cancelling()
                    await self._backpressure.wait(stop)
                    if stop.is_set():
                        # No read past the queue's limit; the position in hand is saved
                        # all the same (a quiet read's is skipped while recent).
                        if last is not None and last.quiet:
                            await self._commit(last, final=True)
                        break
                    batch = await self._read(stream)
                    await self._commit(batch, final=stop.is_set())
                    if batch.invalidated_by is not None:
                        return batch.invalidated_by
                    last = batch
        except OperationFailure as exc:
            if exc.code in HISTORY_LOST_CODES:
                reason = (exc.details or {}).get("errmsg", str(exc))
                log.error("history_lost", code=exc.code, error=reason, **self._position.describe())
                raise HistoryLost(self._history_lost()) from exc
            raise
        return None

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

    async def _read(self, stream: AsyncChangeStream[Document]) -> _Batch:
        """Read until the server has nothing more right now, *max_batch* events
        are in hand, *max_await* has passed, or the stream is invalidated."""
        batch = _Batch(token=stream.resume_token)
        deadline = asyncio.get_running_loop().time() + self._max_await
        while len(batch.events) < self._max_batch:
            change = await stream.try_next()
            if change is None:
                batch.token = stream.resume_token
                break
            result, urgent = await self._map(change)
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
            batch.token = stream.resume_token
            batch.cluster_time = pack_timestamp(change["clusterTime"])
            if asyncio.get_running_loop().time() >= deadline:
                break
        return batch

    async def _map(
        self, change: Mapping[str, Any]
    ) -> tuple[DocumentEvent | CollectionChange | None, bool]:
        """The change's event (as ChangeMapper gives it), and whether it goes to the
        priority lane."""
        if (
            self._full_document == "whenAvailable"
            and change["operationType"] in ("update", "replace")
            and change.get("fullDocument") is None
            and self._mapper.relevant(change)
        ):
            change = await self._look_up(change)
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
