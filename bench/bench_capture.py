"""How fast the sidecar catches up a backlog of changes, against the bare change stream.

Runs mongosim and the service itself (``.venv/bin/cdc-sidecar run``, as
bench_pipeline.py does) as child processes, with the shared Redis on
127.0.0.1:6379 under a throwaway pipeline name, and measures in one run:

1. **capture against the bare stream**: the service is started once over an
   empty collection (it saves a position) and stopped; N small inserts are
   written; then the same backlog is read from that position by a bare
   ``AsyncMongoClient.watch()`` in this process with the service's own
   pipeline stages and options, by the service with capture only
   (``CDC_INDEX_AUTO_UPDATE=false``, the queue limit above N), and by the bare
   watch again. Capture is timed from its ``capture_started`` log line to its
   ``events_captured`` counter reaching N (polled every 5 ms); the ratio is
   capture's events/s over the mean of the two bare reads, and the issue asks
   for at least 0.7;
2. **catch-up with indexing on**, in a database of its own under a pipeline of
   its own (first started once, then stopped): a backlog of mixed writes (by
   default 12,000, two minutes of 100 writes/s; ``--hour``: 360,000) over a
   working set of documents written meanwhile (``--documents``): inserts,
   edits of the indexed text, updates of a field the index does not read,
   deletes. The service is then started with every default (the real
   embedding model: the sidecar has no setting for a fake one, so the figure
   includes embedding every text that needs it) and timed until everything
   is applied, from the process's start and from ``capture_started``. It
   prints the events queued and filtered, the documents and chunks the
   indexer wrote, the embeddings it skipped, and the service's resident
   memory meanwhile (sampled every poll, and the kernel's high-water mark).

Each phase also prints the CPU seconds mongosim used and its share of the
phase's wall time, so a reader can tell whether mongosim was the bottleneck,
and the capture phase the CPU seconds of the service's busiest threads: its
main thread's CPU time against the phase's wall time tells whether capture
was working or waiting (on a shared machine, for a core).

    .venv/bin/python bench/bench_capture.py [--events 50000] [--catch-up 12000]
        [--hour] [--documents 500] [--env CDC_NAME=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis
from bench_mongosim import start_server
from bench_pipeline import SidecarProcess
from pymongo import AsyncMongoClient, DeleteOne, InsertOne, UpdateOne

from cdc.namespaces import WatchScope
from cdc.positions import StreamPosition
from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.queue import applied_through
from checkpoints.tokens import ResumeTokenStore, pack_timestamp
from sidecar.app import build_mapper
from sidecar.settings import Settings

Mongo = AsyncMongoClient[dict[str, Any]]
REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE, CATCH_UP_DATABASE, COLLECTION = "bench", "bench_catch_up", "articles"
TEXT_FIELDS = ("title", "content")
METADATA_FIELDS = ("lang",)
POLL_SECONDS = 0.005
TIMEOUT = 1800.0
WRITE_BATCH = 1000
HOUR_OF_WRITES = 360_000
TARGET_RATIO = 0.7
# The mix of the catch-up backlog, by share of writes: most writes to a live record
# touch fields the index does not read (a view counter); some edit the text.
MIX = (("insert", 0.02), ("edit", 0.30), ("touch", 0.67), ("delete", 0.01))
WORDS = [
    "change",
    "stream",
    "backlog",
    "index",
    "vector",
    "sidecar",
    "queue",
    "token",
    "batch",
    "version",
]


@dataclass
class Cpu:
    """CPU seconds a process used between start() and stop()."""

    process: psutil.Process
    used: float = 0.0

    def _now(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self.used = -self._now()

    def stop(self) -> None:
        self.used += self._now()


class ThreadCpu:
    """CPU seconds each thread of a process used since this was made."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._start = self._sample()

    def _sample(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self._process.threads()}

    def busiest(self, count: int = 3) -> list[float]:
        now = self._sample()
        spent = [cpu - self._start.get(tid, 0.0) for tid, cpu in now.items()]
        return sorted(spent, reverse=True)[:count]


