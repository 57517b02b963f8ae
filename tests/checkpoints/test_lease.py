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

    with pytest.raises(LeaseLost, match=f"the lease of {keys.pipeline} is held by another owner"):
        await Lease(redis_client, keys, owner="b").acquire(wait=False)
    assert await redis_client.get(keys.lease) == b"a"


async def test_the_lease_lives_its_ttl_fifteen_seconds_unless_told_otherwise(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # The service takes the default: a dead holder is replaced within 15 s.
    await Lease(redis_client, keys, owner="a").acquire(wait=False)
    assert 14_000 < await redis_client.pttl(keys.lease) <= 15_000

    await redis_client.delete(keys.lease)
    lease = Lease(redis_client, keys, owner="b", ttl=30)
    await lease.acquire(wait=False)
    assert 29_000 < await redis_client.pttl(keys.lease) <= 30_000
    assert lease.renew_interval == 10.0


def test_a_ttl_below_a_millisecond_is_one_millisecond(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # Redis refuses PX 0; the smallest lease it takes is 1 ms.
    assert Lease(redis_client, keys, owner="a", ttl=0.0001).renew_interval == 1 / 3000


async def test_an_expired_lease_is_stolen_and_the_old_holder_fenced_out(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    old = Lease(redis_client, keys, owner="old", ttl=0.2)
    old_fence = await old.acquire(wait=False)

    new = Lease(redis_client, keys, owner="new", ttl=5)
    async with asyncio.timeout(5):
        new_fence = await new.acquire(wait=True)

    assert new_fence == old_fence + 1
    with pytest.raises(LeaseLost, match=f"old lost the lease of {keys.pipeline}"):
        await old.renew()
    with pytest.raises(LeaseLost, match="does not hold the lease"):
        _ = old.fence
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


@pytest.mark.parametrize(
    ("owner", "ttl", "message"),
    [
        ("", 1.0, "lease owner must be a non-empty name"),
        ("a", 0.0, "lease ttl must be positive, got 0.0"),
    ],
)
def test_rejects_a_nameless_owner_or_a_non_positive_ttl(
    redis_client: aioredis.Redis, keys: Keys, owner: str, ttl: float, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
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


async def test_a_standby_reports_the_holder_once_per_report_interval(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    holder = Lease(redis_client, keys, owner="pod-a", ttl=0.6)
    await holder.acquire(wait=False)
    stop = asyncio.Event()
    holding = asyncio.create_task(holder.hold(stop))
    with structlog.testing.capture_logs() as logs:
        # Tries again every ~0.2 s as the renewed lease nears its expiry.
        standby = asyncio.create_task(Lease(redis_client, keys, owner="pod-b").acquire())
        await renewals_seen(redis_client, keys, 4)
        stop.set()
        await holding
        standby.cancel()
        with pytest.raises(asyncio.CancelledError):
            await standby

    assert [e["holder"] for e in logs if e["event"] == "standing_by"] == ["pod-a"]


async def test_a_standby_that_finds_the_lease_just_released_says_nobody_holds_it(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # The holder released between the standby's failed try and its report.
    with structlog.testing.capture_logs() as logs:
        await Lease(redis_client, keys, owner="pod-b")._report_standby()

    assert [(e["holder"], e["since"]) for e in logs] == [("nobody (just released)", None)]


async def test_a_holder_without_a_recorded_start_is_reported_with_an_unknown_since(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, owner="pod-a")
    await lease.acquire(wait=False)
    await redis_client.delete(keys.lease_since)

    assert await lease.holder() == ("pod-a", None)


async def test_a_standby_with_nothing_to_wait_for_tries_again_in_10_ms(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    assert await Lease(redis_client, keys, owner="pod-b")._until_expiry() == 0.01


@pytest.mark.parametrize("remaining_ms", [200, 100_000])
async def test_a_standby_tries_again_10_ms_after_the_lease_would_expire(
    redis_client: aioredis.Redis, keys: Keys, remaining_ms: int
) -> None:
    await redis_client.set(keys.lease, "pod-a", px=remaining_ms)
    standby = Lease(redis_client, keys, owner="pod-b", ttl=600)

    before = await redis_client.pttl(keys.lease)
    wait = await standby._until_expiry()
    after = await redis_client.pttl(keys.lease)

    assert after / 1000 + 0.01 <= wait <= before / 1000 + 0.01


async def test_a_standby_waits_a_renew_interval_at_most(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    await redis_client.set(keys.lease, "pod-a", px=900_000)
    assert await Lease(redis_client, keys, owner="pod-b", ttl=600)._until_expiry() == 200.0


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
    await slow.renew()
    slow.check_fresh()


async def test_a_lease_is_fresh_until_a_renew_interval_before_its_ttl(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    lease = Lease(redis_client, keys, owner="pod-a", ttl=3000)
    await lease.acquire(wait=False)
    renewed_at = lease._renewed_at

    lease._renewed_at = renewed_at - 1999  # 1 s short of ttl minus a renew interval
    lease.check_fresh()
    lease._renewed_at = renewed_at - 2001
    with pytest.raises(LeaseStale, match=r"last renewed 200[01]\."):
        lease.check_fresh()


async def test_a_stale_lease_is_an_outage_to_wait_out() -> None:
    assert is_outage(LeaseStale("not renewed lately"))
