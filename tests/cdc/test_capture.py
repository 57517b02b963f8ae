"""Capture against mongosim through the real driver, into the real Redis queue."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.exceptions
import structlog.testing
from bson import Timestamp
from capture_support import DATABASE, CountingQueue, PipelineParts, article_mapper
from pymongo import AsyncMongoClient, monitoring

from cdc.capture import CHECKPOINT_INTERVAL, Capture
from cdc.fields import document_id
from cdc.mapping import ChangeMapper
from checkpoints.audit import AuditEntry
from checkpoints.tokens import Checkpoint, ResumeTokenStore, pack_timestamp
from core.errors import HistoryLost, LeaseLost
from core.events import (
    COLLECTION_DOCUMENT,
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentUpdatedEvent,
)
from mongosim import ThreadedMongoSim
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]


def make_capture(
    mongo: Client,
    parts: PipelineParts,
    collections: Sequence[str] = ("articles",),
    mapper: ChangeMapper | None = None,
    **options: Any,
) -> Capture:
    options.setdefault("max_await", 0.1)
    options.setdefault("checkpoint_interval", 0.1)
    options.setdefault("max_retry_wait", 0.5)
    return Capture(
        mongo,
        DATABASE,
        list(collections),
        mapper or article_mapper(),
        parts.queue,
        parts.tokens,
        parts.stats,
        parts.fence,
        **options,
    )


async def start(capture: Capture, parts: PipelineParts, stop: asyncio.Event) -> asyncio.Task[None]:
    """Start *capture*; return once it holds a position, so later writes are captured."""
    task = asyncio.create_task(capture.run(stop))

    async def positioned() -> bool:
        if task.done():
            task.result()
        return await parts.tokens.load() is not None

    await eventually(positioned, what="capture to save its first position")
    return task


@asynccontextmanager
async def running(capture: Capture, parts: PipelineParts) -> AsyncIterator[asyncio.Task[None]]:
    """Run *capture* during the block, then stop it and surface its error, if any."""
    stop = asyncio.Event()
    task = await start(capture, parts, stop)
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def queued(parts: PipelineParts, count: int) -> None:
    async def enough() -> bool:
        return await parts.queue.backlog() >= count

    await eventually(enough, what=f"{count} queued events")


async def test_every_write_is_queued_once_in_order_and_the_checkpoint_follows(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts, max_batch=7), parts):
        for n in range(40):
            await articles.insert_one({"_id": n, "title": f"t{n}", "owner": "u"})
        for n in range(0, 40, 4):
            await articles.update_one({"_id": n}, {"$set": {"title": f"new{n}"}})
        await articles.delete_one({"_id": 1})
        await queued(parts, 51)

    events = await parts.events()
    assert [(type(e), e.document_id) for e in events] == (
        [(DocumentCreatedEvent, document_id(n)) for n in range(40)]
        + [(DocumentUpdatedEvent, document_id(n)) for n in range(0, 40, 4)]
        + [(DocumentDeletedEvent, document_id(1))]
    )
    assert len({e.event_id for e in events}) == len(events)
    versions = [e.version for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    updated = events[40]
    assert isinstance(updated, DocumentUpdatedEvent)
    assert updated.content == "new0"

    # The checkpoint is exactly after the last queued change: resuming from
    # it yields nothing old, and the next write is the next change.
    checkpoint = await parts.tokens.load()
    assert checkpoint is not None and checkpoint.token is not None
    assert checkpoint.cluster_time is not None and checkpoint.cluster_time >= events[-1].version
    async with await articles.watch(resume_after=checkpoint.token, max_await_time_ms=100) as s:
        assert await s.try_next() is None
        await articles.insert_one({"_id": "after", "title": "x"})
        change = await s.try_next()
        while change is None:
            change = await s.try_next()
        assert change["documentKey"] == {"_id": "after"}


async def test_stop_and_restart_resume_without_gap_or_duplicate(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    writes = 0

    async def write(count: int) -> None:
        nonlocal writes
        for _ in range(count):
            await articles.insert_one({"_id": writes, "title": f"t{writes}"})
            writes += 1

    async with running(make_capture(mongo, parts, max_batch=5), parts):
        await write(30)
        await queued(parts, 10)
    await write(30)  # while capture is down
    async with running(make_capture(mongo, parts, max_batch=5), parts):
        await write(30)
        await queued(parts, 90)

    ids = [e.document_id for e in await parts.events()]
    assert ids == [document_id(n) for n in range(90)]


async def unwatched_write(mongo: Client) -> int:
    """Write to a collection no capture watches; return the write's packed operationTime."""
    async with mongo.start_session() as session:
        await mongo[DATABASE]["other"].insert_one({"x": 1}, session=session)
        assert session.operation_time is not None
        return pack_timestamp(session.operation_time)


