"""What a consistency check keeps in Redis: its working sets while it runs, its last
result afterwards, and the fenced removal of version records it found impossible."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.typing import EncodableT

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced
from checkpoints.stats import as_text

WORKING_SET_TTL = 24 * 3600
"""Seconds a check's working sets outlive a check that died without removing them."""

# KEYS: fence, then one version key per record. ARGV: fence.
_DROP_VERSIONS = LuaScript(
    FENCE_CHECK
    + """
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 1
"""
)


class CheckMarks:
    """Two sets of document keys for one check run, so the process holds one page of
    each source in memory however large the collections are: *seen* holds every
    document the source says must be indexed, *flagged* every document already
    reported (a document is reported once, whichever source shows it first)."""

    def __init__(self, redis: Redis, keys: Keys, run_id: str) -> None:
        self._redis = redis
        self._seen = f"{keys.prefix}check:{run_id}:seen"
        self._flagged = f"{keys.prefix}check:{run_id}:flagged"

    async def see(self, doc_keys: Sequence[str]) -> None:
        await self._add(self._seen, doc_keys)

    async def flag(self, doc_keys: Sequence[str]) -> None:
        await self._add(self._flagged, doc_keys)

    async def seen(self, doc_keys: Sequence[str]) -> list[bool]:
        return await self._members(self._seen, doc_keys)

    async def flagged(self, doc_keys: Sequence[str]) -> list[bool]:
        return await self._members(self._flagged, doc_keys)

    async def discard(self) -> None:
        await self._redis.delete(self._seen, self._flagged)

    async def _add(self, key: str, doc_keys: Sequence[str]) -> None:
        if not doc_keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(key, *doc_keys)
            pipe.expire(key, WORKING_SET_TTL)
            await pipe.execute()

    async def _members(self, key: str, doc_keys: Sequence[str]) -> list[bool]:
        if not doc_keys:
            return []
        found = await self._redis.smismember(key, list(doc_keys))
        return [bool(flag) for flag in found]


LOCK_SECONDS = 120
"""How long the running check's lock outlives its last renewal (a check that died)."""

# KEYS: the lock. ARGV: its holder's value, then seconds (renew) or nothing (release).
_RENEW_OR_RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return redis.call('DEL', KEYS[1])
"""
)


class CheckLock:
    """At most one consistency check of a pipeline at a time (an operator's, or the
    schedule's): a key naming the running check, renewed as it goes."""

    def __init__(self, redis: Redis, keys: Keys, run_id: str) -> None:
        self._redis = redis
        self._key = f"{keys.prefix}check:running"
        self._value = run_id

    async def take(self, description: str) -> str | None:
        """Take the lock for this run (None), or say which check holds it."""
        value = f"{self._value} {description}"
        if await self._redis.set(self._key, value, nx=True, ex=LOCK_SECONDS):
            self._value = value
            return None
        held = await self._redis.get(self._key)
        return "another one" if held is None else as_text(held).split(" ", 1)[-1]

    async def renew(self) -> None:
        await _RENEW_OR_RELEASE(self._redis, [self._key], [self._value, LOCK_SECONDS])

    async def release(self) -> None:
        await _RENEW_OR_RELEASE(self._redis, [self._key], [self._value])


class CheckProgress:
    """How far the running check is, for the command line's progress bar: published
    per page, gone a minute after the last update."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = f"{keys.prefix}check:progress"

    async def publish(self, progress: dict[str, Any]) -> None:
        await self._redis.set(self._key, json.dumps(progress), ex=60)

    async def read(self) -> dict[str, Any] | None:
        raw = await self._redis.get(self._key)
        return None if raw is None else dict(json.loads(raw))


class CheckResults:
    """The last consistency check's report, as `status` shows it."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = f"{keys.prefix}check:last"
        self._audit = AuditLog(redis, keys)

    async def last(self) -> dict[str, Any] | None:
        raw = await self._redis.get(self._key)
        return None if raw is None else dict(json.loads(raw))

    async def save(self, report: dict[str, Any], *, fence: int, audit: AuditEntry) -> None:
        """Keep *report* as the last result and record *audit*, atomically behind the
        fence (LeaseLost when it is stale)."""
        body = json.dumps(report, ensure_ascii=False, default=str)
        await self._audit.set_key(self._key, body, fence=fence, entry=audit)


async def drop_versions(redis: Redis, keys: Keys, doc_keys: Sequence[str], *, fence: int) -> None:
    """Delete the version records of *doc_keys* behind the fence (LeaseLost when it is
    stale): for records a check found impossible, before their documents are reindexed."""
    if not doc_keys:
        return
    names = [keys.fence, *(keys.version(key) for key in doc_keys)]
    args: list[EncodableT] = [fence]
    raise_unless_fenced(await _DROP_VERSIONS(redis, names, args), fence)
