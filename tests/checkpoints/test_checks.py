"""What a consistency check keeps in Redis: its working sets, its last report (fenced and
audited), and the fenced removal of impossible version records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.checks import WORKING_SET_TTL, CheckMarks, CheckResults, drop_versions
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.versions import VersionRecord, VersionStore
from core.errors import LeaseLost

A, B, C = "app.articles/1", "app.articles/$num:2", "app.notes/5f1d7a3b9c0e4d2a1b3c4d5e"


async def lose_the_lease(redis: aioredis.Redis, keys: Keys) -> None:
    """The test's lease expires and another writer takes it: the test's fence is stale."""
    await redis.delete(keys.lease)
    await Lease(redis, keys, owner="successor").acquire(wait=False)


async def run_keys(redis: aioredis.Redis, keys: Keys, run_id: str) -> list[str]:
    """The Redis keys a check run named *run_id* holds."""
    found = [key async for key in redis.scan_iter(match=f"{keys.prefix}check:{run_id}:*")]
    return sorted(key.decode() for key in found)


# CheckMarks


async def test_seen_answers_for_each_key_in_order(redis_client: aioredis.Redis, keys: Keys) -> None:
    marks = CheckMarks(redis_client, keys, "run-1")

    await marks.see([A, C])

    assert await marks.seen([A, B, C, A]) == [True, False, True, True]
    assert await marks.flagged([A, B, C]) == [False, False, False]


async def test_flagged_is_a_set_of_its_own(redis_client: aioredis.Redis, keys: Keys) -> None:
    marks = CheckMarks(redis_client, keys, "run-1")

    await marks.flag([B])
    await marks.see([A])
    await marks.flag([C])

    assert await marks.flagged([A, B, C]) == [False, True, True]
    assert await marks.seen([A, B, C]) == [True, False, False]


async def test_nothing_to_mark_or_ask_changes_nothing(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    marks = CheckMarks(redis_client, keys, "run-1")

    await marks.see([])
    await marks.flag([])

    assert await marks.seen([]) == []
    assert await marks.flagged([]) == []
    assert await run_keys(redis_client, keys, "run-1") == []


async def test_runs_do_not_share_marks(redis_client: aioredis.Redis, keys: Keys) -> None:
    first = CheckMarks(redis_client, keys, "run-1")
    second = CheckMarks(redis_client, keys, "run-2")

    await first.see([A])
    await first.flag([B])

    assert await second.seen([A, B]) == [False, False]
    assert await second.flagged([A, B]) == [False, False]


async def test_the_working_sets_expire(redis_client: aioredis.Redis, keys: Keys) -> None:
    marks = CheckMarks(redis_client, keys, "run-1")

    await marks.see([A])
    await marks.flag([B])

    held = await run_keys(redis_client, keys, "run-1")
    assert len(held) == 2
    for key in held:
        assert WORKING_SET_TTL - 60 < await redis_client.ttl(key) <= WORKING_SET_TTL


async def test_each_addition_renews_the_expiry(redis_client: aioredis.Redis, keys: Keys) -> None:
    marks = CheckMarks(redis_client, keys, "run-1")
    await marks.see([A])
    await marks.flag([A])
    for key in await run_keys(redis_client, keys, "run-1"):
        await redis_client.expire(key, 5)

    await marks.see([B])
    await marks.flag([B])

    for key in await run_keys(redis_client, keys, "run-1"):
        assert await redis_client.ttl(key) > WORKING_SET_TTL - 60


async def test_discard_removes_the_run_and_only_the_run(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    done = CheckMarks(redis_client, keys, "run-1")
    other = CheckMarks(redis_client, keys, "run-2")
    for marks in (done, other):
        await marks.see([A])
        await marks.flag([B])

    await done.discard()

    assert await run_keys(redis_client, keys, "run-1") == []
    assert await done.seen([A]) == [False]
    assert await done.flagged([B]) == [False]
    assert await other.seen([A]) == [True]
    assert await other.flagged([B]) == [True]
    await done.discard()  # again: nothing left to remove, no error


# CheckResults


def audit(outcome: str) -> AuditEntry:
    return AuditEntry(datetime(2026, 11, 30, 12, 0, tzinfo=UTC), "check", "ops", outcome)


async def test_no_result_before_the_first_check(redis_client: aioredis.Redis, keys: Keys) -> None:
    assert await CheckResults(redis_client, keys).last() is None


async def test_save_keeps_the_report_and_records_the_audit_entry(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    results = CheckResults(redis_client, keys)
    report = {
        "checked": 3,
        "problems": {"missing": 1, "orphan": 0},
        "examples": {"missing": [{"doc_key": "app.articles/文", "reason": "它不在索引中"}]},
        "started_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        "sample": None,
    }

    await results.save(report, fence=fence, audit=audit("done: 3 checked"))

    assert await results.last() == {
        **report,
        "started_at": "2026-11-30 12:00:00+00:00",  # not JSON: kept as its text
    }
    assert await AuditLog(redis_client, keys).recent() == [audit("done: 3 checked")]


async def test_a_later_save_replaces_the_report(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    results = CheckResults(redis_client, keys)
    await results.save({"checked": 1}, fence=fence, audit=audit("first"))

    await results.save({"checked": 2}, fence=fence, audit=audit("second"))

    assert await results.last() == {"checked": 2}
    assert [e.outcome for e in await AuditLog(redis_client, keys).recent()] == ["second", "first"]


async def test_a_save_with_a_stale_fence_keeps_the_last_report_and_records_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    results = CheckResults(redis_client, keys)
    await results.save({"checked": 1}, fence=fence, audit=audit("first"))
    await lose_the_lease(redis_client, keys)

    with pytest.raises(LeaseLost, match=f"fence {fence} is not the current lease's fence"):
        await results.save({"checked": 2}, fence=fence, audit=audit("second"))

    assert await results.last() == {"checked": 1}
    assert [e.outcome for e in await AuditLog(redis_client, keys).recent()] == ["first"]


# drop_versions


def version_record(version: int) -> VersionRecord:
    return VersionRecord(
        version=version,
        content_hash="c",
        metadata_hash="m",
        chunk_ids=(f"id-{version}",),
        deleted=False,
        updated_at=datetime(2026, 11, 30, tzinfo=UTC),
    )


async def put_records(redis: aioredis.Redis, keys: Keys, doc_keys: list[str]) -> None:
    for n, doc_key in enumerate(doc_keys, start=1):
        await redis.set(keys.version(doc_key), version_record(n).to_json())


async def test_drop_versions_deletes_only_the_given_records(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await put_records(redis_client, keys, [A, B, C])

    await drop_versions(redis_client, keys, [A, C, "app.articles/never-recorded"], fence=fence)

    records = await VersionStore(redis_client, keys, ttl_seconds=None).get_many([A, B, C])
    assert records == {B: version_record(2)}


async def test_drop_versions_with_a_stale_fence_deletes_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await put_records(redis_client, keys, [A, B])
    await lose_the_lease(redis_client, keys)

    with pytest.raises(LeaseLost, match=f"fence {fence} is not the current lease's fence"):
        await drop_versions(redis_client, keys, [A, B], fence=fence)

    records = await VersionStore(redis_client, keys, ttl_seconds=None).get_many([A, B])
    assert records == {A: version_record(1), B: version_record(2)}


async def test_drop_versions_without_any_lease_deletes_nothing(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    await put_records(redis_client, keys, [A])

    with pytest.raises(LeaseLost):
        await drop_versions(redis_client, keys, [A], fence=1)

    assert await redis_client.exists(keys.version(A)) == 1
