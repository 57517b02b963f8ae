"""How long a standby takes to replace a lease holder that died, against the lease's ttl.

    .venv/bin/python bench/bench_takeover.py [--url redis://127.0.0.1:6379/0] [--ttl 3] [--rounds 8]

Each round a holder takes the lease and renews it as the service does, then dies
(stops renewing without releasing: a SIGKILL) at a random moment between two
renewals, while a standby waits in Lease.acquire. Printed: the time from the
holder's death to the standby's acquisition, per round and at most, and the
largest as a share of the ttl. The bound is the ttl: the lease expires at most
one ttl after the holder's last renewal, and the standby tries again as it runs
out. Works under throwaway pipeline names whose keys it deletes at the end."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid

import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease


async def one_round(redis: aioredis.Redis, ttl: float) -> float:
    keys = Keys(f"bench-takeover-{uuid.uuid4().hex[:8]}")
    try:
        holder = Lease(redis, keys, owner="holder", ttl=ttl)
        await holder.acquire(wait=False)
        stop = asyncio.Event()
        holding = asyncio.create_task(holder.hold(stop))
        standby = asyncio.create_task(Lease(redis, keys, owner="standby", ttl=ttl).acquire())
        await asyncio.sleep(ttl + random.uniform(0, holder.renew_interval))
        stop.set()  # dies: no more renewals, no release
        await holding
        died_at = time.monotonic()
        await standby
        return time.monotonic() - died_at
    finally:
        await redis.delete(keys.lease, keys.fence, keys.lease_since)


async def main(args: argparse.Namespace) -> None:
    redis = aioredis.Redis.from_url(args.url)
    try:
        waits = [await one_round(redis, args.ttl) for _ in range(args.rounds)]
    finally:
        await redis.aclose()
    print(f"lease ttl {args.ttl:g} s, renewed every {args.ttl / 3:g} s, {args.rounds} rounds")
    print("take-over after the holder died (s): " + ", ".join(f"{w:.2f}" for w in waits))
    print(f"largest {max(waits):.2f} s = {max(waits) / args.ttl:.2f} of the ttl (bound: 1.00)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