@dataclass
class Read:
    name: str
    events: int
    seconds: float
    mongosim_cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<34}{self.events:>8,}{self.seconds:>9.2f}{self.rate:>11,.0f}"
            f"{self.mongosim_cpu:>10.2f} s ({self.mongosim_cpu / self.seconds:.0%})"
        )


def settings() -> Settings:
    """The benchmark's pipeline as the service reads it from the environment it is given."""
    return Settings(
        database=DATABASE,
        collections=[COLLECTION],
        text_fields=list(TEXT_FIELDS),
        metadata_fields=list(METADATA_FIELDS),
    )


def small_document(number: int) -> dict[str, Any]:
    return {
        "_id": f"doc-{number}",
        "title": f"document {number}",
        "content": " ".join(WORDS[(number + i) % len(WORDS)] for i in range(40)),
        "lang": "en",
        "views": 0,
    }


async def wait_for(
    check: Callable[[], Awaitable[bool]], what: str, sidecar: SidecarProcess
) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await check():
        sidecar.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_SECONDS)


class Bench:
    """The processes and clients of one run."""

    def __init__(
        self, args: argparse.Namespace, uri: str, mongosim: psutil.Process, database: str
    ) -> None:
        self.args = args
        self.uri = uri
        self.database = database
        self.cpu = Cpu(mongosim)
        self.keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
        self.redis = aioredis.Redis.from_url(REDIS_URL)
        self.mongo: Mongo = AsyncMongoClient(uri, tz_aware=True)
        self.collection = self.mongo[database][COLLECTION]
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-capture-"))
        self.capture_threads: list[float] = []

    async def close(self) -> None:
        await self.mongo.close()
        async for key in self.redis.scan_iter(match=f"{self.keys.prefix}*"):
            await self.redis.delete(key)
        await self.redis.aclose()

    def sidecar(self, **env: str) -> SidecarProcess:
        """``cdc-sidecar run`` on the benchmark's pipeline, every other setting its
        default unless *env* or ``--env`` sets it."""
        variables = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "CDC_MONGO_URI": self.uri,
            "CDC_REDIS_URL": REDIS_URL,
            "CDC_MILVUS_URI": str(self.workdir / "milvus.db"),
            "CDC_DATABASE": self.database,
            "CDC_COLLECTIONS": COLLECTION,
            "CDC_TEXT_FIELDS": ",".join(TEXT_FIELDS),
            "CDC_METADATA_FIELDS": ",".join(METADATA_FIELDS),
            "CDC_PIPELINE": self.keys.pipeline,
            "CDC_HTTP_PORT": "0",
            **env,
        }
        for assignment in self.args.env:
            name, _, value = assignment.partition("=")
            if not name.startswith("CDC_"):
                raise SystemExit(f"--env takes CDC_NAME=value, got {assignment!r}")
            variables[name] = value
        return SidecarProcess(variables, self.workdir)

    async def counter(self, name: str) -> int:
        return int(await self.redis.hget(self.keys.stats, name) or 0)

    async def started(self, sidecar: SidecarProcess) -> float:
        """Wall-clock time of the sidecar's capture_started, once logged."""

        async def logged() -> bool:
            return sidecar.logged_at("capture_started") is not None

        await wait_for(logged, "capture to start", sidecar)
        return sidecar.logged_at("capture_started") or 0.0

    async def position(self) -> StreamPosition:
        """Start the service over an empty collection until its first start (a backfill
        of nothing) is done and it saved a position; stop it."""
        sidecar = self.sidecar(CDC_INDEX_AUTO_UPDATE="false")
        tokens = ResumeTokenStore(self.redis, self.keys)
        backfills = BackfillStore(self.redis, self.keys)

        async def saved() -> bool:
            checkpoint = await tokens.load()
            job = await backfills.load()
            finished = job is not None and job.state != "running"
            return finished and checkpoint is not None and checkpoint.token is not None

        try:
            await wait_for(saved, "a first position", sidecar)
        finally:
            sidecar.stop()
        return StreamPosition.from_checkpoint(await tokens.load())

    async def bare(self, name: str, position: StreamPosition, events: int) -> Read:
        """The backlog read by a bare watch() with the service's stages and options."""
        config = settings()
        stages = WatchScope(self.database, [COLLECTION]).pipeline(
            build_mapper(config).projection(), config.pre_images
        )
        received = 0
        self.cpu.start()
        began = time.perf_counter()
        async with await self.collection.watch(
            stages,
            full_document=config.full_document,
            batch_size=config.capture_batch_size,
            **position.watch_options(),
        ) as stream:
            async for _ in stream:
                received += 1
                if received == events:
                    break
        seconds = time.perf_counter() - began
        self.cpu.stop()
        return Read(name, events, seconds, self.cpu.used)

    async def capture(self, events: int) -> Read:
        """The backlog read by the service with capture only."""
        before = await self.counter("events_captured")
        sidecar = self.sidecar(
            CDC_INDEX_AUTO_UPDATE="false", CDC_INDEX_QUEUE_MAX_SIZE=str(events + 10_000)
        )
        try:
            began = await self.started(sidecar)
            self.cpu.start()
            threads = ThreadCpu(sidecar.ps)

            async def queued() -> bool:
                return await self.counter("events_captured") - before >= events

            await wait_for(queued, f"{events} events queued", sidecar)
            ended = time.time()
            self.cpu.stop()
            self.capture_threads = threads.busiest()
        finally:
            sidecar.stop()
        await self.redis.delete(self.keys.events)
        return Read("the service's capture (capture only)", events, ended - began, self.cpu.used)

    async def backlog(self, events: int) -> None:
        for start in range(0, events, WRITE_BATCH):
            count = min(WRITE_BATCH, events - start)
            await self.collection.insert_many(
                [small_document(i) for i in range(start, start + count)]
            )