async def checkpoint_reaches(parts: PipelineParts, cluster_time: int, what: str) -> None:
    async def reached() -> bool:
        checkpoint = await parts.tokens.load()
        return (
            checkpoint is not None
            and checkpoint.cluster_time is not None
            and checkpoint.cluster_time >= cluster_time
        )

    # A save is due within CHECKPOINT_INTERVAL plus a read: ten seconds is ample.
    await eventually(reached, within=10.0, what=what)


async def test_a_quiet_stream_keeps_saving_its_position_past_unwatched_writes(
    mongo: Client, parts: PipelineParts
) -> None:
    capture = make_capture(mongo, parts, checkpoint_interval=CHECKPOINT_INTERVAL)
    async with running(capture, parts):
        for round_ in range(3):
            written = await unwatched_write(mongo)
            await checkpoint_reaches(parts, written, f"the checkpoint to pass write {round_}")
    assert await parts.queue.backlog() == 0


async def test_a_batch_of_filtered_changes_saves_its_position_and_counts_them_at_once(
    mongo: Client, parts: PipelineParts
) -> None:
    # With the production interval a quiet read just after a save saves nothing; a
    # read whose changes were all filtered out must not be taken for a quiet one.
    capture = make_capture(
        mongo,
        parts,
        mapper=article_mapper({"status": "published"}),
        checkpoint_interval=CHECKPOINT_INTERVAL,
    )
    articles = mongo[DATABASE]["articles"]
    async with running(capture, parts):
        async with mongo.start_session() as session:
            drafts = [{"_id": n, "status": "draft"} for n in range(20)]
            await articles.insert_many(drafts, session=session)
            await articles.update_many({}, {"$set": {"views": 1}}, session=session)
            assert session.operation_time is not None
            written = pack_timestamp(session.operation_time)
        await checkpoint_reaches(parts, written, "the checkpoint to pass the filtered writes")

        async def all_counted() -> bool:
            return (await parts.stats.read())["events_filtered"] == 40

        await eventually(all_counted, within=10.0, what="the 40 filtered changes to be counted")
    assert await parts.queue.backlog() == 0


async def test_filter_transitions_become_deletes_and_back(
    mongo: Client, parts: PipelineParts
) -> None:
    # Point-in-time post-images: with updateLookup the third change could be
    # read after the fourth and see the document published again.
    await mongo[DATABASE].create_collection(
        "articles", changeStreamPreAndPostImages={"enabled": True}
    )
    articles = mongo[DATABASE]["articles"]
    capture = make_capture(
        mongo, parts, mapper=article_mapper({"status": "published"}), full_document="required"
    )
    async with running(capture, parts):
        await articles.insert_one({"_id": 1, "title": "a", "status": "published"})
        await articles.update_one({"_id": 1}, {"$set": {"status": "draft"}})
        await articles.update_one({"_id": 1}, {"$set": {"title": "b"}})
        await articles.update_one({"_id": 1}, {"$set": {"status": "published"}})
        await queued(parts, 4)
    events = await parts.events()
    assert [type(e) for e in events] == [
        DocumentCreatedEvent,
        DocumentDeletedEvent,
        DocumentDeletedEvent,
        DocumentUpdatedEvent,
    ]
    assert events[1].metadata == {"reason": "filtered_out"}
    final = events[-1]
    assert isinstance(final, DocumentUpdatedEvent) and final.content == "b"


