"""How fast mongosim feeds a change stream, so it is never the sidecar's bottleneck.

Starts ``python -m mongosim`` as a subprocess (as the demo does), or with
``--in-process`` a ThreadedMongoSim sharing this process (and its GIL) with the
client, as the sidecar's own tests do, and measures, in one run on this machine:

1. baseline: documents/s that insert_many batches reach with no watcher;
2. events/s one change-stream watcher receives while the same batches are
   written (time from the first insert to the last event received);
3. their ratio, which stays meaningful on a noisy, shared machine where
   absolute figures move from run to run;
4. 20 concurrent clients doing inserts and reads: operations/s and errors.

Usage: .venv/bin/python bench/bench_mongosim.py [--in-process] [--events 20000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from pymongo import AsyncMongoClient

from mongosim import ThreadedMongoSim

Client = AsyncMongoClient[dict[str, Any]]
TARGET_EVENTS_PER_SECOND = 5_000


def start_server(oplog_size: int) -> tuple[subprocess.Popen[str], str]:
    """A mongosim subprocess and its URI."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mongosim", "--port", "0", "--oplog-size", str(oplog_size)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    uri = process.stdout.readline().strip()
    if not uri.startswith("mongodb://"):
        process.kill()
        raise SystemExit(f"mongosim did not start: {uri!r}")
    return process, uri


def documents(start: int, count: int) -> list[dict[str, Any]]:
    """Small documents shaped like the sidecar's source records."""
    return [
        {"_id": i, "title": f"document {i}", "body": "lorem ipsum " * 8, "n": i}
        for i in range(start, start + count)
    ]


async def insert_rate(client: Client, total: int, batch: int) -> float:
    """Documents/s of insert_many batches with nobody watching."""
    coll = client.bench.baseline
    started = time.perf_counter()
    for start in range(0, total, batch):
        await coll.insert_many(documents(start, batch))
    return total / (time.perf_counter() - started)


async def watched_event_rate(client: Client, total: int, batch: int) -> float:
    """Events/s one watcher receives while insert_many batches are written."""
    coll = client.bench.watched
    received = 0
    async with await coll.watch() as stream:

        async def write() -> None:
            for start in range(0, total, batch):
                await coll.insert_many(documents(start, batch))

        started = time.perf_counter()
        writer = asyncio.create_task(write())
        while received < total:
            change = await stream.try_next()
            if change is not None:
                received += 1
        elapsed = time.perf_counter() - started
        await writer
    return total / elapsed


async def concurrent_clients(uri: str, clients: int, operations: int) -> tuple[float, int]:
    """(operations/s, errors) of *clients* clients each doing *operations* insert+find pairs."""
    drivers: list[Client] = [AsyncMongoClient(uri) for _ in range(clients)]
    errors = 0

    async def work(number: int, driver: Client) -> None:
        nonlocal errors
        coll = driver.bench.concurrent
        for i in range(operations):
            try:
                await coll.insert_one({"client": number, "i": i})
                await coll.find_one({"client": number, "i": i})
            except Exception:  # noqa: BLE001 - the benchmark counts every kind of failure
                errors += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(work(n, d) for n, d in enumerate(drivers)))
    finally:
        await asyncio.gather(*(d.close() for d in drivers))
    return clients * operations * 2 / (time.perf_counter() - started), errors


async def run(args: argparse.Namespace) -> int:
    oplog_size = args.events * 3
    if args.in_process:
        with ThreadedMongoSim(port=0, oplog_size=oplog_size) as sim:
            return await measure(args, sim.uri)
    process, uri = start_server(oplog_size)
    try:
        return await measure(args, uri)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def measure(args: argparse.Namespace, uri: str) -> int:
    """Run every measurement against the server at *uri* and print the figures."""
    client: Client = AsyncMongoClient(uri)
    try:
        await client.admin.command("ping")
        baseline = await insert_rate(client, args.events, args.batch)
        events = await watched_event_rate(client, args.events, args.batch)
    finally:
        await client.close()
    ops, errors = await concurrent_clients(uri, 20, args.operations)
    where = "in-process (ThreadedMongoSim)" if args.in_process else "subprocess"
    print(f"mongosim {where}")
    print(f"baseline insert_many, no watcher:  {baseline:10,.0f} documents/s")
    print(f"one watcher, insert_many batches:   {events:10,.0f} events/s")
    print(f"ratio events/s : baseline inserts:  {events / baseline:10.2f}")
    print(f"20 concurrent clients:              {ops:10,.0f} operations/s, {errors} errors")
    ok = events >= TARGET_EVENTS_PER_SECOND and errors == 0
    print(
        f"target >= {TARGET_EVENTS_PER_SECOND:,} events/s and 0 errors: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--in-process", action="store_true", help="host mongosim on a thread of this process"
    )
    parser.add_argument("--events", type=int, default=20_000, help="documents written per phase")
    parser.add_argument("--batch", type=int, default=1_000, help="documents per insert_many")
    parser.add_argument("--operations", type=int, default=50, help="insert+find pairs per client")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
