from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from sidecar.errors import ConfigurationError, LeaseLost


async def test_each_acquisition_increments_the_fence(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    first = Lease(redis_client, keys, owner="a")
    fence = await first.acquire(wait=False)
    assert first.fence == fence
    await first.release()

    second = Lease(redis_client, keys, owner="b")
    assert await second.acquire(wait=False) == fence + 1
    assert await redis_client.get(keys.lease) == b"b"


async def test_a_held_lease_cannot_be_taken(redis_client: aioredis.Redis, keys: Keys) -> None:
    await Lease(redis_client, keys, owner="a").acquire(wait=False)

    with pytest.raises(LeaseLost):
        await Lease(redis_client, keys, owner="b").acquire(wait=False)
    assert await redis_client.get(keys.lease) == b"a"


async def test_an_expired_lease_is_stolen_and_the_old_holder_fenced_out(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old = Lease(redis_client, keys, owner="old", ttl=0.2)
    old_fence = await old.acquire(wait=False)

    new = Lease(redis_client, keys, owner="new", ttl=5)
    async with asyncio.timeout(5):
        new_fence = await new.acquire(wait=True)

    assert new_fence == old_fence + 1
    with pytest.raises(LeaseLost):
        await old.renew()
    with pytest.raises(LeaseLost):
        await EventQueue(redis_client, keys).append([], None, fence=old_fence)
    await old.release()
    assert await redis_client.get(keys.lease) == b"new"


async def test_renew_extends_the_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    lease = Lease(redis_client, keys, owner="a", ttl=30)
    await lease.acquire(wait=False)
    await redis_client.pexpire(keys.lease, 1000)

    await lease.renew()

    assert await redis_client.pttl(keys.lease) > 20_000


async def test_an_expired_lease_nobody_took_is_renewed(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, owner="a")
    fence = await lease.acquire(wait=False)
    await redis_client.delete(keys.lease)

    await lease.renew()

    assert await redis_client.get(keys.lease) == b"a"
    assert lease.fence == fence


async def test_release_frees_the_lease_once(redis_client: aioredis.Redis, keys: Keys) -> None:
    lease = Lease(redis_client, keys, owner="a")
    await lease.acquire(wait=False)

    await lease.release()
    await lease.release()

    assert await redis_client.exists(keys.lease) == 0
    with pytest.raises(LeaseLost):
        _ = lease.fence


async def test_hold_renews_until_stopped(redis_client: aioredis.Redis, keys: Keys) -> None:
    lease = Lease(redis_client, keys, owner="a", ttl=1.5)
    await lease.acquire(wait=False)
    stop = asyncio.Event()
    holding = asyncio.create_task(lease.hold(stop))

    # The lease's time to live goes back up three times: hold renews it.
    renewals = 0
    remaining = await redis_client.pttl(keys.lease)
    async with asyncio.timeout(30):
        while renewals < 3:
            await asyncio.sleep(0.02)
            now = await redis_client.pttl(keys.lease)
            renewals += now > remaining
            remaining = now
    assert await redis_client.get(keys.lease) == b"a"
    stop.set()
    async with asyncio.timeout(2):
        await holding


async def test_hold_raises_when_the_lease_is_taken(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, owner="a", ttl=0.3)
    await lease.acquire(wait=False)
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="b").acquire(wait=False)

    with pytest.raises(LeaseLost):
        async with asyncio.timeout(2):
            await lease.hold(asyncio.Event())


@pytest.mark.parametrize(("owner", "ttl"), [("", 1.0), ("a", 0.0)])
def test_rejects_a_nameless_owner_or_a_non_positive_ttl(
    redis_client: aioredis.Redis, keys: Keys, owner: str, ttl: float
) -> None:
    with pytest.raises(ConfigurationError):
        Lease(redis_client, keys, owner=owner, ttl=ttl)
