from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.consumer import EventReader, QueueEntry
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.versions import VersionRecord, VersionStore
from core.events import DocumentCreatedEvent, DocumentEvent
from tests.conftest import REDIS_URL
from tests.waiting import eventually

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def created(n: int) -> DocumentEvent:
    return DocumentCreatedEvent(
        event_id=f"e{n}",
        document_id=f"doc-{n}",
        namespace="db.docs",
        version=1000 + n,
        timestamp=NOW,
        content=f"text {n}",
        source="test",
    )


@pytest.fixture
def keys(pipeline_name: str) -> Keys:
    return Keys(pipeline_name)


@pytest.fixture
async def produce(
    redis_client: aioredis.Redis, keys: Keys
) -> Callable[[list[DocumentEvent]], Awaitable[None]]:
    """Queue events the way capture does."""
    fence = await Lease(redis_client, keys, owner="capture").acquire(wait=False)
    queue = EventQueue(redis_client, keys)

    async def append(events: list[DocumentEvent]) -> None:
        await queue.append(events, None, fence=fence)

    return append


async def started(
    redis: aioredis.Redis,
    keys: Keys,
    consumer: str,
    *,
    claim_idle_ms: int = 300_000,
    versions: VersionStore | None = None,
) -> EventReader:
    reader = EventReader(
        redis, keys, consumer=consumer, claim_idle_ms=claim_idle_ms, versions=versions
    )
    await reader.start()
    return reader


async def read_until(reader: EventReader, count: int, *, within: float = 5.0) -> list[QueueEntry]:
    """Read until something arrives, failing after *within* seconds."""
    async with asyncio.timeout(within):
        while not (entries := await reader.read(count, block_ms=50)):
            pass
    return entries