async def test_backpressure_bounds_the_queue_and_resumes(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    total, max_backlog, max_batch = 300, 40, 10
    capture = make_capture(mongo, parts, max_batch=max_batch, max_backlog=max_backlog)
    seen: list[str] = []
    async with running(capture, parts):
        writer = asyncio.create_task(
            articles.insert_many([{"_id": n, "title": str(n)} for n in range(total)])
        )
        await queued(parts, max_backlog)
        # The queue stays bounded while the source has far more to give.
        for _ in range(20):
            assert await parts.queue.backlog() <= max_backlog + max_batch
            await asyncio.sleep(0.05)
        await writer

        async def all_drained() -> bool:
            assert await parts.queue.backlog() <= max_backlog + max_batch
            seen.extend(e.document_id for e in await parts.drain())
            return len(seen) >= total

        await eventually(all_drained, what="every write to pass through the bounded queue")
    assert seen == [document_id(n) for n in range(total)]


async def test_dropped_connections_lose_nothing(
    mongo: Client, parts: PipelineParts, sim: ThreadedMongoSim
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts, max_batch=5), parts):
        for n in range(60):
            await articles.insert_one({"_id": n, "title": str(n)})
            if n % 15 == 7:
                sim.drop_connections()
        await queued(parts, 60)
    ids = [e.document_id for e in await parts.events()]
    assert ids == [document_id(n) for n in range(60)]


async def test_an_outage_longer_than_the_drivers_own_resume_is_retried(
    parts: PipelineParts, sim: ThreadedMongoSim
) -> None:
    client: Client = AsyncMongoClient(
        sim.uri, serverSelectionTimeoutMS=300, heartbeatFrequencyMS=500
    )
    articles = client[DATABASE]["articles"]
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(make_capture(client, parts), parts):
                await articles.insert_many([{"_id": n, "title": str(n)} for n in range(10)])
                await queued(parts, 10)
                # No primary: the driver's single resume fails too.
                sim.step_down()
                sim.drop_connections()

                async def retried() -> bool:
                    return any(entry["event"] == "outage_continues" for entry in logs)

                await eventually(retried, what="capture to retry with backoff")
                sim.step_up()
                await articles.insert_many([{"_id": n, "title": str(n)} for n in range(10, 20)])
                await queued(parts, 20)
    finally:
        await client.close()
    assert [e.document_id for e in await parts.events()] == [document_id(n) for n in range(20)]
    # One outage: one line when it started, one when the next batch was queued.
    events = [entry["event"] for entry in logs]
    assert events.count("outage_started") == 1 and events.count("outage_ended") == 1


async def test_history_lost_past_the_checkpoint_is_raised(
    mongo: Client, parts: PipelineParts, sim: ThreadedMongoSim
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts), parts):
        await articles.insert_one({"_id": 1, "title": "kept"})
        await queued(parts, 1)
    checkpoint = await parts.tokens.load()
    assert checkpoint is not None and checkpoint.token is not None
    await articles.insert_one({"_id": 2, "title": "lost"})
    sim.truncate_oplog()
    with pytest.raises(HistoryLost, match=checkpoint.token["_data"]):
        await make_capture(mongo, parts).run(asyncio.Event())
    assert [e.document_id for e in await parts.events()] == [document_id(1)]


async def test_a_stale_fence_stops_capture(mongo: Client, parts: PipelineParts) -> None:
    articles = mongo[DATABASE]["articles"]
    task = await start(make_capture(mongo, parts), parts, asyncio.Event())
    await articles.insert_one({"_id": 1, "title": "before"})
    await queued(parts, 1)
    await parts.lease.release()
    await parts.lease.acquire(wait=False)  # a new holder: the fence moved on
    await articles.insert_one({"_id": 2, "title": "after"})
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(task, 30)
    assert [e.document_id for e in await parts.events()] == [document_id(1)]


