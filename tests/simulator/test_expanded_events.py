"""Catalog events through the real driver: what showExpandedEvents adds (create,
createIndexes, dropIndexes, modify, views, collectionUUID, operationDescription,
disambiguatedPaths), and views."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure

from mongosim.diff import update_description

Client = AsyncMongoClient[dict[str, Any]]


async def _uuid(client: Client, db: str, coll: str) -> Any:
    infos = [info async for info in await client[db].list_collections(filter={"name": coll})]
    return infos[0]["info"]["uuid"]


async def _drain(stream: AsyncChangeStream[dict[str, Any]]) -> list[dict[str, Any]]:
    events = []
    while stream.alive and (event := await stream.try_next()) is not None:
        events.append(event)
    return events


async def test_default_streams_show_no_expanded_events(client: Client) -> None:
    db = client.plain
    async with await db.watch() as stream:
        await db.create_collection("made")
        await db.made.create_index("x")
        await db.command("collMod", "made")
        await db.made.drop_index("x_1")
        await db.implicit.insert_one({"_id": 1})
        await db.create_collection("view", viewOn="made")
        await db.drop_collection("view")
        await db.made.update_one({"_id": 0}, {"$set": {"a.1": 1}}, upsert=True)
        await db.made.update_one({"_id": 0}, {"$set": {"a.1": 2}})
        events = await _drain(stream)
    assert [e["operationType"] for e in events] == ["insert", "insert", "update"]
    assert all("collectionUUID" not in e for e in events)
    assert events[2]["updateDescription"] == {
        "updatedFields": {"a.1": 2},
        "removedFields": [],
        "truncatedArrays": [],
    }


async def test_expanded_events_with_server_shapes(client: Client) -> None:
    db = client.expanded
    async with await db.watch(show_expanded_events=True) as stream:
        await db.c.insert_one({"_id": 1})  # creates c implicitly
        await db.c.create_index("x", sparse=True)
        two = [{"key": {"p": 1}, "name": "p_1"}, {"key": {"q": -1}, "name": "q_-1"}]
        await db.command("createIndexes", "empty", indexes=two)
        await db.command("createIndexes", "c", indexes=two)
        await db.command("collMod", "c", validationLevel="off")
        await db.c.drop_index("x_1")
        uuid = await _uuid(client, "expanded", "c")
        events = await _drain(stream)
    create, insert, index, *rest = events
    assert [e["operationType"] for e in rest] == [
        *["create", "createIndexes", "createIndexes"],  # empty: one event per index
        *["createIndexes", "modify", "dropIndexes"],  # not empty: one event for both
    ]
    assert list(create) == [
        *["_id", "operationType", "clusterTime", "collectionUUID", "wallTime"],
        *["ns", "operationDescription"],
    ]
    assert create["collectionUUID"] == uuid
    assert create["operationDescription"] == {
        "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    }
    assert insert["collectionUUID"] == uuid and "operationDescription" not in insert
    assert index["ns"] == {"db": "expanded", "coll": "c"}
    spec = {"v": 2, "key": {"x": 1}, "name": "x_1", "sparse": True}
    assert index["operationDescription"] == {"indexes": [spec]}
    assert rest[1]["operationDescription"] == {"indexes": [{"v": 2, **two[0]}]}
    assert rest[3]["operationDescription"] == {"indexes": [{"v": 2, **spec} for spec in two]}
    modify = rest[4]
    assert modify["operationDescription"] == {"validationLevel": "off"}
    assert modify["stateBeforeChange"] == {"collectionOptions": {"uuid": uuid}}
    assert rest[5]["operationDescription"] == {"indexes": [spec]}
    assert "nsType" not in create  # a MongoDB 8.1+ field; mongosim is 7.0


async def test_expanded_rename_drop_and_views(client: Client) -> None:
    db = client.ddl
    await db.a.insert_one({"_id": 1})
    await db.b.insert_one({"_id": 2})
    source, target = await _uuid(client, "ddl", "a"), await _uuid(client, "ddl", "b")
    async with (
        await db.watch(show_expanded_events=True) as whole,
        await db.b.watch(show_expanded_events=True) as on_target,
    ):
        await db.a.rename("b", dropTarget=True)
        await db.create_collection("v", viewOn="b", pipeline=[{"$match": {"x": 1}}])
        await db.drop_collection("v")
        await db.drop_collection("b")
        events = await _drain(whole)
        rename, invalidate = await on_target.next(), await on_target.next()
    assert [e["operationType"] for e in events] == ["rename", "create", "drop", "drop"]
    assert rename == events[0]  # the same event, seen from the target
    assert rename["collectionUUID"] == source
    assert rename["operationDescription"] == {
        "to": {"db": "ddl", "coll": "b"},
        "dropTarget": target,
    }
    assert invalidate["operationType"] == "invalidate"
    view_create, view_drop, drop = events[1:]
    assert view_create["ns"] == {"db": "ddl", "coll": "v"}
    assert view_create["operationDescription"] == {
        "viewOn": "b",
        "pipeline": [{"$match": {"x": 1}}],
    }
    assert "collectionUUID" not in view_create and "operationDescription" not in view_drop
    assert drop["ns"] == {"db": "ddl", "coll": "b"} and drop["collectionUUID"] == source
    assert "operationDescription" not in drop


async def test_views_are_listed_but_not_written_or_watched(client: Client) -> None:
    db = client.views
    await db.base.insert_one({"_id": 1})
    await db.create_collection("v", viewOn="base")
    infos = {info["name"]: info async for info in await db.list_collections()}
    assert infos["v"]["type"] == "view"
    assert infos["v"]["options"] == {"viewOn": "base", "pipeline": []}
    assert infos["base"]["info"]["uuid"] is not None
    with pytest.raises(OperationFailure) as written:
        await db.v.insert_one({"_id": 2})
    assert written.value.code == 166  # CommandNotSupportedOnView
    with pytest.raises(OperationFailure) as watched:
        await db.v.watch()
    assert watched.value.code == 166


def test_disambiguated_paths_follow_the_server() -> None:
    before = {"a": {"1": 1, "b.c": 1}, "arr": [{"1": 1}, {"x": 1}, 3], "0": {"01": 1}, "gone": {}}
    after = {"a": {"1": 2, "b.c": 2}, "arr": [{"1": 2}, {"x": 2}], "0": {"01": 2}}
    description = update_description(before, after)
    assert description["updatedFields"] == {
        "a.1": 2,
        "a.b.c": 2,
        "arr.0.1": 2,
        "arr.1.x": 2,
        "0.01": 2,
    }
    assert description["removedFields"] == ["gone"]
    assert description["truncatedArrays"] == [{"field": "arr", "newSize": 2}]
    # Numeric field names (past the first part) and dotted names are ambiguous;
    # array indices and leading-zero names are not.
    assert description["disambiguatedPaths"] == {
        "a.1": ["a", "1"],
        "a.b.c": ["a", "b.c"],
        "arr.0.1": ["arr", 0, "1"],
    }
    assert update_description({"x": [1]}, {"x": [2]})["disambiguatedPaths"] == {}
