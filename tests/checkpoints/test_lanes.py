"""The queue's two lanes: live changes are always read before bulk work (backfills),
bulk work comes in small batches, and each lane's entries are acknowledged, claimed
and dead-lettered in their own stream even when the two streams' ids coincide."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.consumer import BULK_PREFIX, EventReader, QueueEntry
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue, JobReplaced
from checkpoints.stats import Stats
from core.events import DocumentCreatedEvent, DocumentEvent


def created(doc: str) -> DocumentEvent:
    return DocumentCreatedEvent(
        event_id=doc, document_id=doc, namespace="app.docs", version=1,
        timestamp=datetime.now(UTC), content=doc, source="app.docs",
    )


async def fill(redis: aioredis.Redis, keys: Keys, fence: int, live: int, bulk: int) -> None:
    queue = EventQueue(redis, keys)
    progress = '{"id": "job-1", "state": "running"}'
    await redis.set(keys.backfill, progress)  # the job, as starting it saves it
    await queue.append_bulk(
        [created(f"bulk-{n}") for n in range(bulk)], keys.backfill, progress, fence=fence,
        job_id="job-1",
    )
    await queue.append([created(f"live-{n}") for n in range(live)], None, fence=fence)


def documents(entries: list[QueueEntry]) -> list[str]:
    return [entry.event.document_id for entry in entries if entry.event is not None]


async def test_live_entries_come_first_and_bulk_ones_in_small_batches(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await fill(redis_client, keys, fence, live=3, bulk=5)
    reader = EventReader(redis_client, keys, consumer="c1", bulk_batch=2)
    await reader.start()

    first = await reader.read(10, block_ms=0)
    assert documents(first) == ["live-0", "live-1", "live-2"]
    second = await reader.read(10, block_ms=0)
    assert documents(second) == ["bulk-0", "bulk-1"]
    assert all(entry.entry_id.startswith(BULK_PREFIX) for entry in second)
    # A live change that arrives meanwhile overtakes the rest of the bulk work.
    await EventQueue(redis_client, keys).append([created("live-late")], None, fence=fence)
    assert documents(await reader.read(10, block_ms=0)) == ["live-late"]
    assert documents(await reader.read(10, block_ms=0)) == ["bulk-2", "bulk-3"]
    assert (await Stats(redis_client, keys).read())["events_backfilled"] == 5


async def test_each_lane_is_acknowledged_and_dead_lettered_in_its_own_stream(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    await fill(redis_client, keys, fence, live=2, bulk=2)
    # Make the two lanes' ids coincide: the same raw id in both streams.
    same_id = "9999999999999-0"
    for stream, doc in ((keys.events, "live-x"), (keys.bulk, "bulk-x")):
        await redis_client.xadd(stream, {"event": created(doc).to_json(), "key": doc}, id=same_id)
    reader = EventReader(redis_client, keys, consumer="c1", bulk_batch=10)
    await reader.start()
    live = await reader.read(10, block_ms=0)
    bulk = await reader.read(10, block_ms=0)
    assert documents(live) == ["live-0", "live-1", "live-x"]
    assert documents(bulk) == ["bulk-0", "bulk-1", "bulk-x"]

    await reader.commit(
        [live[2].entry_id, bulk[0].entry_id], versions={}, counts={}, last_applied=None
    )
    await reader.dead_letter(bulk[2], "bad")
    queue = EventQueue(redis_client, keys)
    assert (await queue.backlog(), await queue.bulk_backlog(), await queue.pending()) == (2, 1, 3)
    (dead,) = await redis_client.xrange(keys.dead)
    assert dead[1][b"entry_id"] == BULK_PREFIX.encode() + b"9999999999999-0"

    # A restarted consumer gets its own unacknowledged entries back, from both lanes.
    again = EventReader(redis_client, keys, consumer="c1", bulk_batch=10)
    await again.start()
    assert documents(await again.read(10, block_ms=0)) == ["live-0", "live-1"]
    assert documents(await again.read(10, block_ms=0)) == ["bulk-1"]


async def test_a_bulk_append_of_a_replaced_or_cancelled_job_writes_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    running = '{"id": "job-1", "state": "running"}'
    for saved in (
        '{"id": "resync", "state": "running"}',  # another job took its place
        '{"id": "job-1", "state": "cancelled"}',  # an operator cancelled it
    ):
        await redis_client.set(keys.backfill, saved)

        with pytest.raises(JobReplaced, match="backfill job-1 was cancelled or replaced"):
            await EventQueue(redis_client, keys).append_bulk(
                [created("late")], keys.backfill, running, fence=fence, job_id="job-1"
            )

        assert await EventQueue(redis_client, keys).bulk_backlog() == 0
        assert await redis_client.get(keys.backfill) == saved.encode()