async def test_several_collections_are_watched_at_database_scope(
    mongo: Client, parts: PipelineParts
) -> None:
    database = mongo[DATABASE]
    capture = make_capture(mongo, parts, collections=["a", "b"])
    async with running(capture, parts):
        await database["a"].insert_one({"_id": 1, "title": "a"})
        await database["c"].insert_one({"_id": 1, "title": "c"})
        await database["b"].insert_one({"_id": 1, "title": "b"})
        await queued(parts, 2)
    events = await parts.events()
    assert [(e.namespace, e.event_type) for e in events] == [
        ("app.a", "created"),
        ("app.b", "created"),
    ]


async def test_dropping_the_collection_reopens_after_the_invalidate(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts), parts):
        await articles.insert_one({"_id": 1, "title": "old"})
        await queued(parts, 1)
        await articles.drop()
        await articles.insert_one({"_id": 2, "title": "recreated"})
        await queued(parts, 3)
    events = await parts.events()
    assert [(e.event_type, e.document_id) for e in events] == [
        ("created", document_id(1)),
        ("dropped", COLLECTION_DOCUMENT),
        ("created", document_id(2)),
    ]
    assert events[0].version < events[1].version < events[2].version


async def test_post_and_pre_images_give_content_and_old_content(
    mongo: Client, parts: PipelineParts
) -> None:
    database = mongo[DATABASE]
    await database.create_collection("articles", changeStreamPreAndPostImages={"enabled": True})
    await database.create_collection("plain")
    capture = make_capture(
        mongo,
        parts,
        collections=["articles", "plain"],
        full_document="whenAvailable",
        pre_images=True,
    )
    async with running(capture, parts):
        await database["articles"].insert_one({"_id": 1, "title": "v1"})
        await database["articles"].update_one({"_id": 1}, {"$set": {"title": "v2"}})
        await database["articles"].update_one({"_id": 1}, {"$set": {"title": "v3"}})
        # No post-images on this collection: capture looks the document up itself.
        await database["plain"].insert_one({"_id": 1, "title": "p1"})
        await database["plain"].update_one({"_id": 1}, {"$set": {"title": "p2"}})
        await queued(parts, 5)
    updates = [e for e in await parts.events() if isinstance(e, DocumentUpdatedEvent)]
    assert [(e.namespace, e.content, e.old_content) for e in updates] == [
        ("app.articles", "v2", "v1"),
        ("app.articles", "v3", "v2"),
        ("app.plain", "p2", None),
    ]


async def test_a_rejected_document_is_taken_out_and_the_rest_keeps_flowing(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts), parts):
        await articles.insert_one({"_id": 1, "title": {"not": "text"}})
        await articles.insert_one({"_id": 2, "title": "fine"})
        await queued(parts, 2)
    rejected, fine = await parts.events()
    assert isinstance(rejected, DocumentDeletedEvent)
    assert rejected.metadata["reason"] == "rejected"
    assert "'title'" in rejected.metadata["error"]
    assert isinstance(fine, DocumentCreatedEvent) and fine.content == "fine"


async def test_dropping_the_database_reopens_a_database_stream(
    mongo: Client, parts: PipelineParts
) -> None:
    database = mongo[DATABASE]
    async with running(make_capture(mongo, parts, collections=[]), parts):
        await database["a"].insert_one({"_id": 1, "title": "before"})
        await queued(parts, 1)
        await mongo.drop_database(DATABASE)
        await database["b"].insert_one({"_id": 1, "title": "after"})
        await queued(parts, 4)
    assert [(e.event_type, e.namespace, e.document_id) for e in await parts.events()] == [
        ("created", "app.a", document_id(1)),
        # The server reports each collection's drop, then the database's.
        ("dropped", "app.a", COLLECTION_DOCUMENT),
        ("dropped", "app", COLLECTION_DOCUMENT),
        ("created", "app.b", document_id(1)),
    ]


async def reset_to_time(parts: PipelineParts, when: datetime) -> None:
    """What `cdc-sidecar checkpoint reset --to-time` saves."""
    at = Checkpoint(None, None, pack_timestamp(Timestamp(when, 0)), datetime.now(UTC))
    entry = AuditEntry(datetime.now(UTC), "reset", "test", "done")
    await parts.tokens.reset(at, fence=parts.fence, audit=entry)


