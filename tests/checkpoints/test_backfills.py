"""A backfill job's progress: what a restart resumes from, and what the operator sees."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.backfills import BackfillJob, BackfillStore
from checkpoints.keys import Keys
from core.errors import LeaseLost


def job() -> BackfillJob:
    return BackfillJob("job-1", ["a", "b"], "", "ops", "2026-11-30T12:00:00+00:00")


def test_progress_accumulates_chunk_by_chunk_and_collection_by_collection() -> None:
    first = job().advanced("a", '{"$oid": "1"}', scanned=10, queued=7)
    second = first.advanced("a", '{"$oid": "2"}', scanned=5, queued=4)
    finished = second.advanced("a", None, scanned=1, queued=0)
    resumed_b = finished.advanced("b", '"x"', scanned=3, queued=3)

    assert (first.after, first.done, first.scanned, first.queued) == (
        {"a": '{"$oid": "1"}'},
        [],
        10,
        7,
    )
    assert (second.after, second.scanned, second.queued) == ({"a": '{"$oid": "2"}'}, 15, 11)
    assert (finished.after, finished.done, finished.scanned) == ({}, ["a"], 16)
    assert (resumed_b.after, resumed_b.done, resumed_b.queued) == ({"b": '"x"'}, ["a"], 14)
    assert job().after == {} and job().done == []  # advancing never changes the original


async def test_a_job_round_trips_through_redis(redis_client: aioredis.Redis, keys: Keys) -> None:
    store = BackfillStore(redis_client, keys)
    assert await store.load() is None
    saved = job().advanced("a", '"k-中"', scanned=2, queued=2)
    await redis_client.set(store.key, saved.to_json())

    assert await store.load() == saved


def test_a_job_is_stored_as_compact_json_with_readable_text() -> None:
    written = job().advanced("a", '"k-中"', scanned=2, queued=2).to_json()
    assert '"by":"ops"' in written and '"after":{"a":"\\"k-中\\""}' in written


async def test_only_the_saved_running_job_is_cancelled(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    store = BackfillStore(redis_client, keys)
    entry = AuditEntry(datetime.now(UTC), "backfill --cancel", "ops", "cancelled")
    running = job()
    cancelled = replace(running, state="cancelled", reason="cancelled by ops")

    assert not await store.cancel(cancelled, fence=fence, audit=entry)  # no job at all
    other = replace(running, id="resync")
    await redis_client.set(store.key, other.to_json())  # replaced meanwhile
    assert not await store.cancel(cancelled, fence=fence, audit=entry)
    assert await store.load() == other
    await redis_client.set(store.key, replace(running, state="done").to_json())  # finished
    assert not await store.cancel(cancelled, fence=fence, audit=entry)
    assert await AuditLog(redis_client, keys).recent() == []

    await redis_client.set(store.key, running.to_json())
    with pytest.raises(LeaseLost):
        await store.cancel(cancelled, fence=fence + 1, audit=entry)
    assert await store.load() == running
    assert await store.cancel(cancelled, fence=fence, audit=entry)
    assert await store.load() == cancelled
    assert await AuditLog(redis_client, keys).recent() == [entry]
