"""Change streams through the real driver: event shapes, order, scopes, images,
resume options, history loss, invalidation, and renames seen from their target."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from mongosim import MongoSim

Client = AsyncMongoClient[dict[str, Any]]


async def test_watcher_sees_every_write_in_order_with_server_shapes(client: Client) -> None:
    coll = client.shop.orders
    async with await coll.watch() as stream:
        await coll.insert_one({"_id": 1, "a": {"b": 1, "c": 2}, "arr": [1, 2, 3], "gone": 0})
        await coll.update_one({"_id": 1}, [{"$set": {"a.b": 5, "arr": [1, 9]}}, {"$unset": "gone"}])
        await coll.replace_one({"_id": 1}, {"fresh": True})
        await coll.delete_one({"_id": 1})
        events = [await stream.next() for _ in range(4)]
    assert [e["operationType"] for e in events] == ["insert", "update", "replace", "delete"]
    insert, update, replace, delete = events
    assert insert["fullDocument"] == {"_id": 1, "a": {"b": 1, "c": 2}, "arr": [1, 2, 3], "gone": 0}
    assert insert["ns"] == {"db": "shop", "coll": "orders"}
    assert insert["documentKey"] == {"_id": 1}
    assert update["updateDescription"] == {
        "updatedFields": {"a.b": 5, "arr.1": 9},
        "removedFields": ["gone"],
        "truncatedArrays": [{"field": "arr", "newSize": 2}],
    }
    assert "fullDocument" not in update
    assert replace["fullDocument"] == {"_id": 1, "fresh": True}
    assert "fullDocument" not in delete
    tokens = [e["_id"]["_data"] for e in events]
    times = [e["clusterTime"] for e in events]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert times == sorted(times) and len(set(times)) == 4
    assert all(e["wallTime"] is not None for e in events)


async def test_database_and_cluster_streams(client: Client) -> None:
    async with (
        await client.one.watch() as db_stream,
        await client.watch() as cluster_stream,
    ):
        await client.one.a.insert_one({"_id": "one.a"})
        await client.two.b.insert_one({"_id": "two.b"})
        await client.one.c.insert_one({"_id": "one.c"})
        db_events = [await db_stream.next() for _ in range(2)]
        cluster_events = [await cluster_stream.next() for _ in range(3)]
    assert [e["documentKey"]["_id"] for e in db_events] == ["one.a", "one.c"]
    assert [e["documentKey"]["_id"] for e in cluster_events] == ["one.a", "two.b", "one.c"]


async def test_full_document_modes_and_pre_images(client: Client) -> None:
    db = client.images
    await db.create_collection("kept", changeStreamPreAndPostImages={"enabled": True})
    await db.kept.insert_one({"_id": 1, "v": 1})
    await db.plain.insert_one({"_id": 1, "v": 1})
    async with (
        await db.kept.watch(
            full_document="required", full_document_before_change="required"
        ) as kept,
        await db.plain.watch(full_document="updateLookup") as lookup,
        await db.plain.watch(full_document_before_change="required") as strict,
    ):
        await db.kept.update_one({"_id": 1}, {"$set": {"v": 2}})
        await db.plain.update_one({"_id": 1}, {"$set": {"v": 2}})
        await db.plain.update_one({"_id": 1}, {"$set": {"v": 3}})
        event = await kept.next()
        assert event["fullDocument"] == {"_id": 1, "v": 2}
        assert event["fullDocumentBeforeChange"] == {"_id": 1, "v": 1}
        looked_up = await lookup.next()
        assert looked_up["fullDocument"] == {"_id": 1, "v": 3}  # current, not at the time
        with pytest.raises(OperationFailure) as no_image:
            await strict.next()
    assert no_image.value.code == 47


async def test_trailing_match_and_project(client: Client) -> None:
    coll = client.pipes.c
    pipeline = [
        {"$match": {"operationType": "insert", "fullDocument.keep": True}},
        {"$project": {"doc": "$fullDocument.name", "operationType": 1}},
    ]
    async with await coll.watch(pipeline) as stream:
        await coll.insert_many([{"keep": False, "name": "no"}, {"keep": True, "name": "yes"}])
        event = await stream.next()
    assert event["doc"] == "yes"
    assert set(event) == {"_id", "doc", "operationType"}


async def test_resume_after_start_after_and_start_at_operation_time(client: Client) -> None:
    coll = client.resume.c
    async with await coll.watch() as stream:
        opened_at = (await client.admin.command("ping"))["operationTime"]
        await coll.insert_many([{"_id": i} for i in range(3)])
        first = await stream.next()
    keys = []
    async with await coll.watch(resume_after=first["_id"]) as resumed:
        keys = [(await resumed.next())["documentKey"]["_id"] for _ in range(2)]
    assert keys == [1, 2]
    async with await coll.watch(start_after=first["_id"]) as started:
        assert (await started.next())["documentKey"]["_id"] == 1
    async with await coll.watch(start_at_operation_time=opened_at) as at_time:
        assert (await at_time.next())["documentKey"]["_id"] == 0


async def test_post_batch_resume_token_advances_without_events(client: Client) -> None:
    async with await client.quiet.c.watch() as stream:
        before = stream.resume_token
        await client.elsewhere.c.insert_one({})
        assert await stream.try_next() is None
        after = stream.resume_token
    assert before is not None and after is not None
    assert after["_data"] > before["_data"]


async def test_history_lost_after_truncation_is_286(sim: MongoSim, client: Client) -> None:
    coll = client.hist.c
    async with await coll.watch() as stream:
        await coll.insert_one({"_id": 1})
        token = (await stream.next())["_id"]
    sim.truncate_oplog()
    with pytest.raises(OperationFailure) as caught:
        async with await coll.watch(resume_after=token) as resumed:
            await resumed.try_next()
    assert caught.value.code == 286
    assert caught.value.details is not None
    assert caught.value.details["codeName"] == "ChangeStreamHistoryLost"


async def test_bounded_oplog_forgets_old_entries(client: Client) -> None:
    coll = client.hist.bounded
    async with await coll.watch() as stream:
        await coll.insert_one({"_id": "first"})
        token = (await stream.next())["_id"]
    await coll.insert_many([{"_id": i} for i in range(1_000)])  # the fixture keeps 1,000
    with pytest.raises(OperationFailure) as caught:
        async with await coll.watch(resume_after=token) as resumed:
            await resumed.try_next()
    assert caught.value.code == 286


async def test_unknown_token_fails_like_the_server(client: Client) -> None:
    with pytest.raises(OperationFailure) as malformed:
        async with await client.t.c.watch(resume_after={"_data": "not-a-token"}):
            pass
    assert malformed.value.code == 260
    future = {"_data": "82" + "7FFFFFFF" + "00000001" + "0" * 15 + "F" + "00"}
    with pytest.raises(OperationFailure) as unknown:
        async with await client.t.c.watch(resume_after=future):
            pass
    assert unknown.value.code == 280


@pytest.mark.parametrize("action", ["drop", "rename"])
async def test_collection_stream_is_invalidated(client: Client, action: str) -> None:
    coll = client.inv.c
    await coll.insert_one({"_id": 1})
    async with await coll.watch() as stream:
        if action == "drop":
            await coll.drop()
        else:
            await coll.rename("renamed")
        change = await stream.next()
        invalidate = await stream.next()
        assert not stream.alive
    assert change["operationType"] == action
    assert change["ns"] == {"db": "inv", "coll": "c"}
    if action == "rename":
        assert change["to"] == {"db": "inv", "coll": "renamed"}
    assert invalidate["operationType"] == "invalidate"
    with pytest.raises(OperationFailure) as resume_after:
        async with await coll.watch(resume_after=invalidate["_id"]):
            pass
    assert resume_after.value.code == 260
    async with await coll.watch(start_after=invalidate["_id"]) as fresh:
        await coll.insert_one({"_id": 2})
        assert (await fresh.next())["documentKey"] == {"_id": 2}


async def test_rename_into_watched_collection_is_seen_and_invalidates(client: Client) -> None:
    db = client.into
    await db.a.insert_one({"_id": 1})
    async with await db.b.watch() as target, await db.watch() as whole:
        await db.a.rename("b")
        renamed, invalidate = await target.next(), await target.next()
        assert not target.alive
        db_events = [await whole.next()]
        await db.b.insert_one({"_id": 2})
        db_events.append(await whole.next())
    assert renamed["operationType"] == "rename"
    assert renamed["ns"] == {"db": "into", "coll": "a"}
    assert renamed["to"] == {"db": "into", "coll": "b"}
    assert invalidate["operationType"] == "invalidate"
    assert [e["operationType"] for e in db_events] == ["rename", "insert"]
    assert db_events[0]["ns"] == {"db": "into", "coll": "a"}
    assert db_events[0]["to"] == {"db": "into", "coll": "b"}
    assert db_events[0]["_id"] == renamed["_id"]


async def test_rename_with_drop_target_is_one_rename_event(client: Client) -> None:
    db = client.replace
    await db.a.insert_one({"_id": 1})
    await db.b.insert_one({"_id": "old"})
    async with await db.b.watch() as target, await db.watch() as whole:
        await db.a.rename("b", dropTarget=True)
        await db.c.insert_one({"_id": "after"})
        kinds = [(await target.next())["operationType"] for _ in range(2)]
        db_kinds = [(await whole.next())["operationType"] for _ in range(2)]
    # The server drops the target inside the rename: no drop event of its own.
    assert kinds == ["rename", "invalidate"]
    assert db_kinds == ["rename", "insert"]
    assert await db.b.find_one() == {"_id": 1}


async def test_drop_database_invalidates_database_stream(client: Client) -> None:
    await client.gone.a.insert_one({})
    async with await client.gone.watch() as stream:
        await client.drop_database("gone")
        kinds = [(await stream.next())["operationType"] for _ in range(3)]
    assert kinds == ["drop", "dropDatabase", "invalidate"]


async def test_get_more_wakes_as_soon_as_a_write_lands(client: Client) -> None:
    coll = client.wake.c
    # An hour's await: only the write can end the parked getMore within the deadline.
    async with await coll.watch(max_await_time_ms=3_600_000) as stream:

        async def write_soon() -> None:
            await asyncio.sleep(0.2)  # the write lands while the driver's getMore is parked
            await coll.insert_one({"_id": "woken"})

        writer = asyncio.create_task(write_soon())
        change = await asyncio.wait_for(stream.next(), timeout=30)
        await writer
    assert change["documentKey"] == {"_id": "woken"}


async def test_invalid_pipeline_stage_is_40324(client: Client) -> None:
    with pytest.raises(OperationFailure) as caught:
        async with await client.p.c.watch([{"$unsupported": "foo"}]):
            pass
    assert caught.value.code == 40324