async def mixed_writes(collection: Any, total: int, documents: int, seed: int = 11) -> int:
    """Write *total* mixed changes over a working set of about *documents* documents,
    in unordered bulk writes of distinct documents; return the packed cluster time of
    the last one."""
    rng = random.Random(seed)
    first = 10_000_000
    live = list(range(first, first + documents))
    await collection.insert_many([small_document(n) for n in live])
    following = first + documents
    kinds = [kind for kind, _ in MIX]
    weights = [share for _, share in MIX]
    written = 0
    while written < total:
        count = min(WRITE_BATCH, total - written)
        chosen = rng.choices(kinds, weights, k=count)
        targets = rng.sample(live, min(len(live), count))
        ops: list[Any] = []
        gone: set[int] = set()
        for kind, number in zip(chosen, targets, strict=False):
            if kind == "insert":
                ops.append(InsertOne(small_document(following)))
                live.append(following)
                following += 1
            elif kind == "edit":
                words = " ".join(rng.choice(WORDS) for _ in range(40))
                ops.append(UpdateOne({"_id": f"doc-{number}"}, {"$set": {"content": words}}))
            elif kind == "touch":
                ops.append(UpdateOne({"_id": f"doc-{number}"}, {"$inc": {"views": 1}}))
            else:
                ops.append(DeleteOne({"_id": f"doc-{number}"}))
                gone.add(number)
        live = [n for n in live if n not in gone]
        await collection.bulk_write(ops, ordered=False)
        written += len(ops)
    async with collection.database.client.start_session() as session:
        await collection.find_one({}, session=session)
        if session.operation_time is None:
            raise SystemExit("mongosim reported no operation time")
        return pack_timestamp(session.operation_time)


