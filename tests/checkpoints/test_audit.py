"""The audit trail: entries as operators read them, bounded, behind the fence for changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.audit import MAX_ENTRIES, AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from core.errors import LeaseLost


def entry(n: int, by: str = "ops") -> AuditEntry:
    return AuditEntry(datetime(2026, 11, 30, 12, 0, n % 60, tzinfo=UTC), f"cmd-{n}", by, "done")


def test_an_entry_keeps_non_ascii_text_readable() -> None:
    written = entry(1, by="运维-josé").to_json()
    assert '"by": "运维-josé"' in written
    assert AuditEntry.from_json(written) == entry(1, by="运维-josé")


async def test_recent_gives_the_last_ten_entries_newest_first(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    log = AuditLog(redis_client, keys)
    for n in range(12):
        await log.record(entry(n))

    assert [e.command for e in await log.recent()] == [f"cmd-{n}" for n in range(11, 1, -1)]
    assert [e.command for e in await log.recent(2)] == ["cmd-11", "cmd-10"]


async def test_the_trail_keeps_about_the_last_max_entries(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    log = AuditLog(redis_client, keys)
    for n in range(MAX_ENTRIES + 250):
        await log.record(entry(n))

    assert MAX_ENTRIES <= await redis_client.xlen(keys.audit) < MAX_ENTRIES + 250
    assert (await log.recent(1))[0].command == f"cmd-{MAX_ENTRIES + 249}"


async def test_a_fenced_change_with_a_stale_fence_changes_and_records_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    log = AuditLog(redis_client, keys)
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="successor").acquire(wait=False)

    with pytest.raises(LeaseLost, match=f"fence {fence} is not the current lease's fence"):
        await log.set_key(keys.paused, "yes", fence=fence, entry=entry(1))

    assert await redis_client.exists(keys.paused, keys.audit) == 0