async def test_an_operator_reset_to_a_time_replays_from_there(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts), parts):
        await articles.insert_one({"_id": 0, "title": "before the reset time"})
        await queued(parts, 1)
        (earlier,) = await parts.drain()

        async def next_second() -> bool:
            # Reset times have a one-second resolution (a BSON Timestamp).
            return datetime.now(UTC).replace(microsecond=0) > earlier.timestamp

        await eventually(next_second, what="the clock to reach the next second")
        await articles.insert_one({"_id": 1, "title": "first"})
        await queued(parts, 1)
    first = (await parts.drain())[0]
    await reset_to_time(parts, first.timestamp.replace(microsecond=0))
    async with running(make_capture(mongo, parts), parts):
        await articles.insert_one({"_id": 2, "title": "second"})
        await queued(parts, 2)
    replayed = await parts.events()
    assert [e.document_id for e in replayed] == [document_id(1), document_id(2)]
    assert replayed[0].event_id == first.event_id


async def test_a_reset_to_a_time_before_the_history_is_history_lost(
    mongo: Client, parts: PipelineParts
) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    await reset_to_time(parts, long_ago)
    with pytest.raises(HistoryLost, match="no longer holds the saved position, at 2001-01-01T"):
        await make_capture(mongo, parts).run(asyncio.Event())


def counting(parts: PipelineParts) -> PipelineParts:
    return dataclasses.replace(parts, queue=CountingQueue(parts.redis, parts.keys))


async def reads_done(queue: CountingQueue, count: int) -> None:
    """Return once capture has finished *count* more reads from the stream."""
    target = queue.reads + count + 1

    async def done() -> bool:
        return queue.reads >= target

    await eventually(done, what=f"{count} more reads")


async def test_a_quiet_stream_that_does_not_move_is_not_saved_again(
    mongo: Client, parts: PipelineParts
) -> None:
    parts = counting(parts)
    queue = parts.queue
    assert isinstance(queue, CountingQueue)
    async with running(make_capture(mongo, parts, checkpoint_interval=0), parts):
        await reads_done(queue, 5)
        saves = len(queue.appended)
        await reads_done(queue, 5)
        assert len(queue.appended) == saves


async def test_a_quiet_stream_that_moves_is_saved_at_most_once_per_checkpoint_interval(
    mongo: Client, parts: PipelineParts
) -> None:
    parts = counting(parts)
    queue = parts.queue
    assert isinstance(queue, CountingQueue)
    async with running(make_capture(mongo, parts, checkpoint_interval=3600), parts):
        saves = len(queue.appended)
        for _ in range(3):
            await unwatched_write(mongo)
            await reads_done(queue, 2)
        assert len(queue.appended) == saves
    # The read before stopping saves the position however recent the last save.
    assert len(queue.appended) == saves + 1