async def catch_up(bench: Bench, total: int) -> list[str]:
    """The mixed backlog caught up with indexing on: the lines of its report."""
    last = await mixed_writes(bench.collection, total, bench.args.documents)
    captured = await bench.counter("events_captured")
    filtered = await bench.counter("events_filtered")
    spawned = time.time()
    sidecar = bench.sidecar()
    rss: list[int] = []
    try:
        began = await bench.started(sidecar)
        bench.cpu.start()

        async def applied() -> bool:
            rss.append(sidecar.ps.memory_info().rss)
            return await applied_through(bench.redis, bench.keys, last)

        await wait_for(applied, "the backlog applied", sidecar)
        ended = time.time()
        bench.cpu.stop()
        peak = sidecar.peak_rss()
    finally:
        sidecar.stop()
    counters = {name: await bench.counter(name) for name in COUNTED}
    seconds = ended - began
    mib = 2**20
    return [
        f"catch-up of {total:,} mixed writes over {bench.args.documents:,} documents "
        f"({', '.join(f'{share:.0%} {kind}' for kind, share in MIX)}):",
        f"  {ended - spawned:.1f} s from the service's start, {seconds:.1f} s from "
        f"capture_started ({total / seconds:,.0f} writes/s); mongosim CPU "
        f"{bench.cpu.used:.1f} s ({bench.cpu.used / seconds:.0%})",
        f"  events queued {counters['events_captured'] - captured:,}, filtered at capture "
        f"{counters['events_filtered'] - filtered:,}; documents written "
        f"{counters['documents_indexed']:,}, chunks embedded {counters['chunks_embedded']:,}, "
        f"embeddings skipped (text unchanged) {counters['embeddings_skipped']:,}, "
        f"deletes {counters['deletes']:,}",
        f"  service RSS: {min(rss) / mib:.0f} MiB when capture started, "
        f"{max(rss) / mib:.0f} MiB at most while catching up, peak {peak / mib:.0f} MiB",
    ]


COUNTED = (
    "events_captured",
    "events_filtered",
    "documents_indexed",
    "chunks_embedded",
    "embeddings_skipped",
    "deletes",
)


async def run(args: argparse.Namespace) -> int:
    catch_up_events = HOUR_OF_WRITES if args.hour else args.catch_up
    process, uri = start_server(args.events + catch_up_events * 2 + args.documents + 10_000)
    mongosim = psutil.Process(process.pid)
    bench = Bench(args, uri, mongosim, DATABASE)
    # Its own database: mongosim finds a document by scanning its collection, so the
    # catch-up's updates must not scan the capture backlog's documents.
    later = Bench(args, uri, mongosim, CATCH_UP_DATABASE)
    try:
        position = await bench.position()
        await bench.backlog(args.events)
        reads = [await bench.bare("bare watch(), before", position, args.events)]
        reads.append(await bench.capture(args.events))
        reads.append(await bench.bare("bare watch(), after", position, args.events))
        catch_up_lines = []
        if catch_up_events:
            await later.position()
            catch_up_lines = await catch_up(later, catch_up_events)
    finally:
        await bench.close()
        await later.close()
        process.terminate()
        process.wait(timeout=30)
    bare_rate = (reads[0].rate + reads[2].rate) / 2
    ratio = reads[1].rate / bare_rate
    print(f"\nbacklog of {args.events:,} small inserts, {psutil.cpu_count()} CPUs")
    print(f"{'reader':<34}{'events':>8}{'seconds':>9}{'events/s':>11}{'mongosim CPU':>16}")
    for read in reads:
        print(read.line())
    print(f"capture : bare watch() = {ratio:.2f} (target {TARGET_RATIO})")
    print(
        "CPU seconds of the service's busiest threads while capturing: "
        + ", ".join(f"{cpu:.2f}" for cpu in bench.capture_threads)
    )
    for line in catch_up_lines:
        print(line)
    print(f"\ncommand: .venv/bin/python bench/bench_capture.py {shlex.join(sys.argv[1:])}")
    return 0 if ratio >= TARGET_RATIO else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="inserts of the backlog")
    parser.add_argument(
        "--catch-up", type=int, default=12_000, help="mixed writes of the catch-up (0: skip it)"
    )
    parser.add_argument("--hour", action="store_true", help=f"{HOUR_OF_WRITES:,} mixed writes")
    parser.add_argument("--documents", type=int, default=500, help="the catch-up's working set")
    parser.add_argument("--env", action="append", default=[], help="CDC_NAME=value for the sidecar")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
