"""Throughput of the durable queue against bare Redis commands measured in the same run.

    .venv/bin/python bench/bench_queue.py [--url redis://127.0.0.1:6379/0] [--seconds 2]

Producer: EventQueue.append of batches of 100 events with a checkpoint (one
fenced Lua script) against a bare pipeline of the same 100 XADDs; and the
empty-batch case (checkpoint only) against a bare MULTI/EXEC of one SET.
Consumer: EventReader.read(100) + commit (version records, counters,
last_applied, XACK + XDEL in one MULTI/EXEC) against bare XREADGROUP +
pipelined XACK + XDEL. Both sides of each pair serialise (or decode) the
events, so a ratio is the cost of the queue's guarantees alone. Works under
a throwaway pipeline name whose keys it deletes at the end."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from checkpoints.consumer import EventReader
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.tokens import Checkpoint
from checkpoints.versions import VersionRecord, VersionStore
from core.events import DocumentCreatedEvent, DocumentEvent, event_from_json

BATCH = 100
BACKLOG = 20_000


def events(start: int, count: int) -> list[DocumentEvent]:
    now = datetime.now(UTC)
    return [
        DocumentCreatedEvent(
            event_id=f"e{n}",
            document_id=f"doc-{n}",
            namespace="bench.docs",
            version=n,
            timestamp=now,
            content="lorem ipsum dolor sit amet " * 20,
            source="bench",
        )
        for n in range(start, start + count)
    ]


async def rate(seconds: float, step: Callable[[], Awaitable[object]]) -> float:
    """Calls of *step* per second over about *seconds*."""
    calls, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        await step()
        calls += 1
    return calls / elapsed


async def drain_rate(step: Callable[[], Awaitable[int]]) -> float:
    """Entries per second of *step* (returning how many it handled) until it handles none."""
    handled, began = 0, time.perf_counter()
    while n := await step():
        handled += n
    return handled / (time.perf_counter() - began)


async def bench_append(redis: aioredis.Redis, keys: Keys, fence: int, seconds: float) -> None:
    queue = EventQueue(redis, keys)
    batch = events(0, BATCH)
    checkpoint = Checkpoint({"_data": "82" + "0" * 60}, 1 << 32, None, datetime.now(UTC))

    async def bare_xadds() -> None:
        pipe = redis.pipeline(transaction=False)
        for event in batch:
            pipe.xadd(keys.events, {"event": event.to_json(), "key": event.key})
        await pipe.execute()

    async def bare_transaction() -> None:
        pipe = redis.pipeline(transaction=True)
        pipe.set(keys.checkpoint, checkpoint.to_json())
        await pipe.execute()

    base = await rate(seconds, bare_xadds)
    await redis.delete(keys.events)
    ours = await rate(seconds, lambda: queue.append(batch, checkpoint, fence=fence))
    await redis.delete(keys.events)
    report(f"append {BATCH} events", "bare XADD pipeline", base, "EventQueue.append", ours,
           unit="tx/s", per_call=BATCH)

    base = await rate(seconds, bare_transaction)
    ours = await rate(seconds, lambda: queue.append([], checkpoint, fence=fence))
    report("append empty batch", "bare MULTI/EXEC SET", base, "EventQueue.append", ours,
           unit="tx/s", per_call=0)


def report(
    case: str, base_name: str, base: float, our_name: str, ours: float, *, unit: str,
    per_call: int,
) -> None:
    events = f"{base * per_call:9.0f} ev/s" if per_call else ""
    print(f"{case:22} {base_name:22} {base:8.0f} {unit:10} {events}")
    events = f"{ours * per_call:9.0f} ev/s" if per_call else f"{'':14}"
    print(f"{'':22} {our_name:22} {ours:8.0f} {unit:10} {events}   ratio {ours / base:.2f}")


async def fill(redis: aioredis.Redis, keys: Keys, fence: int) -> None:
    queue = EventQueue(redis, keys)
    for start in range(0, BACKLOG, BATCH):
        await queue.append(events(start, BATCH), None, fence=fence)


async def bench_read_commit(redis: aioredis.Redis, keys: Keys, fence: int) -> None:
    now = datetime.now(UTC)
    await redis.xgroup_create(keys.events, "bare", id="0", mkstream=True)
    await fill(redis, keys, fence)

    async def bare() -> int:
        reply: Any = await redis.xreadgroup("bare", "c", {keys.events: ">"}, count=BATCH)
        ids = [entry_id for _, entries in reply for entry_id, _ in entries]
        for _, entries in reply:
            for _, fields in entries:
                event_from_json(fields[b"event"])
        if ids:
            pipe = redis.pipeline(transaction=False)
            pipe.xack(keys.events, "bare", *ids)
            pipe.xdel(keys.events, *ids)
            await pipe.execute()
        return len(ids)

    base = await drain_rate(bare)
    await redis.delete(keys.events)

    reader = EventReader(
        redis, keys, consumer="bench", versions=VersionStore(redis, keys, ttl_seconds=3600)
    )
    await reader.start()
    await fill(redis, keys, fence)

    async def ours() -> int:
        entries = await reader.read(BATCH, block_ms=0)
        versions = {
            e.event.key: VersionRecord(e.event.version, "h", "m", ("c0", "c1"), False, now)
            for e in entries
            if e.event is not None
        }
        if entries:
            await reader.commit(
                [e.entry_id for e in entries],
                versions=versions,
                counts={"documents_indexed": len(versions)},
                last_applied={"version": max(r.version for r in versions.values())},
            )
        return len(entries)

    mine = await drain_rate(ours)
    report(f"read+ack {BATCH} per batch", "bare XREADGROUP+XACK", base, "read+commit", mine,
           unit="entries/s", per_call=0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("CDC_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    options = parser.parse_args()
    redis = aioredis.Redis.from_url(options.url)
    keys = Keys(f"bench-{uuid.uuid4().hex[:12]}")
    try:
        fence = await Lease(redis, keys, owner="bench").acquire(wait=False)
        await bench_append(redis, keys, fence, options.seconds)
        await bench_read_commit(redis, keys, fence)
    finally:
        stale = [key async for key in redis.scan_iter(match=keys.prefix + "*", count=1000)]
        for start in range(0, len(stale), 1000):
            await redis.delete(*stale[start:start + 1000])
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
