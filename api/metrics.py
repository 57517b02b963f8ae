"""The service's Prometheus metrics, served at GET /metrics.

Two sources. The indexer's own tasks (``index_tasks_total``, the latency
histogram) are counted in this process as they finish, so they start from 0 at
each start as Prometheus counters do. Everything else is the pipeline's state
as Redis holds it, read at each scrape: its counters (``events_captured_total``
and the like) live in Redis and so keep counting across restarts and
take-overs, never going back. Only the replica holding the pipeline's lease
reports the pipeline's series; every replica reports whether it holds the lease,
the outages it is waiting out and its build."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue, lag_seconds, position_time
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from core.errors import DEPENDENCIES
from core.events import DocumentEvent, from_change_stream
from core.retry import BOARD

PREFIX = "cdc_sidecar_"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
"""Seconds from a change's cluster time to Milvus accepting it: sub-second when
streaming, minutes when catching up after an outage."""


@dataclass(frozen=True)
class Build:
    """What `build_info` says of this process."""

    version: str
    model: str
    fingerprint: str


@dataclass
class PipelineReading:
    """The pipeline's state as Redis held it at one scrape."""

    counters: dict[str, int]
    checkpoint_time: float | None
    last_applied_time: float | None
    lag: float | None
    lanes: dict[str, int]
    pending: int
    dead_letters: int
    paused: bool
    backpressure: bool
    backfill: dict[str, float] = field(default_factory=dict)


async def read_pipeline(redis: Redis, keys: Keys, *, max_backlog: int) -> PipelineReading:
    """Read what the pipeline's series report (a dozen small Redis reads).

    *max_backlog* is CDC_INDEX_QUEUE_MAX_SIZE: capture holds back while the live
    lanes hold more than that."""
    queue, stats = EventQueue(redis, keys), Stats(redis, keys)
    checkpoint = await ResumeTokenStore(redis, keys).load()
    last = await stats.last_applied()
    lanes = await queue.lengths()
    job = await BackfillStore(redis, keys).load()
    backfill: dict[str, float] = {}
    if job is not None and job.state == "running":
        backfill = {
            "backfill_running": 1.0,
            "resync_running": float(job.reason == "history lost"),
            "backfill_documents_scanned": float(job.scanned),
            "backfill_documents_queued": float(job.queued),
            "backfill_documents_estimated": float(job.estimated),
        }
    return PipelineReading(
        counters=await stats.read(),
        checkpoint_time=position_time(checkpoint),
        last_applied_time=None if last is None else _unix(str(last["timestamp"])),
        lag=lag_seconds(time.time(), checkpoint, await queue.oldest_live()),
        lanes=lanes,
        pending=await queue.pending(),
        dead_letters=await queue.dead_letters(),
        paused=await PauseFlag(redis, keys).read() is not None,
        backpressure=lanes["priority"] + lanes["live"] > max_backlog,
        backfill=backfill,
    )


