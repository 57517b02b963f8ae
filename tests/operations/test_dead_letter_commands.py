"""`dlq list | show | replay | purge`: dead letters made the way the indexer makes them,
then listed, shown, replayed into the queue and purged under the lease, audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from cdc.namespaces import WatchScope
from checkpoints.audit import AuditLog
from checkpoints.consumer import EventReader
from checkpoints.deadletters import DeadLetters
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from core.errors import InvalidRequest, LeaseLost, SidecarError
from core.events import DocumentCreatedEvent, DocumentEvent
from operations import deadletters
from operations.control import perform
from operations.deadletters import Selection

SCOPE = WatchScope("app", ["docs"])
UNUSED_MONGO = "mongodb://127.0.0.1:1"  # dead-letter commands never reach MongoDB


def created(n: int) -> DocumentEvent:
    return DocumentCreatedEvent(
        event_id=f"e{n}",
        document_id=f"doc-{n}",
        namespace="app.docs",
        version=1000 + n,
        timestamp=datetime(2026, 6, 1, tzinfo=UTC),
        content=f"text {n}",
        source="app.docs",
    )


async def dead_letter(redis: aioredis.Redis, keys: Keys, count: int) -> list[str]:
    """Queue *count* events and dead-letter them as the indexer does; their dead-letter ids."""
    capture = Lease(redis, keys, owner="capture")
    fence = await capture.acquire(wait=False)
    await EventQueue(redis, keys).append([created(n) for n in range(count)], None, fence=fence)
    await capture.release()
    reader = EventReader(redis, keys, consumer="indexer-1")
    await reader.start()
    for n, entry in enumerate(await reader.read(count, block_ms=100)):
        await reader.dead_letter(entry, f"ValueError: bad field {n}")
    return [letter.id for letter in await DeadLetters(redis, keys).page(count)]


async def queued_events(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    rows = await redis.xrange(keys.events)
    return [json.loads(fields[b"event"]) for _, fields in rows]


async def run(redis: aioredis.Redis, keys: Keys, name: str, selection: Selection) -> dict[str, Any]:
    return await perform(redis, keys, UNUSED_MONGO, SCOPE, name, selection.args())


@pytest.mark.parametrize(
    ("ids", "every", "message"),
    [
        ([], False, "give dead-letter ids .* or --all, not neither"),
        (["1-0"], True, "not both"),
        (["1-0", "latest", "12"], False, "not a dead-letter id: latest, 12 \\(ids look like"),
    ],
)
def test_a_selection_that_names_nothing_clear_is_refused(
    ids: list[str], every: bool, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Selection.parse(ids, every)


async def test_list_and_show_say_what_failed_and_why(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    ids = await dead_letter(redis_client, keys, 3)

    first_page = await deadletters.listing(redis_client, keys, limit=2, after=None)
    second_page = await deadletters.listing(redis_client, keys, limit=2, after=first_page["next"])
    shown = await deadletters.show(redis_client, keys, ids[1])

    assert first_page["total"] == 3
    assert [letter["id"] for letter in first_page["letters"] + second_page["letters"]] == ids
    assert second_page["next"] is None
    letter = first_page["letters"][0]
    assert letter["doc_key"] == created(0).key
    assert letter["error"] == "ValueError: bad field 0"
    assert letter["deliveries"] == 1
    assert shown["event"]["document_id"] == "doc-1" and shown["event"]["content"] == "text 1"
    with pytest.raises(InvalidRequest, match="no dead letter 1-0"):
        await deadletters.show(redis_client, keys, "1-0")


async def test_replay_queues_the_original_events_again_and_purge_deletes(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    ids = await dead_letter(redis_client, keys, 4)
    # A dead letter without an event (a malformed entry) cannot be replayed.
    broken = await redis_client.xadd(keys.dead, {"error": "entry has no 'event' field"})

    replayed = await run(redis_client, keys, "dlq replay", Selection((ids[2], ids[0], "1-0")))
    assert replayed == {"replayed": 2, "not_found": 1, "without_event": 0}
    assert [e["document_id"] for e in await queued_events(redis_client, keys)] == [
        "doc-2",
        "doc-0",
    ]
    assert [e["content"] for e in await queued_events(redis_client, keys)] == ["text 2", "text 0"]

    everything = await run(redis_client, keys, "dlq replay", Selection(all=True))
    assert everything == {"replayed": 2, "not_found": 0, "without_event": 1}
    assert len(await queued_events(redis_client, keys)) == 4
    assert [letter.id for letter in await DeadLetters(redis_client, keys).page(10)] == [
        broken.decode()
    ]

    purged = await run(redis_client, keys, "dlq purge", Selection(all=True))
    assert purged == {"purged": 1, "not_found": 0, "without_event": 0}
    assert await DeadLetters(redis_client, keys).count() == 0
    audit = await AuditLog(redis_client, keys).recent()
    assert [(entry.command, entry.outcome) for entry in audit] == [
        ("dlq purge --all", "done: 1 purged, 0 not found"),
        (
            "dlq replay --all",
            "done: 2 replayed, 0 not found, 1 without an event (purge them)",
        ),
        (f"dlq replay {ids[2]} {ids[0]} 1-0", "done: 2 replayed, 1 not found"),
    ]


async def test_a_stale_fence_moves_no_dead_letter(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    ids = await dead_letter(redis_client, keys, 2)
    fence = await Lease(redis_client, keys, owner="old-holder").acquire(wait=False)
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="new-holder").acquire(wait=False)

    with pytest.raises(LeaseLost):
        await DeadLetters(redis_client, keys).replay(ids, fence=fence)
    with pytest.raises(LeaseLost):
        await DeadLetters(redis_client, keys).purge(ids, fence=fence)

    assert await DeadLetters(redis_client, keys).count() == 2
    assert await queued_events(redis_client, keys) == []


async def test_a_replay_while_another_holder_does_not_answer_is_not_done(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    ids = await dead_letter(redis_client, keys, 1)
    await Lease(redis_client, keys, owner="busy-replica").acquire(wait=False)

    with pytest.raises(SidecarError, match=r"did not answer within 0\.3 s"):
        await perform(
            redis_client, keys, UNUSED_MONGO, SCOPE, "dlq replay", Selection(tuple(ids)).args(),
            answer_seconds=0.3,
        )
    assert await DeadLetters(redis_client, keys).count() == 1


async def test_show_and_list_refuse_what_is_not_a_dead_letter_id(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    with pytest.raises(InvalidRequest, match="dlq show 'latest' is not a dead-letter id"):
        await deadletters.show(redis_client, keys, "latest")
    with pytest.raises(InvalidRequest, match="--after '12' is not a dead-letter id"):
        await deadletters.listing(redis_client, keys, limit=5, after="12")
