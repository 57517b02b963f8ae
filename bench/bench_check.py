"""The consistency check on a large collection, against the reads it cannot avoid.

Fills a mongosim child process with N small documents (100,000 by default), indexes
them through the real index updater into a Milvus Lite database in a temporary
directory and the shared Redis (a throwaway pipeline), with a deterministic hash
embedder: the check reads ids and hashes, never vectors, so the model would only
slow the set-up. Then, in the same run:

1. baseline: the reads any full check must make: every document of the collection
   in ``_id`` order with the pipeline's projection, every row's id and document from
   Milvus (paged), and every version record (SCAN + MGET);
2. ``check`` (operations.consistency) over the same data, as the service runs it.

It prints both times, their ratio, the check's documents per second, and how much
the process's resident memory grew during each (the check holds one page of each
source, so its growth must not scale with N).

    .venv/bin/python bench/bench_check.py [--documents 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_pipeline import start_mongosim  # noqa: E402

from cdc.fields import IndexedText, MetadataFields, TextLimit, UserField  # noqa: E402
from cdc.mapping import ChangeMapper, ChangeOrigin  # noqa: E402
from cdc.namespaces import WatchScope  # noqa: E402
from checkpoints.keys import Keys  # noqa: E402
from checkpoints.lease import Lease  # noqa: E402
from checkpoints.versions import VersionStore  # noqa: E402
from indexer.chunking import Chunker  # noqa: E402
from indexer.store import VectorStore  # noqa: E402
from indexer.updater import IndexUpdater  # noqa: E402
from operations.consistency import check  # noqa: E402
from operations.context import Context, IndexView  # noqa: E402
from tests.embedders import HashEmbedder  # noqa: E402

DATABASE, COLLECTION = "bench", "notes"
NAMESPACE = f"{DATABASE}.{COLLECTION}"
REDIS_URL = "redis://127.0.0.1:6379/0"
BATCH = 1000


def document(n: int) -> dict[str, Any]:
    return {"_id": n, "title": f"Note {n}", "body": f"A short note, number {n}.", "lang": "en"}


async def fill(
    mongo: AsyncMongoClient[dict[str, Any]],
    view: IndexView,
    updater: IndexUpdater,
    redis: aioredis.Redis,
    count: int,
) -> None:
    """Write *count* documents to MongoDB and index them (rows and version records)."""
    collection = mongo[DATABASE][COLLECTION]
    version = 1 << 32
    for start in range(0, count, BATCH):
        batch = [document(n) for n in range(start, min(start + BATCH, count))]
        await collection.insert_many(batch)
        events = [
            view.mapper.created(
                doc,
                ChangeOrigin(f"fill:{doc['_id']}", f"$num:{doc['_id']}", NAMESPACE, version,
                             datetime.now(UTC)),
            )
            for doc in batch
        ]
        outcome = await updater.handle_batch(events)
        async with redis.pipeline(transaction=True) as pipe:
            view.versions.stage(pipe, outcome.versions)
            await pipe.execute()
    await view.store.flush()


async def baseline(mongo: AsyncMongoClient[dict[str, Any]], view: IndexView) -> int:
    """The unavoidable reads of a full check; the number of documents read."""
    read = 0
    cursor = mongo[DATABASE][COLLECTION].find(
        {}, projection=view.mapper.projection(), sort=[("_id", 1)], batch_size=500
    )
    async for _ in cursor:
        read += 1
    async for _page in view.store.pages(["id", "doc_key", "namespace", "updated_at"]):
        pass
    batch: list[str] = []
    async for key in view.versions.all_keys():
        batch.append(key)
        if len(batch) == 500:
            await view.versions.get_many(batch)
            batch = []
    await view.versions.get_many(batch)
    return read


@asynccontextmanager
async def peak_rss() -> AsyncIterator[Callable[[], int]]:
    """Samples this process's RSS every 50 ms; yields a function giving the peak growth."""
    process = psutil.Process()
    start = process.memory_info().rss
    peak = [start]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sample())
    try:
        yield lambda: peak[0] - start
    finally:
        task.cancel()


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any, int]:
    async with peak_rss() as growth:
        started = time.perf_counter()
        result = await work()
        seconds = time.perf_counter() - started
        return seconds, result, growth()


async def main(args: argparse.Namespace) -> None:
    sim, uri = start_mongosim()
    keys = Keys(f"bench-check-{uuid.uuid4().hex[:8]}")
    redis = aioredis.Redis.from_url(REDIS_URL)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    embedder = HashEmbedder()
    with tempfile.TemporaryDirectory() as workdir:
        store = VectorStore(
            str(Path(workdir) / "milvus.db"), "documents", dimension=embedder.dimension,
            fingerprint=embedder.fingerprint, metadata_fields=["lang"],
        )
        await store.start()
        try:
            mapper = ChangeMapper(
                IndexedText(["title", "body"]), MetadataFields(["lang"]), UserField(None),
                None, TextLimit(100_000, "truncate"),
            )
            chunker = Chunker(
                500, 50, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens
            )
            versions = VersionStore(redis, keys, ttl_seconds=None)
            updater = IndexUpdater(
                store=store, embedder=embedder, chunker=chunker, versions=versions,
                version_guard=True,
            )
            view = IndexView(store, versions, mapper, updater.fingerprint)
            began = time.perf_counter()
            await fill(mongo, view, updater, redis, args.documents)
            print(f"filled and indexed {args.documents} documents in "
                  f"{time.perf_counter() - began:.0f} s")
            fence = await Lease(redis, keys, owner="bench").acquire()
            context = Context(redis, keys, fence, mongo, WatchScope(DATABASE, [COLLECTION]),
                              index=lambda: nullcontext(view))
            bare, read, bare_growth = await timed(lambda: baseline(mongo, view))
            full, report, check_growth = await timed(lambda: check(context, {}, "bench"))
        finally:
            await store.stop()
            await mongo.close()
            async for key in redis.scan_iter(match=f"{keys.prefix}*", count=1000):
                await redis.delete(key)
            await redis.aclose()
            sim.terminate()
            sim.wait()
    problems = sum(report["problems"].values())
    print(f"{read} documents, {report['checked']} checked, {problems} problems")
    print(f"baseline (the unavoidable reads): {bare:7.1f} s   RSS growth {bare_growth >> 20} MiB")
    print(f"check:                            {full:7.1f} s   RSS growth {check_growth >> 20} MiB")
    print(f"ratio check/baseline: {full / bare:.2f}; {report['checked'] / full:,.0f} documents/s")
    if problems or report["checked"] != args.documents:
        raise SystemExit("the check did not find the index in sync: the figures mean nothing")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