def _unix(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Metrics:
    """The registry GET /metrics serves, and the indexer's observer (TaskObserver).

    The caller sets :attr:`lease_held` and, before each scrape, :attr:`reading`
    (None when this replica does not hold the lease, or Redis did not answer)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.build: Build | None = None
        """Known once the model is loaded; build_info is left out until then."""
        self.lease_held = False
        self.reading: PipelineReading | None = None
        # A counter's _created series doubles the series for nothing a rule reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)
        self._tasks = Counter(
            PREFIX + "index_tasks",
            "Queue entries the indexer finished, by event type and status "
            "(success, rejected: dead-lettered as the document's own fault, "
            "failed: dead-lettered after its retries).",
            ["pipeline", "event_type", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            PREFIX + "index_latency_seconds",
            "Seconds from a change's MongoDB cluster time to Milvus accepting it "
            "(changes from the change stream; backfills are not timed).",
            ["pipeline", "event_type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PipelineCollector(self))
        for event_type in ("created", "updated", "deleted"):
            for status in ("success", "rejected", "failed"):
                # At 0 from the start, so a rate of failures is 0 rather than empty.
                self._tasks.labels(pipeline, event_type, status)

    def finished(self, event: DocumentEvent | None, status: str) -> None:
        """TaskObserver: one entry done with."""
        event_type = "malformed" if event is None else event.event_type
        self._tasks.labels(self.pipeline, event_type, status).inc()
        # Latency is a live change's: a backfill's documents were written long before.
        if event is not None and status == "success" and from_change_stream(event):
            seconds = max(0.0, time.time() - event.timestamp.timestamp())
            self._latency.labels(self.pipeline, event_type).observe(seconds)


class _PipelineCollector(Collector):
    """The series read from Redis at each scrape, and this replica's own state."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        pipeline = metrics.pipeline
        if metrics.build is not None:
            build = GaugeMetricFamily(
                PREFIX + "build_info",
                "This process's version and model fingerprint (the value is always 1).",
                labels=["pipeline", "version", "model", "fingerprint"],
            )
            build.add_metric([pipeline, *_build_labels(metrics.build)], 1.0)
            yield build
        yield _gauge(
            "lease_held",
            "1 when this replica holds the pipeline's lease (streams and indexes), 0 when "
            "it stands by or starts.",
            pipeline,
            float(metrics.lease_held),
        )
        outages = GaugeMetricFamily(
            PREFIX + "outage_active",
            "1 while this process waits out an outage of the dependency.",
            labels=["pipeline", "dependency"],
        )
        open_now = BOARD.in_progress()
        for dependency in sorted(set(DEPENDENCIES) | set(open_now)):
            outages.add_metric([pipeline, dependency], float(dependency in open_now))
        yield outages
        if metrics.reading is not None:
            yield from _pipeline_series(pipeline, metrics.reading)


def _build_labels(build: Build) -> list[str]:
    return [build.version, build.model, build.fingerprint]


def _gauge(name: str, documentation: str, pipeline: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, documentation, labels=["pipeline"])
    family.add_metric([pipeline], value)
    return family


_COUNTER_HELP = {
    "events_captured": "Change events queued from the change stream.",
    "events_backfilled": "Events queued by backfills, reindexing and repairs.",
    "events_filtered": "Changes the filter or the indexed fields left out.",
    "documents_indexed": "Documents whose rows were written to Milvus.",
    "chunks_embedded": "Chunks embedded and written.",
    "embeddings_computed": "Chunks the model encoded (including work a crash lost).",
    "embeddings_skipped": "Chunks whose stored vector was reused: their text did not change.",
    "deletes": "Documents whose rows were deleted.",
    "documents_rehomed": "Documents moved to a collection's new name by a rename.",
    "dead_lettered": "Entries moved to the dead-letter stream.",
    "history_lost": "Times the stream's position had left the oplog (a resync started).",
}


def _pipeline_series(pipeline: str, reading: PipelineReading) -> Iterator[Metric]:
    for name, value in reading.counters.items():
        counter = CounterMetricFamily(
            PREFIX + name, _COUNTER_HELP.get(name, name), labels=["pipeline"]
        )
        counter.add_metric([pipeline], float(value))
        yield counter
    lanes = GaugeMetricFamily(
        PREFIX + "index_queue_length",
        "Entries queued and not yet applied, by lane (priority, live, bulk).",
        labels=["pipeline", "lane"],
    )
    for lane, length in reading.lanes.items():
        lanes.add_metric([pipeline, lane], float(length))
    yield lanes
    gauges: dict[str, tuple[str, float | None]] = {
        "checkpoint_timestamp_seconds": (
            "Unix time of the cluster time of the saved stream position.",
            reading.checkpoint_time,
        ),
        "last_applied_timestamp_seconds": (
            "Unix time of the cluster time of the last change applied to Milvus.",
            reading.last_applied_time,
        ),
        "lag_seconds": (
            "Seconds since the oldest change not yet applied (about 1 when caught up).",
            reading.lag,
        ),
        "pending_entries": (
            "Entries delivered to the indexer and not yet acknowledged.",
            float(reading.pending),
        ),
        "dead_letters": ("Entries in the dead-letter stream now.", float(reading.dead_letters)),
        "paused": ("1 while an operator has paused indexing.", float(reading.paused)),
        "backpressure_active": (
            "1 while capture holds back because the live lanes exceed CDC_INDEX_QUEUE_MAX_SIZE.",
            float(reading.backpressure),
        ),
        "backfill_running": ("1 while a backfill (or a resync) runs.", 0.0),
        "resync_running": ("1 while a resync after lost history runs.", 0.0),
        "backfill_documents_scanned": ("Documents the running backfill has read.", None),
        "backfill_documents_queued": ("Documents the running backfill has queued.", None),
        "backfill_documents_estimated": ("Documents the running backfill expects.", None),
    }
    for name, (documentation, fallback) in gauges.items():
        current = reading.backfill.get(name, fallback)
        if current is not None:
            yield _gauge(name, documentation, pipeline, current)
