"""The sidecar assembled from Settings, and the supervisor that runs it.

One process runs one pipeline: it takes the pipeline's lease, then runs capture,
the indexer and the backfills (the first start's load of the existing documents
is one) side by side until asked to stop. Everything it starts, it stops."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.app import create_app, version
from api.metrics import Build, Metrics
from api.server import HttpServer
from api.state import ServiceState
from cdc.backfill import Backfill
from cdc.capture import Capture
from cdc.fields import IndexedText, MetadataFields, TextLimit, UserField
from cdc.mapping import ChangeMapper
from cdc.namespaces import WatchScope
from checkpoints.backfills import BackfillJob, BackfillStore
from checkpoints.consumer import EventReader
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue
from checkpoints.service import ServiceRecord
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from checkpoints.versions import VersionStore
from core.errors import (
    ConfigurationError,
    HistoryLost,
    InvalidRequest,
    LeaseLost,
    RedisUnavailable,
    describe_failure,
    is_outage,
    redact,
)
from core.retry import Stopped, Wakeup, outlast, sleep_unless
from indexer.catalog import CatalogHandler
from indexer.chunking import Chunker
from indexer.embedding import Embedder, SentenceTransformerEmbedder
from indexer.handlers import Dispatcher, EventHandler
from indexer.lanes import LanedEmbedder
from indexer.provenance import recorded_fingerprint
from indexer.remote import RemoteEmbedder
from indexer.scheduler import IndexScheduler, TaskObserver
from indexer.store import VectorStore
from indexer.tokenizer import LocalTokenizer
from indexer.updater import IndexUpdater
from operations import backfills, consistency
from operations.context import Context, IndexView
from operations.control import serve_requests
from sidecar.capture_switch import CaptureSwitch
from sidecar.heap import HeapReturn, malloc_trim, settle_heap
from sidecar.preflight import preflight
from sidecar.redis_server import PrivateRedis
from sidecar.resync import IndexedDocuments, Resync
from sidecar.settings import Settings
from sidecar.status import pipeline_status

log = structlog.get_logger(__name__)

PRIVATE_REDIS_URL_FILE = "url"
BACKFILL_POLL_SECONDS = 1.0
"""How soon a backfill recorded by a command starts."""


def replica_name() -> str:
    """Stable across restarts of one pod/host, so a restarted indexer gets its own
    unacknowledged entries back at once."""
    return f"{socket.gethostname()}"


def build_embedder(
    settings: Settings, *, recorded: str | None = None
) -> SentenceTransformerEmbedder | RemoteEmbedder:
    """The embedding servers of CDC_EMBEDDING_URL when it is set, counting tokens with
    the tokenizer of CDC_EMBEDDING_MODEL; else that model, run in this process along
    the inference path of CDC_EMBEDDING_PRECISION (with auto, *recorded*, the
    fingerprint the collection was made with, is kept while it passes the gate)."""
    if settings.embedding_url:
        key = settings.embedding_api_key
        return RemoteEmbedder(
            settings.embedding_url,
            model=settings.embedding_server_model or settings.embedding_model,
            tokenizer=LocalTokenizer(settings.embedding_model),
            batch_size=settings.embedding_batch_size,
            concurrency=settings.embedding_concurrency,
            timeout=settings.embedding_timeout,
            api_key=key.get_secret_value() if key is not None else None,
        )
    return SentenceTransformerEmbedder(
        settings.embedding_model,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        precision=settings.embedding_precision,
        cache_dir=settings.embedding_cache_dir,
        recorded=recorded,
    )


async def recorded_embedder(settings: Settings) -> str | None:
    """The fingerprint the pipeline's collection records, when the local model's
    inference path is chosen automatically (and so must keep to it); else None.
    Raises VectorStoreUnavailable."""
    if settings.embedding_url or settings.embedding_precision != "auto":
        return None
    return await asyncio.to_thread(
        recorded_fingerprint, settings.milvus_uri, settings.milvus_collection
    )


def laned(settings: Settings, embedder: Embedder) -> LanedEmbedder:
    """*embedder* shared between the queue's lanes in slices. Servers get slices of one
    request each, as many at once as they take plus one waiting, so every server stays
    busy; the in-process model gets the default (one slice encoding, one waiting)."""
    if not settings.embedding_url:
        return LanedEmbedder(embedder)
    requests = settings.embedding_concurrency * len(settings.embedding_url)
    return LanedEmbedder(embedder, slice_size=settings.embedding_batch_size, ahead=requests + 1)


def build_store(settings: Settings, embedder: Embedder) -> VectorStore:
    """The pipeline's Milvus collection, for vectors of *embedder* (started: loaded)."""
    return VectorStore(
        settings.milvus_uri,
        settings.milvus_collection,
        dimension=embedder.dimension,
        fingerprint=embedder.fingerprint,
        metadata_fields=settings.metadata_fields,
        flush_rows=settings.milvus_flush_rows,
        flush_interval=settings.milvus_flush_interval,
    )


