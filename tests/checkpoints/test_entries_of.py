"""What is queued or dead-lettered about one document: a scan of whole streams, longer
than one page of the scan."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from checkpoints.deadletters import CHUNK, DeadLetters
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from core.events import DocumentCreatedEvent, DocumentDeletedEvent, DocumentEvent

NAMESPACE = "app.articles"
TARGET = "doc-7"
TARGET_KEY = f"{NAMESPACE}/{TARGET}"
QUEUE_PAGE = 1000
"""EventQueue.entries_of reads a stream this many entries at a time."""


def event(n: int, document: str) -> DocumentEvent:
    if n % 3 == 2:
        return DocumentDeletedEvent(
            event_id=f"e{n}",
            document_id=document,
            namespace=NAMESPACE,
            version=1000 + n,
            timestamp=datetime(2026, 1, 2, tzinfo=UTC),
        )
    return DocumentCreatedEvent(
        event_id=f"e{n}",
        document_id=document,
        namespace=NAMESPACE,
        version=1000 + n,
        timestamp=datetime(2026, 1, 2, tzinfo=UTC),
        content=f"text {n}",
        source=NAMESPACE,
    )


def lane_events(count: int, target_at: set[int]) -> list[DocumentEvent]:
    """*count* events, about TARGET at the positions *target_at*, else about others
    (one of them a document whose id TARGET's is a prefix of)."""
    return [
        event(n, TARGET if n in target_at else ("doc-70" if n % 2 else f"other-{n}"))
        for n in range(count)
    ]


async def stream_ids(redis: aioredis.Redis, stream: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await redis.xrange(stream)]


async def test_entries_of_finds_a_documents_entries_across_pages_of_both_lanes(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    live_at = {0, QUEUE_PAGE - 1, QUEUE_PAGE, 2 * QUEUE_PAGE - 1, 2 * QUEUE_PAGE + 299}
    bulk_at = {3, QUEUE_PAGE, QUEUE_PAGE + 199}
    live = lane_events(2 * QUEUE_PAGE + 300, live_at)
    bulk = lane_events(QUEUE_PAGE + 200, bulk_at)
    await queue.append(live, None, fence=fence)
    await queue.append_bulk(bulk, keys.backfill, "", fence=fence, job_id="")
    live_ids = await stream_ids(redis_client, keys.events)
    bulk_ids = await stream_ids(redis_client, keys.bulk)

    found = await queue.entries_of(TARGET_KEY)

    assert found == [
        *({"lane": "live", "id": live_ids[n], "event": live[n].to_json()} for n in sorted(live_at)),
        *({"lane": "bulk", "id": bulk_ids[n], "event": bulk[n].to_json()} for n in sorted(bulk_at)),
    ]


async def test_entries_of_leaves_out_acknowledged_entries(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    events = lane_events(6, {1, 4})
    await queue.append(events, None, fence=fence)
    ids = await stream_ids(redis_client, keys.events)
    await redis_client.xdel(keys.events, ids[1])  # the indexer deletes what it acknowledges

    found = await queue.entries_of(TARGET_KEY)

    assert found == [{"lane": "live", "id": ids[4], "event": events[4].to_json()}]


async def test_entries_of_a_document_nothing_is_queued_about(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    assert await queue.entries_of(TARGET_KEY) == []  # no streams at all

    await queue.append(lane_events(5, set()), None, fence=fence)

    assert await queue.entries_of(TARGET_KEY) == []
    assert await queue.entries_of(f"{NAMESPACE}/doc") == []


async def put_dead_letters(
    redis: aioredis.Redis, keys: Keys, count: int, target_at: set[int]
) -> list[str]:
    """*count* dead letters as the consumer writes them (about TARGET at *target_at*,
    one without a key among the others); their ids in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            fields: dict[FieldT, EncodableT] = {
                "event": event(n, TARGET).to_json(),
                "error": f"failure {n}",
                "deliveries": 3,
                "entry_id": f"live:1-{n}",
                "failed_at": "2026-01-02T00:00:00+00:00",
            }
            if n in target_at:
                fields["key"] = TARGET_KEY
            elif n != 1:
                fields["key"] = f"{NAMESPACE}/other-{n}"
            pipe.xadd(keys.dead, fields)
        added = await pipe.execute()
    return [entry_id.decode() for entry_id in added]


async def test_of_document_finds_a_documents_dead_letters_across_pages(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    target_at = {0, CHUNK - 1, CHUNK, 2 * CHUNK + 99}
    ids = await put_dead_letters(redis_client, keys, 2 * CHUNK + 100, target_at)

    found = await DeadLetters(redis_client, keys).of_document(TARGET_KEY)

    assert [(letter.id, letter.error) for letter in found] == [
        (ids[n], f"failure {n}") for n in sorted(target_at)
    ]
    assert {letter.doc_key for letter in found} == {TARGET_KEY}
    assert found[0].event is not None
    assert found[0].event["document_id"] == TARGET


async def test_of_document_with_no_dead_letters_about_it(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    letters = DeadLetters(redis_client, keys)
    assert await letters.of_document(TARGET_KEY) == []  # no stream at all

    await put_dead_letters(redis_client, keys, 5, set())

    assert await letters.of_document(TARGET_KEY) == []
