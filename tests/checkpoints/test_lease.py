from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
import structlog.testing

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from core.errors import ConfigurationError, LeaseLost, LeaseStale, is_outage


async def renewals_seen(redis: aioredis.Redis, keys: Keys, count: int) -> None:
    """Return once the lease's time to live has gone back up *count* times."""
    renewals = 0
    remaining = await redis.pttl(keys.lease)
    async with asyncio.timeout(30):
        while renewals < count:
            await asyncio.sleep(0.02)
            now = await redis.pttl(keys.lease)
            renewals += now > remaining
            remaining = now


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

    await renewals_seen(redis_client, keys, 3)  # hold renews it
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


async def test_a_standby_says_who_holds_the_lease_and_takes_over_when_it_expires(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    holder = Lease(redis_client, keys, owner="pod-a", ttl=1.0)
    await holder.acquire(wait=False)
    held = await holder.holder()
    assert held is not None and held[0] == "pod-a"
    since = datetime.fromisoformat(held[1] or "")
    assert abs((datetime.now(UTC) - since).total_seconds()) < 60

    standby = Lease(redis_client, keys, owner="pod-b", ttl=1.0)
    with structlog.testing.capture_logs() as logs:
        # pod-a never renews again: it died.
        fence = await asyncio.wait_for(standby.acquire(report_every=0.2), timeout=30)

    assert fence == holder.fence + 1
    standing = [e for e in logs if e["event"] == "standing_by"]
    assert standing and standing[0]["holder"] == "pod-a" and standing[0]["since"] == held[1]
    assert any(e["event"] == "lease_taken_over" and e["owner"] == "pod-b" for e in logs)
    assert await redis_client.get(keys.lease) == b"pod-b"
    assert (await standby.holder() or ("", None))[0] == "pod-b"


async def test_a_standby_does_not_take_a_lease_that_is_renewed(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    holder = Lease(redis_client, keys, owner="pod-a", ttl=1.5)
    await holder.acquire(wait=False)
    stop = asyncio.Event()
    holding = asyncio.create_task(holder.hold(stop))
    standby = asyncio.create_task(Lease(redis_client, keys, owner="pod-b").acquire())

    await renewals_seen(redis_client, keys, 3)  # several ttls: the standby keeps waiting
    assert not standby.done()
    assert await redis_client.get(keys.lease) == b"pod-a"

    stop.set()
    await holding
    await holder.release()
    await asyncio.wait_for(standby, timeout=30)
    assert await redis_client.get(keys.lease) == b"pod-b"


async def test_nobody_holds_a_released_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    lease = Lease(redis_client, keys, owner="pod-a")
    assert await lease.holder() is None
    await lease.acquire(wait=False)
    await lease.release()
    assert await lease.holder() is None


async def test_a_holder_writes_only_while_its_lease_was_renewed_lately(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, owner="pod-a", ttl=0.3)
    with pytest.raises(LeaseLost):
        lease.check_fresh()
    await lease.acquire(wait=False)
    # Past ttl minus a renew interval without a renewal (Redis down): stale.
    await asyncio.sleep(0.25)
    with pytest.raises(LeaseStale, match="not writing until it is renewed"):
        lease.check_fresh()
    await lease.renew()
    slow = Lease(redis_client, keys, owner="pod-a", ttl=30.0)
    await slow.acquire(wait=False)
    slow.check_fresh()  # renewed just now, with 20 s of margin


async def test_a_stale_lease_is_an_outage_to_wait_out() -> None:
    assert is_outage(LeaseStale("not renewed lately"))