def build_mapper(settings: Settings) -> ChangeMapper:
    return ChangeMapper(
        IndexedText(settings.text_fields),
        MetadataFields(settings.metadata_fields),
        UserField(settings.user_field),
        settings.filter or None,
        TextLimit(settings.max_text_chars, settings.oversize_text),
        settings.priority_filter or None,
    )


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(
        settings.chunk_size,
        settings.chunk_overlap,
        count_tokens=embedder.count_tokens,
        max_tokens=embedder.max_tokens,
    )


class Sidecar:
    """Capture and indexer of one pipeline, wired to Redis, MongoDB and Milvus.

    Use as ``async with Sidecar(...) as sidecar: await sidecar.run(stop)``.
    *handlers* are extra event handlers registered beside the index updater;
    *observer* is told of each queue entry the indexer is done with (metrics).
    Entering waits out a Milvus that is not reachable yet; *stop* ends that wait
    with core.retry.Stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: Redis,
        embedder: Embedder,
        handlers: tuple[EventHandler, ...] = (),
        stop: asyncio.Event | None = None,
        observer: TaskObserver | None = None,
    ) -> None:
        self.settings = settings
        self._stop = stop or asyncio.Event()
        self.redis = redis
        self.embedder = embedder
        self.keys = Keys(settings.pipeline)
        self.store = build_store(settings, embedder)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo_uri, tz_aware=True
        )
        self.lease = Lease(
            redis, self.keys, owner=f"{replica_name()}-{os.getpid()}", ttl=settings.lease_ttl
        )
        self.queue = EventQueue(redis, self.keys)
        self.tokens = ResumeTokenStore(redis, self.keys)
        self.stats = Stats(redis, self.keys)
        self.mapper = build_mapper(settings)
        chunker = build_chunker(settings, embedder)
        self.versions = VersionStore(redis, self.keys, ttl_seconds=settings.index_version_ttl)
        self.updater = IndexUpdater(
            store=self.store,
            embedder=laned(settings, embedder),
            chunker=chunker,
            versions=self.versions,
            version_guard=settings.index_version_enabled,
            on_embedded=self._count_embedded,
            before_write=self.lease.check_fresh,
        )
        self.backfills = BackfillStore(redis, self.keys)
        catalog = CatalogHandler(
            self.store,
            self.versions,
            keep_dropped=settings.on_collection_drop == "keep",
            backfill=self.backfills.want,
            before_write=self.lease.check_fresh,
        )
        self.dispatcher = Dispatcher([self.updater, catalog, *handlers])
        self._uncounted = 0
        self._observer = observer
        self.holding = False
        """Whether this replica holds the pipeline's lease now."""
        self._capture_switch = CaptureSwitch()
        self._backfill_recorded = Wakeup()
        self._reading_paused: asyncio.Event | None = None
        self._stack = AsyncExitStack()
        self._heap_return = HeapReturn(malloc_trim())

    async def _count_embedded(self, texts: int) -> None:
        """A metric: an outage must not fail (and so re-embed) the batch for it. What
        could not be counted is added to the next count that goes through (a process
        killed meanwhile loses it)."""
        self._uncounted += texts
        try:
            await self.stats.incr({"embeddings_computed": self._uncounted})
        except Exception as error:
            if not is_outage(error):
                raise
            log.debug("embeddings_not_counted_yet", texts=self._uncounted, error=repr(error))
            return
        self._uncounted = 0

    async def __aenter__(self) -> Sidecar:
        await outlast(self.store.start, what="Milvus", stop=self._stop)
        self._stack.push_async_callback(self.store.stop)
        self._stack.push_async_callback(self.mongo.close)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lease and run until *stop* is set; then finish the batches in
        hand, save the position and return. Raises LeaseLost when another replica
        took over, HistoryLost when the change stream lost our position."""
        try:
            fence = await outlast(self.lease.acquire, what="the lease (Redis)", stop=stop)
        except Stopped:
            return
        log.info("lease_acquired", pipeline=self.keys.pipeline, fence=fence)
        self.holding = True
        try:
            record = ServiceRecord(self.redis, self.keys)
            await outlast(
                lambda: record.save(self.lease.owner, self.embedder.fingerprint),
                what="the service record (Redis)",
                stop=stop,
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.lease.hold(stop))
                tasks.create_task(self._capture_until(stop, fence))
                tasks.create_task(serve_requests(self._context(fence), stop))
                tasks.create_task(self._backfills(stop, fence))
                if self.settings.check_interval > 0:
                    tasks.create_task(self._scheduled_checks(stop, fence))
                if self.settings.index_auto_update:
                    scheduler = self._scheduler()
                    self._reading_paused = scheduler.reading_paused
                    tasks.create_task(scheduler.run(stop))
        except BaseExceptionGroup as group:
            # The first task to fail cancelled the others: report its error as
            # itself, so the edge can map a SidecarError to its exit code.
            log.error("service_failed", errors=[repr(e) for e in group.exceptions])
            raise group.exceptions[0] from group
        finally:
            await self._release()

    async def _release(self) -> None:
        """Give the lease up for a standby; when Redis is down, it expires on its own."""
        self.holding = False
        try:
            await self.lease.release()
        except Exception as error:
            if not is_outage(error):
                raise
            log.warning("lease_not_released", error=repr(error))

    def _context(self, fence: int) -> Context:
        scope = WatchScope(self.settings.database, self.settings.collections)
        return Context(
            self.redis,
            self.keys,
            fence,
            self.mongo,
            scope,
            self._capture_switch.paused,
            index=lambda: nullcontext(self.index_view()),
            reads_paused=self._reads_paused,
            live=True,
            bulk_room=self.settings.backfill_max_queued,
        )

    async def _reads_paused(self, seconds: float) -> bool:
        """Whether the indexer stopped reading within *seconds* (True when none runs)."""
        if self._reading_paused is None:
            return True
        try:
            await asyncio.wait_for(self._reading_paused.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def index_view(self) -> IndexView:
        """The service's own store, records and mapping, lent to operator commands."""
        return IndexView(self.store, self.versions, self.mapper, self.updater.fingerprint)

    async def _scheduled_checks(self, stop: asyncio.Event, fence: int) -> None:
        """A consistency check every CDC_CHECK_INTERVAL seconds (its report is what
        `status` shows as the last check; repairs are left to the operator). A stop
        cancels the check in hand."""
        context = self._context(fence)
        while not stop.is_set():
            await sleep_unless(stop, self.settings.check_interval)
            if stop.is_set():
                return
            check = asyncio.create_task(
                outlast(
                    partial(consistency.check, context, {}, "schedule"),
                    what="the scheduled consistency check",
                    stop=stop,
                )
            )
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([check, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not check.done():
                check.cancel()
                await asyncio.gather(check, return_exceptions=True)
                return
            try:
                check.result()
            except Stopped:
                return
            except LeaseLost:
                raise
            except Exception as error:  # noqa: BLE001 - a failed check must not stop indexing
                log.error("scheduled_check_failed", error=describe_failure(error)[1])

    async def _backfills(self, stop: asyncio.Event, fence: int) -> None:
        """Run the pipeline's backfill job whenever one is running (one recorded by
        `cdc-sidecar backfill`, or left half-done by a previous life): outages are
        waited out and each try resumes from the progress saved last."""
        store = self.backfills
        runner = Backfill(
            self.mongo,
            self.settings.database,
            self.mapper,
            self.queue,
            self.keys,
            fence,
            chunk=self.settings.backfill_chunk,
            max_bulk=self.settings.backfill_max_queued,
            indexed=IndexedDocuments(self.store, self.versions),
        )

        async def resume() -> None:
            job = await store.load()
            if job is None or job.state != "running":
                job = await self._start_wanted(fence)
            if job is not None and job.state == "running":
                await runner.run(job, stop)

        try:
            while not stop.is_set():
                await outlast(resume, what="the backfill (MongoDB or Redis)", stop=stop)
                await self._backfill_recorded.wait_unless(stop, BACKFILL_POLL_SECONDS)
        except Stopped:
            return

    async def _start_wanted(self, fence: int) -> BackfillJob | None:
        """Start the backfill of the collections renamed into the watched set, if any."""
        wanted = await self.backfills.wanted()
        if not wanted:
            return None
        args = {"collections": wanted}
        try:
            await backfills.start(self._context(fence), args, "sidecar (collections renamed in)")
        except InvalidRequest as refused:
            log.error("renamed_collection_not_backfilled", collections=wanted, error=str(refused))
        await self.redis.srem(self.keys.backfill_wanted, *wanted)
        return await self.backfills.load()

    async def _capture_until(self, stop: asyncio.Event, fence: int) -> None:
        """Capture until *stop*, stopping and starting again around each operator
        command that moves the position (CaptureSwitch)."""
        while not stop.is_set():
            async with self._capture_switch.running(stop) as run_stop:
                try:
                    await self._capture(run_stop, fence)
                except HistoryLost as lost:
                    if self.settings.on_history_lost == "halt":
                        raise
                    resync = Resync(self.mongo, self.redis, self.keys, self.settings)
                    try:
                        await outlast(
                            partial(resync.start, self.lease.owner, fence, str(lost)),
                            what="the resynchronisation (MongoDB or Redis)",
                            stop=stop,
                        )
                        self._backfill_recorded.set()
                    except Stopped:
                        return  # the next start meets the lost history again and resyncs

    async def _capture(self, stop: asyncio.Event, fence: int) -> None:
        settings = self.settings
        try:
            checkpoint = await outlast(self.tokens.load, what="the checkpoint (Redis)", stop=stop)
        except Stopped:
            return
        if checkpoint is None:
            rescan = Resync(self.mongo, self.redis, self.keys, settings)
            try:
                await outlast(
                    partial(rescan.first_start, self.lease.owner, fence),
                    what="the first start (MongoDB or Redis)",
                    stop=stop,
                )
                self._backfill_recorded.set()
            except Stopped:
                return
        await Capture(
            self.mongo,
            settings.database,
            settings.collections,
            self.mapper,
            self.queue,
            self.tokens,
            self.stats,
            fence,
            max_batch=settings.capture_batch_size,
            max_backlog=settings.index_queue_max_size,
            max_await=settings.capture_max_await,
            full_document=settings.full_document,
            pre_images=settings.pre_images,
        ).run(stop)

    async def _idle(self) -> None:
        """The queue is idle: the store flushes on its time policy, and the heap gives
        back what the last burst freed."""
        await self.updater.tick()
        await self._heap_return()

    def _scheduler(self) -> IndexScheduler:
        settings = self.settings
        reader = EventReader(
            self.redis,
            self.keys,
            consumer=replica_name(),
            claim_idle_ms=int(settings.index_queue_timeout * 1000),
            versions=self.versions,
            take_over=True,
        )
        return IndexScheduler(
            reader,
            self.dispatcher,
            batch_size=settings.index_batch_size,
            batch_interval=settings.index_batch_interval,
            max_workers=settings.index_max_workers,
            retry_times=settings.index_retry_times,
            retry_delay=settings.index_retry_delay,
            on_idle=self._idle,
            drain_seconds=settings.index_drain_seconds,
            paused=PauseFlag(self.redis, self.keys).is_set,
            observer=self._observer,
        )


@asynccontextmanager
async def redis_for(settings: Settings, *, start_private: bool) -> AsyncIterator[Redis]:
    """A client of CDC_REDIS_URL, or else of the private Redis kept under
    CDC_REDIS_DATA_DIR (started here when *start_private*, persisted with AOF).

    Raises ConfigurationError when there is neither and none may be started."""
    url = settings.redis_url
    private: PrivateRedis | None = None
    url_file = Path(settings.redis_data_dir) / PRIVATE_REDIS_URL_FILE
    if url is None and start_private:
        private = PrivateRedis(data_dir=Path(settings.redis_data_dir), appendonly=True)
        url = await asyncio.to_thread(private.start)
        url_file.write_text(url)
    elif url is None:
        if not url_file.is_file():
            raise ConfigurationError(
                "CDC_REDIS_URL is not set and no private Redis runs under "
                f"{settings.redis_data_dir}: set CDC_REDIS_URL or start `cdc-sidecar run`"
            )
        url = url_file.read_text().strip()
    client = Redis.from_url(url, socket_timeout=30)
    try:
        yield client
    finally:
        await client.aclose()
        if private is not None:
            url_file.unlink(missing_ok=True)
            private.stop()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """`cdc-sidecar run`: the service until *stop*, its HTTP server (probes, metrics,
    admin API) answering from the start. Credentials and the filter are checked
    before the model loads."""
    state = ServiceState(settings, Metrics(settings.pipeline), stop)
    async with http_server(state):
        try:
            await preflight(settings, stop)
        except Stopped:
            return
        try:
            recorded = await outlast(lambda: recorded_embedder(settings), what="Milvus", stop=stop)
        except Stopped:
            return
        embedder = build_embedder(settings, recorded=recorded)
        try:
            await outlast(embedder.start, what="the embedding server", stop=stop)
        except Stopped:
            return
        state.metrics.build = Build(version(), settings.embedding_model, embedder.fingerprint)
        try:
            async with redis_for(settings, start_private=True) as redis:
                state.redis = redis
                async with Sidecar(
                    settings, redis=redis, embedder=embedder, stop=stop, observer=state.metrics
                ) as sidecar:
                    state.pipeline = sidecar
                    settle_heap()
                    await sidecar.run(stop)
        except Stopped:
            log.info("stopped_during_an_outage")
        finally:
            await embedder.stop()


def http_server(state: ServiceState) -> AbstractAsyncContextManager[object]:
    """The HTTP server on CDC_HTTP_HOST:CDC_HTTP_PORT (none when the port is 0)."""
    settings = state.settings
    if settings.http_port == 0:
        return nullcontext()
    return HttpServer(create_app(state), settings.http_host, settings.http_port)


async def read_status(settings: Settings) -> dict[str, Any]:
    """`cdc-sidecar status`: the pipeline's state, read from Redis only."""
    async with redis_for(settings, start_private=False) as redis:
        try:
            return await pipeline_status(redis, Keys(settings.pipeline))
        except RedisError as error:
            where = redact(settings.redis_url) if settings.redis_url else "the private Redis"
            raise RedisUnavailable(f"cannot read {where}: {error} (check CDC_REDIS_URL)") from None
