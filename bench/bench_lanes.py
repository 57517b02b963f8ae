"""Live changes during a backfill: the priority lanes, measured.

Runs ``cdc-sidecar run`` as a child process against a mongosim child process, the
shared Redis (a throwaway pipeline) and a Milvus Lite database in a temporary
directory, with the real model, and measures the write-to-searchable latency of
live inserts at 5 documents/s of about 500 characters (bench_pipeline's latency
probe) twice in the same run:

1. baseline: the sidecar streams and has nothing else to do;
2. during a backfill of N documents that are not indexed yet (inserted while the
   sidecar was stopped, the position then reset to now, so only the backfill
   brings them in): every one of them is embedded, so the model is saturated.

3. still during the backfill, a burst of B live documents written at once (the
   live lane backed up) while priority documents (``CDC_PRIORITY_FILTER``
   ``{"vip": true}``) arrive at 5 per second: the priority lane must not wait
   behind the burst.

It prints the P95s, their ratio, and how far the backfill advanced during the
second window (documents per second): the lanes must keep live latency low and
still let the backfill progress; then the priority documents' latency against
the burst's. The backfill must still have work left (queued in the bulk lane or
not yet scanned) when the windows end, or they did not measure what they claim
(raise N).

    .venv/bin/python bench/bench_lanes.py [--documents 3000] [--latency-seconds 30]
        [--burst 300] [--precision auto|fp32|bf16|...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench_pipeline import (
    COLLECTION,
    DATABASE,
    Model,
    Run,
    SidecarProcess,
    add_model_options,
    bench_run,
    bulk_documents,
    latency,
    percentile,
    wait_for,
)

from checkpoints.backfills import BackfillStore
from checkpoints.tokens import ResumeTokenStore

VIP = {"vip": True}
"""What makes a document a priority one here (CDC_PRIORITY_FILTER)."""

BURST_RATE = 1000.0
"""Documents per second of a burst: as fast as insert_one goes."""


async def streaming(run: Run) -> SidecarProcess:
    sidecar = run.start_sidecar()
    tokens = ResumeTokenStore(run.redis, run.keys)

    async def positioned() -> bool:
        return sidecar.logged_at("capture_started") is not None and await tokens.load() is not None

    await wait_for(positioned, "the sidecar to stream", sidecar)
    return sidecar


async def indexed_documents(run: Run) -> int:
    return int(await run.redis.hget(run.keys.stats, "documents_indexed") or 0)


async def main_async(args: argparse.Namespace) -> None:
    model = Model(args.precision, args.batch_size, args.cache_dir)
    async with bench_run(args, model, "lanes") as run:
        redis, keys, mongo, meter = run.redis, run.keys, run.mongo, run.meter
        sidecar = await streaming(run)
        milvus = sidecar.milvus()
        meter.others()
        seconds = args.latency_seconds
        _, base = await latency(redis, keys, mongo, milvus, model, seconds, "base-")
        base_others = meter.others()
        milvus.close()
        sidecar.stop()

        docs = bulk_documents(args.documents, "bf-")
        for start in range(0, len(docs), 500):
            await mongo[DATABASE][COLLECTION].insert_many(docs[start : start + 500])
        run.command("checkpoint", "reset", "--to-now")
        sidecar = await streaming(run)
        milvus = sidecar.milvus()
        run.command("backfill")
        jobs = BackfillStore(redis, keys)
        indexed_before, began = await indexed_documents(run), time.monotonic()
        meter.others()
        _, during = await latency(redis, keys, mongo, milvus, model, seconds, "during-")
        during_others = meter.others()
        window = time.monotonic() - began
        advanced = await indexed_documents(run) - indexed_before - len(during)
        meter.others()
        (_, burst), (_, vip) = await asyncio.gather(
            latency(
                redis,
                keys,
                mongo,
                milvus,
                model,
                args.burst / BURST_RATE,
                "burst-",
                rate=BURST_RATE,
            ),
            latency(redis, keys, mongo, milvus, model, seconds / 2, "vip-", fields=VIP),
        )
        burst_others = meter.others()
        job = await jobs.load()
        bulk_left = int(await redis.xlen(keys.bulk))
        milvus.close()
    still_running = bulk_left > 0 or (job is not None and job.state == "running")
    p95_base, p95_during = percentile(base, 0.95), percentile(during, 0.95)
    print(f"live inserts at 5/s, {args.latency_seconds:g} s each, write to searchable:")
    print(
        f"  baseline         P50 {percentile(base, 0.5):.3f} s  P95 {p95_base:.3f} s"
        f"  (others' CPU share {base_others:.0%})"
    )
    print(
        f"  during backfill  P50 {percentile(during, 0.5):.3f} s  P95 {p95_during:.3f} s"
        f"  (others' CPU share {during_others:.0%})"
    )
    print(f"  ratio during/baseline P95: {p95_during / p95_base:.2f}")
    print(
        f"backfill of {args.documents} documents advanced {advanced} documents in "
        f"{window:.1f} s ({advanced / window:.1f}/s) during the window; "
        f"{'work left at its end' if still_running else 'FINISHED before its end'}"
    )
    print(
        f"a burst of {len(burst)} live documents written at once, during the backfill, with "
        f"priority documents at 5/s (others' CPU share {burst_others:.0%}):"
    )
    print(
        f"  burst     P50 {percentile(burst, 0.5):.3f} s  P95 {percentile(burst, 0.95):.3f} s"
        f"  last searchable after {max(burst):.3f} s"
    )
    print(
        f"  priority  P50 {percentile(vip, 0.5):.3f} s  P95 {percentile(vip, 0.95):.3f} s"
        f"  ({len(vip)} documents)"
    )
    if not still_running:
        raise SystemExit("the backfill ended inside the windows: raise --documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=300, help="live documents written at once")
    add_model_options(parser)
    parser.add_argument("--env", action="append", default=[], help="CDC_NAME=value for the sidecar")
    args = parser.parse_args()
    args.env.append(f"CDC_PRIORITY_FILTER={json.dumps(VIP)}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
