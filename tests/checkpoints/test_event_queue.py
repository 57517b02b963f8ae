from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.lua import LuaScript
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import Checkpoint, ResumeTokenStore
from core.errors import LeaseLost
from core.events import DocumentCreatedEvent, DocumentDeletedEvent, DocumentEvent, event_from_json
from tests.conftest import REDIS_URL


def created(n: int) -> DocumentEvent:
    return DocumentCreatedEvent(
        event_id=f"e{n}",
        document_id=f"doc-{n}",
        namespace="db.docs",
        version=1000 + n,
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        content=f"text {n} 中文",
        source="test",
    )


def position(data: str) -> Checkpoint:
    return Checkpoint({"_data": data}, 42, None, datetime(2026, 1, 2, tzinfo=UTC))


async def test_keys_and_texts_of_any_characters_reach_the_stream_as_they_were(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    """The events travel to Redis packed in one string, each key behind its length in
    bytes: a key holding the separators, newlines or multi-byte characters, and a text
    holding newlines, come out whole."""
    queue = EventQueue(redis_client, keys)
    names = ["a:1\n-p2:x", "文档:\n", "", "9:" * 20]
    events = [
        DocumentCreatedEvent(
            event_id=f"e{n}",
            document_id=name,
            namespace="db.docs",
            version=1000 + n,
            timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            content=f"line one\nline two {name}",
            source="test",
        )
        for n, name in enumerate(names)
    ]

    await queue.append(events, position("82AB"), fence=fence, urgent={"e1"})

    live = await redis_client.xrange(keys.events)
    urgent = await redis_client.xrange(keys.priority)
    assert [event_from_json(fields[b"event"]) for _, fields in live] == [
        events[0],
        *events[2:],
    ]
    assert [event_from_json(fields[b"event"]) for _, fields in urgent] == [events[1]]
    assert [fields[b"key"].decode() for _, fields in live + urgent] == [
        events[0].key,
        *[e.key for e in events[2:]],
        events[1].key,
    ]


async def test_append_queues_events_saves_position_and_counts(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    events = [
        created(1),
        created(2),
        DocumentDeletedEvent(
            event_id="d1",
            document_id="doc-1",
            namespace="db.docs",
            version=2001,
            timestamp=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        ),
    ]

    await queue.append(events, position("82AA"), fence=fence)

    entries = await redis_client.xrange(keys.events)
    assert [event_from_json(fields[b"event"]) for _, fields in entries] == events
    assert [fields[b"key"].decode() for _, fields in entries] == [e.key for e in events]
    assert await ResumeTokenStore(redis_client, keys).load() == position("82AA")
    assert (await Stats(redis_client, keys).read())["events_captured"] == 3
    assert await queue.backlog() == 3


async def test_append_with_a_stale_fence_writes_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    await queue.append([created(1)], position("first"), fence=fence)
    await redis_client.delete(keys.lease)  # the writer's lease expired
    await Lease(redis_client, keys, owner="successor").acquire(wait=False)

    with pytest.raises(LeaseLost, match=f"fence {fence} is not the current lease's fence"):
        await queue.append([created(2), created(3)], position("second"), fence=fence)

    assert await redis_client.xlen(keys.events) == 1
    assert await ResumeTokenStore(redis_client, keys).load() == position("first")
    assert (await Stats(redis_client, keys).read())["events_captured"] == 1


async def test_append_without_any_lease_is_refused(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    with pytest.raises(LeaseLost):
        await EventQueue(redis_client, keys).append([created(1)], position("x"), fence=1)
    assert await redis_client.exists(keys.events, keys.checkpoint) == 0


async def test_an_empty_batch_only_moves_the_position(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    await queue.append([created(1)], position("before"), fence=fence)

    await queue.append([], position("after-empty-batch"), fence=fence)

    assert await ResumeTokenStore(redis_client, keys).load() == position("after-empty-batch")
    assert await queue.backlog() == 1
    assert (await Stats(redis_client, keys).read())["events_captured"] == 1


async def test_events_without_a_checkpoint_keep_the_saved_position(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    await queue.append([], position("saved"), fence=fence)

    await queue.append([created(1)], None, fence=fence)

    assert await ResumeTokenStore(redis_client, keys).load() == position("saved")
    assert await queue.backlog() == 1


class EvalCounting(aioredis.Redis):
    """A real client that counts the scripts it had to send in full."""

    evals = 0

    async def eval(self, *args: Any) -> Any:
        self.evals += 1
        return await super().eval(*args)


async def test_a_script_unknown_to_redis_runs_by_eval_then_by_sha(keys: Keys) -> None:
    redis = EvalCounting.from_url(REDIS_URL)
    script = LuaScript(f"-- {uuid.uuid4()}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        assert await redis.script_exists(script.sha) == [False]

        assert await script(redis, [keys.prefix + "counter"], [41]) == 41
        assert await redis.script_exists(script.sha) == [True]
        assert await script(redis, [keys.prefix + "counter"], [1]) == 42
        assert redis.evals == 1  # the second call ran the cached script
    finally:
        await redis.delete(keys.prefix + "counter")
        await redis.aclose()


async def test_nothing_is_pending_before_the_indexer_ever_read(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    queue = EventQueue(redis_client, keys)
    assert await queue.pending() == 0  # no stream, no consumer group yet
    await queue.append([created(1)], None, fence=fence)
    assert await queue.pending() == 0


async def test_dead_letters_counts_the_dead_letter_stream(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    queue = EventQueue(redis_client, keys)
    assert await queue.dead_letters() == 0
    for n in range(2):
        await redis_client.xadd(keys.dead, {"event": created(n).to_json()})

    assert await queue.dead_letters() == 2
