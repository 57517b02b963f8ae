"""The writer lease: one process at a time captures, and its fence proves it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog
from redis.asyncio import Redis

from checkpoints.keys import Keys
from checkpoints.lua import LuaScript
from checkpoints.stats import as_text
from core.errors import ConfigurationError, LeaseLost, LeaseStale
from core.retry import Stopped, outlast, sleep_unless

# KEYS: lease, fence, since. ARGV: owner, ttl in ms, now (ISO 8601). Returns the new
# fence, or 0 when held by another. The owner's own unexpired lease counts as free: a
# restarted process with a stable owner name takes over at once, and the INCR fences
# out its previous life. "since" records when the holder took the lease, for standbys.
_ACQUIRE = LuaScript(
    """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return redis.call('INCR', KEYS[2])
"""
)

# KEYS: lease, fence. ARGV: owner, ttl in ms, our fence. An expired lease is
# renewed too if nobody acquired it since (the fence is still ours).
_RENEW = LuaScript(
    """
local holder = redis.call('GET', KEYS[1])
if redis.call('GET', KEYS[2]) ~= ARGV[3] or (holder and holder ~= ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# KEYS: lease, fence. ARGV: owner, our fence.
_RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)


log = structlog.get_logger(__name__)


class Lease:
    """A Redis lease naming the one writer of a pipeline.

    Each acquisition increments the pipeline's fence and hands it to the new
    holder; every fenced write (EventQueue.append, ResumeTokenStore resets)
    checks it inside the same atomic operation, so a writer that lost the
    lease cannot move anything even before it notices. The holder must renew
    more often than *ttl* (``renew_interval`` is a third of it) and stop
    writing as soon as renew raises LeaseLost."""

    def __init__(self, redis: Redis, keys: Keys, *, owner: str, ttl: float = 15.0) -> None:
        if not owner:
            raise ConfigurationError("lease owner must be a non-empty name")
        if ttl <= 0:
            raise ConfigurationError(f"lease ttl must be positive, got {ttl}")
        self._redis = redis
        self._keys = keys
        self._owner = owner
        self._ttl_ms = max(1, round(ttl * 1000))
        self._fence: int | None = None
        self._renewed_at = float("-inf")

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals that leave two retries before the lease expires."""
        return self._ttl_ms / 3000

    @property
    def fence(self) -> int:
        """The fencing token of the current acquisition.

        Raises LeaseLost when the lease was never acquired or has been released."""
        if self._fence is None:
            raise LeaseLost(f"{self._owner} does not hold the lease of {self._keys.pipeline}")
        return self._fence

    async def acquire(self, *, wait: bool = True, report_every: float = 60.0) -> int:
        """Take the lease and return the new fence.

        With *wait*, stands by until the current holder's lease expires or is
        released (cancel the call to give up), trying again as the lease's time
        runs out, so a dead holder is replaced at most ttl after its last renewal;
        logs who holds it on the first try and every *report_every* seconds.
        Without *wait*, raises LeaseLost at once when another owner holds it."""
        keys = [self._keys.lease, self._keys.fence, self._keys.lease_since]
        reported_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            now = datetime.now(UTC).isoformat()
            fence = int(await _ACQUIRE(self._redis, keys, [self._owner, self._ttl_ms, now]))
            if fence:
                self._fence = fence
                self._renewed_at = time.monotonic()
                if reported_at is not None:
                    log.info("lease_taken_over", pipeline=self._keys.pipeline, owner=self._owner)
                return fence
            if not wait:
                raise LeaseLost(f"the lease of {self._keys.pipeline} is held by another owner")
            if reported_at is None or loop.time() - reported_at >= report_every:
                reported_at = loop.time()
                await self._report_standby()
            await asyncio.sleep(await self._until_expiry())

    async def holder(self) -> tuple[str, str | None] | None:
        """Who holds the lease and since when (ISO 8601, None if unknown), or None."""
        owner, since = await self._redis.mget([self._keys.lease, self._keys.lease_since])
        if owner is None:
            return None
        return as_text(owner), None if since is None else as_text(since)

    async def _report_standby(self) -> None:
        held = await self.holder()
        owner, since = held if held is not None else ("nobody (just released)", None)
        log.info(
            "standing_by",
            pipeline=self._keys.pipeline,
            holder=owner,
            since=since,
            note=f"taking over at most {self._ttl_ms / 1000:g} s after the holder stops renewing",
        )

    async def _until_expiry(self) -> float:
        """Seconds to wait before trying again: until the lease would expire (a
        renewal pushes it back), at least 10 ms and at most renew_interval."""
        remaining_ms = int(await self._redis.pttl(self._keys.lease))
        return min(self.renew_interval, max(0.01, remaining_ms / 1000 + 0.01))

    async def renew(self) -> None:
        """Extend the lease by its ttl.

        Raises LeaseLost when another owner acquired it since (the fence moved
        on); the caller must stop writing."""
        fence = self.fence
        done = await _RENEW(
            self._redis, [self._keys.lease, self._keys.fence], [self._owner, self._ttl_ms, fence]
        )
        if not done:
            self._fence = None
            raise LeaseLost(f"{self._owner} lost the lease of {self._keys.pipeline}")
        self._renewed_at = time.monotonic()

    def check_fresh(self) -> None:
        """Return when the lease will still be ours for a renew interval at least
        (its last renewal is younger than ttl minus that interval): time for a
        write to land. Raises LeaseStale otherwise (an outage: wait for a renewal),
        LeaseLost when the lease is not held."""
        _ = self.fence
        age = time.monotonic() - self._renewed_at
        if age > self._ttl_ms / 1000 - self.renew_interval:
            raise LeaseStale(
                f"the lease of {self._keys.pipeline} was last renewed {age:.1f} s ago "
                "(Redis unreachable?): not writing until it is renewed"
            )

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew every ``renew_interval`` until *stop* is set, waiting out Redis
        outages (an expired lease nobody took meanwhile is renewed when Redis is
        back). Raises LeaseLost as renew does."""
        while not stop.is_set():
            try:
                await outlast(self.renew, what="lease renewal (Redis)", stop=stop)
            except Stopped:
                return
            await sleep_unless(stop, self.renew_interval)

    async def release(self) -> None:
        """Give the lease up so a standby need not wait for it to expire.

        Idempotent; does nothing when the lease is no longer ours."""
        if self._fence is None:
            return
        await _RELEASE(
            self._redis, [self._keys.lease, self._keys.fence], [self._owner, self._fence]
        )
        self._fence = None