async def test_changes_queued_while_capture_was_down_are_read_in_batches_of_max_batch(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    for max_batch, sizes in [(2, [2, 2, 1]), (500, [5])]:
        async with running(make_capture(mongo, parts), parts):
            pass
        await articles.insert_many([{"title": f"t{n}"} for n in range(5)])
        counted = counting(parts)
        queue = counted.queue
        assert isinstance(queue, CountingQueue)
        capture = make_capture(mongo, counted, max_batch=max_batch, max_await=1.0)
        async with running(capture, counted):
            await queued(counted, 5)
        assert [n for n in queue.appended if n] == sizes
        await counted.drain()


async def test_a_callable_fence_is_asked_for_the_current_fence(
    mongo: Client, parts: PipelineParts
) -> None:
    capture = Capture(
        mongo,
        DATABASE,
        ["articles"],
        article_mapper(),
        parts.queue,
        parts.tokens,
        parts.stats,
        lambda: parts.lease.fence,
        max_await=0.1,
    )
    async with running(capture, parts):
        await mongo[DATABASE]["articles"].insert_one({"_id": 1, "title": "fenced"})
        await queued(parts, 1)
    assert [e.document_id for e in await parts.events()] == [document_id(1)]


async def test_a_missing_post_image_is_looked_up_and_a_present_one_is_used(
    mongo: Client, parts: PipelineParts
) -> None:
    # Every write happens while capture is down, so a lookup can only see the last state.
    database = mongo[DATABASE]
    await database.create_collection("articles", changeStreamPreAndPostImages={"enabled": True})
    await database.create_collection("plain")

    def capture() -> Capture:
        return make_capture(
            mongo, parts, collections=["articles", "plain"], full_document="whenAvailable"
        )

    async with running(capture(), parts):
        pass
    await database["articles"].insert_one({"_id": 1, "title": "v1"})
    await database["articles"].update_one({"_id": 1}, {"$set": {"title": "v2"}})
    await database["articles"].update_one({"_id": 1}, {"$set": {"title": "v3"}})
    await database["plain"].insert_many([{"_id": 1, "title": "one"}, {"_id": 2, "title": "p1"}])
    await database["plain"].update_one({"_id": 2}, {"$set": {"title": "p2"}})
    async with running(capture(), parts):
        await queued(parts, 6)
    updates = [e for e in await parts.events() if isinstance(e, DocumentUpdatedEvent)]
    assert [(e.namespace, e.document_id, e.content) for e in updates] == [
        ("app.articles", document_id(1), "v2"),
        ("app.articles", document_id(1), "v3"),
        ("app.plain", document_id(2), "p2"),
    ]


async def test_dropping_one_of_several_watched_collections_keeps_the_stream_open(
    mongo: Client, parts: PipelineParts
) -> None:
    database = mongo[DATABASE]
    with structlog.testing.capture_logs() as logs:
        async with running(make_capture(mongo, parts, collections=["a", "b"]), parts):
            await database["a"].insert_one({"_id": 1, "title": "a1"})
            await database["b"].insert_one({"_id": 1, "title": "b1"})
            await queued(parts, 2)
            await database["b"].drop()
            await database["a"].insert_one({"_id": 2, "title": "a2"})
            await queued(parts, 3)
    assert [e["event"] for e in logs if e["event"] in ("stream_opened", "collection_changed")] == [
        "stream_opened",
        "collection_changed",
    ]


async def test_max_batch_must_be_positive(mongo: Client, parts: PipelineParts) -> None:
    with pytest.raises(ValueError, match="max_batch must be positive, got 0"):
        make_capture(mongo, parts, max_batch=0)
    make_capture(mongo, parts, max_batch=1)


async def test_a_stop_while_redis_is_down_at_start_returns_without_an_error(
    mongo: Client, parts: PipelineParts
) -> None:
    class Unreachable(ResumeTokenStore):
        loads = 0

        async def load(self) -> Checkpoint | None:
            self.loads += 1
            raise redis.exceptions.ConnectionError("Connection refused")

    tokens = Unreachable(parts.redis, parts.keys)
    stop = asyncio.Event()
    task = asyncio.create_task(
        make_capture(mongo, dataclasses.replace(parts, tokens=tokens)).run(stop)
    )

    async def retried() -> bool:
        if task.done():
            task.result()
        return tokens.loads >= 2

    await eventually(retried, what="capture to try the checkpoint again")
    stop.set()
    await asyncio.wait_for(task, 30)
    assert await parts.queue.backlog() == 0


class GetMores(monitoring.CommandListener):
    """The maxTimeMS of every getMore the driver sends: how long the server may wait."""

    def __init__(self) -> None:
        self.max_time_ms: list[int | None] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "getMore":
            self.max_time_ms.append(event.command.get("maxTimeMS"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize(("max_await", "max_time_ms"), [(1.0, 1000), (0.0001, 1)])
async def test_the_server_waits_max_await_for_changes_and_at_least_a_millisecond(
    sim: ThreadedMongoSim, parts: PipelineParts, max_await: float, max_time_ms: int
) -> None:
    listener = GetMores()
    client: Client = AsyncMongoClient(
        sim.uri, serverSelectionTimeoutMS=10_000, event_listeners=[listener]
    )
    try:
        async with running(make_capture(client, parts, max_await=max_await), parts):
            await client[DATABASE]["articles"].insert_one({"_id": 1, "title": "t"})
            await queued(parts, 1)
    finally:
        await client.close()
    assert listener.max_time_ms and set(listener.max_time_ms) == {max_time_ms}


async def test_each_queued_batch_is_logged_at_debug_with_its_documents_and_duration(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    with structlog.testing.capture_logs() as logs:
        async with running(make_capture(mongo, parts, max_batch=7), parts):
            await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(30)])
            await queued(parts, 30)

    batches = [entry for entry in logs if entry["event"] == "batch_queued"]
    assert {entry["log_level"] for entry in batches} == {"debug"}
    assert sum(entry["events"] for entry in batches) == 30
    assert all(entry["events"] <= 7 and entry["seconds"] >= 0 for entry in batches)
    assert all(len(entry["documents"]) == entry["events"] for entry in batches)
    assert all(entry["cluster_time"] for entry in batches), batches[0]


async def test_a_stop_during_the_backpressure_check_still_saves_the_quiet_position_in_hand(
    mongo: Client, parts: PipelineParts
) -> None:
    """The race a loaded machine hits: the stop arrives while capture checks the queue's
    backlog before a read, so no final read happens; the moved position read last (and
    skipped as recent) is saved all the same."""
    stop = asyncio.Event()

    class StoppingQueue(CountingQueue):
        stop_at: int | None = None

        async def backlog(self) -> int:
            backlog = await super().backlog()
            if self.stop_at is not None and self.reads >= self.stop_at:
                stop.set()
            return backlog

    queue = StoppingQueue(parts.redis, parts.keys)
    parts = dataclasses.replace(parts, queue=queue)
    task = await start(make_capture(mongo, parts, checkpoint_interval=3600), parts, stop)
    saves = len(queue.appended)
    moved_to = await unwatched_write(mongo)
    await reads_done(queue, 2)
    assert len(queue.appended) == saves, "a recent quiet position is not saved at once"
    queue.stop_at = queue.reads + 1
    await asyncio.wait_for(task, 30)

    assert len(queue.appended) == saves + 1
    checkpoint = await parts.tokens.load()
    assert checkpoint is not None and (checkpoint.cluster_time or 0) >= moved_to


async def test_a_backlog_written_while_capture_was_down_is_caught_up_once_across_a_restart(
    mongo: Client, parts: PipelineParts
) -> None:
    """Every change written while capture was down is queued after it starts again, in
    stream order and once, though capture is stopped half-way through the backlog (with
    reads ahead of what it queued) and started again."""
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts), parts):
        pass
    checkpoint = await parts.tokens.load()
    assert checkpoint is not None and checkpoint.token is not None
    await articles.insert_many([{"_id": n, "title": f"t{n}"} for n in range(800)])
    await articles.update_many({"_id": {"$lt": 200}}, {"$set": {"title": "edited"}})
    for n in range(0, 200, 4):
        await articles.update_one({"_id": n}, {"$set": {"title": f"again {n}"}})
    await articles.delete_many({"_id": {"$gte": 740}})
    total = 800 + 200 + 50 + 60
    stream_ids: list[str] = []
    async with await articles.watch(resume_after=checkpoint.token, max_await_time_ms=100) as s:
        while len(stream_ids) < total:
            change = await s.try_next()
            if change is not None:
                stream_ids.append(change["_id"]["_data"])

    async with running(make_capture(mongo, parts, max_batch=40), parts):
        await queued(parts, total // 2)
    assert await parts.queue.backlog() < total, "the restart must come half-way"
    async with running(make_capture(mongo, parts, max_batch=40), parts):
        await queued(parts, total)

    events = await parts.events()
    assert [event.event_id for event in events] == stream_ids
    saved = await parts.tokens.load()
    assert saved is not None and saved.token is not None
    assert saved.token["_data"] >= stream_ids[-1]