async def test_start_is_idempotent_and_creates_the_stream(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    reader = await started(redis_client, keys, "c1")
    await reader.start()
    assert await redis_client.exists(keys.events) == 1
    assert await reader.pending() == 0


async def test_read_delivers_events_once_and_commit_removes_them_with_their_records(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=60)
    reader = await started(redis_client, keys, "c1", versions=store)
    await produce([created(1), created(2), created(3)])

    entries = await reader.read(10, block_ms=100)

    assert [e.event for e in entries] == [created(1), created(2), created(3)]
    assert [(e.error, e.deliveries) for e in entries] == [(None, 1)] * 3
    assert await reader.pending() == 3
    assert await reader.read(10, block_ms=0) == []

    records = {
        "db.docs/doc-1": VersionRecord(1001, "h", "m", ("a", "b"), False, NOW),
        "db.docs/doc-2": VersionRecord(1002, "", "", (), True, NOW),
    }
    await reader.commit(
        [e.entry_id for e in entries],
        versions=records,
        counts={"documents_indexed": 2, "deletes": 1},
        last_applied={"version": 1003, "at": NOW},
    )

    assert await redis_client.xlen(keys.events) == 0
    assert await reader.pending() == 0
    assert await store.get_many(list(records)) == records
    assert await redis_client.ttl(keys.version("db.docs/doc-2")) > 0
    stats = Stats(redis_client, keys)
    counts = await stats.read()
    assert (counts["documents_indexed"], counts["deletes"]) == (2, 1)
    assert await stats.last_applied() == {"version": 1003, "at": str(NOW)}


async def test_a_failing_commit_writes_nothing(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    reader = await started(redis_client, keys, "c1")
    await produce([created(1)])
    entries = await reader.read(10, block_ms=100)

    with pytest.raises(ValueError, match="unknown counter"):
        await reader.commit(
            [entries[0].entry_id],
            versions={"db.docs/doc-1": VersionRecord(1, "h", "m", (), False, NOW)},
            counts={"no_such_counter": 1},
            last_applied={"version": 1},
        )

    assert await reader.pending() == 1
    assert await redis_client.exists(keys.version("db.docs/doc-1"), keys.last_applied) == 0


async def test_a_restarted_consumer_gets_its_own_pending_entries_first(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    crashed = await started(redis_client, keys, "replica-0")
    await produce([created(1), created(2)])
    in_flight = await crashed.read(10, block_ms=100)
    await produce([created(3)])

    restarted = await started(redis_client, keys, "replica-0")
    first = await restarted.read(10, block_ms=100)
    then = await restarted.read(10, block_ms=100)

    assert [e.entry_id for e in first] == [e.entry_id for e in in_flight]
    assert [e.deliveries for e in first] == [2, 2]
    assert [(e.event, e.deliveries) for e in then] == [(created(3), 1)]


async def test_entries_of_a_dead_consumer_are_claimed_after_they_idle(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    dead = await started(redis_client, keys, "replica-0")
    await produce([created(1), created(2)])
    lost = await dead.read(10, block_ms=100)

    survivor = await started(redis_client, keys, "replica-1", claim_idle_ms=300)
    assert await survivor.read(10, block_ms=0) == []
    claimed = await read_until(survivor, 10)

    assert [(e.entry_id, e.event) for e in claimed] == [(e.entry_id, e.event) for e in lost]
    assert [e.deliveries for e in claimed] == [2, 2]
    owners = await redis_client.xpending_range(keys.events, keys.group, "-", "+", 10)
    assert {row["consumer"] for row in owners} == {b"replica-1"}


async def test_malformed_entries_surface_with_their_error(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    reader = await started(redis_client, keys, "c1")
    await redis_client.xadd(keys.events, {"event": b"{not json", "key": "k"})
    await redis_client.xadd(keys.events, {"something": "else"})

    entries = await reader.read(10, block_ms=100)

    assert [e.event for e in entries] == [None, None]
    assert entries[0].error is not None and "not a document event" in entries[0].error
    assert entries[0].raw == {"event": b"{not json", "key": b"k"}
    assert entries[1].error == "entry has no 'event' field"
    ids = [entry_id.decode() for entry_id, _ in await redis_client.xrange(keys.events)]
    assert [e.entry_id for e in entries] == ids
    assert entries[1].raw == {"something": b"else"}
    assert [e.deliveries for e in entries] == [1, 1]


async def test_every_kind_of_read_returns_at_most_the_count_asked_for(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    await produce([created(n) for n in range(7)])
    crashed = await started(redis_client, keys, "replica-0")
    # New entries, five at most, then the other two.
    assert len(await crashed.read(5, block_ms=100)) == 5
    assert len(await crashed.read(5, block_ms=100)) == 2

    # Its own pending entries after a restart, three at most per read, in order.
    restarted = await started(redis_client, keys, "replica-0")
    own = [await restarted.read(3, block_ms=100) for _ in range(3)]
    assert [len(batch) for batch in own] == [3, 3, 1]
    assert [e.event for batch in own for e in batch] == [created(n) for n in range(7)]

    # Idle entries of a dead consumer, claimed two at most per read.
    # Each batch is acknowledged as the indexer would: an entry left pending longer
    # than claim_idle_ms (a slow run) is claimed again, by design.
    survivor = await started(redis_client, keys, "replica-1", claim_idle_ms=200)
    claimed: list[list[QueueEntry]] = []
    while sum(len(batch) for batch in claimed) < 7:
        claimed.append(await read_until(survivor, 2))
        await survivor.commit(
            [e.entry_id for e in claimed[-1]], versions={}, counts={}, last_applied=None
        )
    assert all(len(batch) <= 2 for batch in claimed)
    assert sorted(e.event.event_id for b in claimed for e in b if e.event) == sorted(
        f"e{n}" for n in range(7)
    )


async def test_dead_letter_moves_the_entry_with_its_error(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    reader = await started(redis_client, keys, "c1")
    await produce([created(1), created(2)])
    first, second = await reader.read(10, block_ms=100)

    await reader.dead_letter(first, "oversize document")

    assert await reader.pending() == 1
    assert [entry_id.decode() for entry_id, _ in await redis_client.xrange(keys.events)] == [
        second.entry_id
    ]
    [(_, dead)] = await redis_client.xrange(keys.dead)
    assert dead[b"event"] == first.raw["event"] and dead[b"key"] == first.raw["key"]
    assert (dead[b"error"], dead[b"deliveries"], dead[b"entry_id"]) == (
        b"oversize document",
        b"1",
        first.entry_id.encode(),
    )
    assert datetime.fromisoformat(dead[b"failed_at"].decode()).tzinfo is not None
    assert (await Stats(redis_client, keys).read())["dead_lettered"] == 1


async def test_an_entry_deleted_while_pending_is_acknowledged_not_delivered(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    crashed = await started(redis_client, keys, "c1")
    await produce([created(1), created(2)])
    gone, kept = await crashed.read(10, block_ms=100)
    await redis_client.xdel(keys.events, gone.entry_id)

    restarted = await started(redis_client, keys, "c1")
    entries = await restarted.read(10, block_ms=100)

    assert [e.entry_id for e in entries] == [kept.entry_id]
    assert await restarted.pending() == 1


async def test_a_blocked_read_returns_when_an_event_arrives(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    reader = await started(redis_client, keys, "c1")
    assert await reader.read(10, block_ms=0) == []
    blocked = asyncio.create_task(reader.read(10, block_ms=10_000))
    await produce([created(1)])

    async with asyncio.timeout(5):
        entries = await blocked

    assert [e.event for e in entries] == [created(1)]


async def test_read_recreates_a_vanished_group(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    reader = await started(redis_client, keys, "c1")
    await redis_client.delete(keys.events)  # Redis restarted without persistence
    await produce([created(1)])

    entries = await reader.read(10, block_ms=100)

    assert [e.event for e in entries] == [created(1)]


async def test_a_claimed_entry_deleted_while_pending_is_not_delivered(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    version = (await redis_client.info("server"))["redis_version"]
    if int(version.split(".")[0]) < 7:
        pytest.skip(f"Redis {version} keeps claimed ghosts pending until a restart")
    dead = await started(redis_client, keys, "replica-0")
    await produce([created(1), created(2)])
    gone, kept = await dead.read(10, block_ms=100)
    await redis_client.xdel(keys.events, gone.entry_id)

    survivor = await started(redis_client, keys, "replica-1", claim_idle_ms=200)
    claimed = await read_until(survivor, 10)

    assert [e.entry_id for e in claimed] == [kept.entry_id]
    assert await survivor.pending() == 1


async def test_a_lease_holder_takes_over_a_dead_replicas_entries_before_new_ones(
    redis_client: aioredis.Redis, keys: Keys, produce: Callable[..., Awaitable[None]]
) -> None:
    dead = await started(redis_client, keys, "replica-0")
    await produce([created(1), created(2)])
    lost = await dead.read(10, block_ms=100)
    await produce([created(3)])

    heir = EventReader(redis_client, keys, consumer="replica-1", take_over=True)
    await heir.start()
    first = await heir.read(10, block_ms=100)
    then = await heir.read(10, block_ms=100)

    assert [e.entry_id for e in first] == [e.entry_id for e in lost], "no waiting for idle time"
    assert [e.event for e in then] == [created(3)]
    owners = await redis_client.xpending_range(keys.events, keys.group, "-", "+", 10)
    assert {row["consumer"] for row in owners} == {b"replica-1"}


async def test_a_read_on_an_empty_queue_waits_for_new_entries_up_to_count(
    redis_client: aioredis.Redis,
    keys: Keys,
    produce: Callable[[list[DocumentEvent]], Awaitable[None]],
) -> None:
    name = f"reader-{keys.pipeline}"
    own = aioredis.Redis.from_url(REDIS_URL, client_name=name)
    try:
        reader = await started(own, keys, "c1")
        waiting = asyncio.create_task(reader.read(2, block_ms=30_000))

        async def blocked() -> bool:
            clients = await redis_client.client_list()
            return any(c.get("name") == name and c.get("cmd") == "xreadgroup" for c in clients)

        await eventually(blocked, within=10, what="the read to block in XREADGROUP")
        await produce([created(1), created(2), created(3)])

        entries = await asyncio.wait_for(waiting, 10)
    finally:
        await own.aclose()
    assert [e.event for e in entries] == [created(1), created(2)]
