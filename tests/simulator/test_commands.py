"""Every command mongosim answers, round-tripped through the real driver."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Timestamp
from pymongo import AsyncMongoClient, MongoClient, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

Client = AsyncMongoClient[dict[str, Any]]


async def test_handshake_and_diagnostics(client: Client) -> None:
    admin = client.admin
    hello = await admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"] == "rs0"
    assert hello["primary"] == hello["me"] == hello["hosts"][0]
    assert (await admin.command("isMaster"))["ismaster"] is True
    ping = await admin.command("ping")
    assert isinstance(ping["operationTime"], Timestamp)
    assert ping["$clusterTime"]["clusterTime"] == ping["operationTime"]
    build = await admin.command("buildInfo")
    assert build["versionArray"][:2] == [7, 0]
    assert (await admin.command("getCmdLineOpts"))["parsed"]["replication"]["replSet"] == "rs0"
    assert (await admin.command("getParameter", "*"))["enableTestCommands"] is True
    status = await admin.command("serverStatus")
    assert status["repl"]["setName"] == "rs0"
    assert status["connections"]["current"] >= 1
    await admin.command("endSessions", [])
    await admin.command("killAllSessions", [])
    host, port = hello["me"].split(":")
    assert await client.address == (host, int(port))


async def test_unknown_command_is_command_not_found(client: Client) -> None:
    with pytest.raises(OperationFailure) as caught:
        await client.admin.command("noSuchCommand")
    assert caught.value.code == 59


async def test_catalog_commands(client: Client) -> None:
    db = client.catalog
    await db.create_collection("a", changeStreamPreAndPostImages={"enabled": True})
    with pytest.raises(OperationFailure) as exists:
        await db.command("create", "a")
    assert exists.value.code == 48
    collections = {c["name"]: c async for c in await db.list_collections()}
    assert collections["a"]["options"] == {"changeStreamPreAndPostImages": {"enabled": True}}
    await db.command("collMod", "a", changeStreamPreAndPostImages={"enabled": False})
    info = await db.list_collections(filter={"name": "a"})
    assert (await info.to_list())[0]["options"]["changeStreamPreAndPostImages"] == {
        "enabled": False
    }
    with pytest.raises(OperationFailure) as missing:
        await db.command("collMod", "nope")
    assert missing.value.code == 26
    await db.a.insert_one({"_id": 1})
    assert "catalog" in await client.list_database_names()
    await db.a.rename("b")
    assert await db.list_collection_names() == ["b"]
    assert await db.b.find_one() == {"_id": 1}
    await db.c.insert_one({"_id": 2})
    with pytest.raises(OperationFailure) as target_exists:
        await db.b.rename("c")
    assert target_exists.value.code == 48
    await db.b.rename("c", dropTarget=True)
    assert await db.c.find_one() == {"_id": 1}
    await db.drop_collection("c")
    await db.drop_collection("never-existed")
    assert await db.list_collection_names() == []
    await db.d.insert_one({})
    await client.drop_database("catalog")
    assert "catalog" not in await client.list_database_names()


async def test_indexes(client: Client) -> None:
    coll = client.idx.people
    await coll.create_index("email", unique=True)
    names = [index["name"] async for index in await coll.list_indexes()]
    assert names == ["_id_", "email_1"]
    await coll.insert_one({"email": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"email": "a@example.com"})
    await coll.drop_index("email_1")
    await coll.insert_one({"email": "a@example.com"})


async def test_insert_update_delete(client: Client) -> None:
    coll = client.crud.items
    result = await coll.insert_many([{"_id": i, "n": i, "tags": ["x"]} for i in range(5)])
    assert result.inserted_ids == list(range(5))
    with pytest.raises(BulkWriteError) as dup:
        await coll.insert_many([{"_id": 10}, {"_id": 0}, {"_id": 11}])
    assert dup.value.details["nInserted"] == 1
    assert dup.value.details["writeErrors"][0]["code"] == 11000
    unordered = await coll.insert_many([{"_id": 12}, {"_id": 13}], ordered=False)
    assert len(unordered.inserted_ids) == 2

    one = await coll.update_one({"_id": 1}, {"$inc": {"n": 10}, "$push": {"tags": "y"}})
    assert (one.matched_count, one.modified_count) == (1, 1)
    many = await coll.update_many({"n": {"$lt": 5}}, {"$set": {"small": True}})
    assert (many.matched_count, many.modified_count) == (4, 4)
    noop = await coll.update_one({"_id": 0}, {"$set": {"small": True}})
    assert (noop.matched_count, noop.modified_count) == (1, 0)
    upsert = await coll.update_one({"_id": 99}, {"$set": {"n": 99}}, upsert=True)
    assert upsert.upserted_id == 99
    replaced = await coll.replace_one({"_id": 2}, {"replaced": True})
    assert replaced.modified_count == 1
    assert await coll.find_one({"_id": 2}) == {"_id": 2, "replaced": True}
    piped = await coll.update_one({"_id": 3}, [{"$set": {"tags": []}}])
    assert piped.modified_count == 1
    assert await coll.find_one({"_id": 1}) == {"_id": 1, "n": 11, "tags": ["x", "y"]}

    assert (await coll.delete_one({"small": True})).deleted_count == 1
    assert (await coll.delete_many({"_id": {"$gte": 10}})).deleted_count == 4
    assert sorted(await coll.distinct("_id")) == [1, 2, 3, 4]


async def test_find_and_modify(client: Client) -> None:
    coll = client.crud.fam
    await coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    before = await coll.find_one_and_update(
        {"n": {"$gte": 1}}, {"$inc": {"n": 5}}, sort=[("n", -1)]
    )
    assert before == {"_id": 2, "n": 2}
    after = await coll.find_one_and_update(
        {"_id": 1}, {"$set": {"x": 1}}, return_document=ReturnDocument.AFTER, projection={"x": 1}
    )
    assert after == {"_id": 1, "x": 1}
    created = await coll.find_one_and_replace(
        {"_id": 3}, {"n": 3}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert created == {"_id": 3, "n": 3}
    assert await coll.find_one_and_update({"_id": 42}, {"$set": {"n": 0}}) is None
    assert await coll.find_one_and_delete({"_id": 3}) == {"_id": 3, "n": 3}
    assert await coll.count_documents({}) == 2


async def test_cursors_batches_and_counts(client: Client) -> None:
    coll = client.crud.many
    await coll.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(250)])
    seen = [doc["_id"] async for doc in coll.find({}, batch_size=20).sort("_id", 1)]
    assert seen == list(range(250))
    limited = await coll.find({"even": True}, skip=10, limit=5).sort("_id", -1).to_list()
    assert [d["_id"] for d in limited] == [228, 226, 224, 222, 220]
    projected = await coll.find({"_id": 7}, {"even": 0}).to_list()
    assert projected == [{"_id": 7}]
    cursor = coll.find({}, batch_size=10)
    await cursor.next()
    await cursor.close()  # killCursors
    assert await coll.count_documents({"even": True}) == 125
    assert await coll.estimated_document_count() == 250
    pipeline: list[dict[str, Any]] = [
        {"$match": {"even": False}},
        {"$group": {"_id": None, "n": {"$sum": 1}}},
    ]
    assert await (await coll.aggregate(pipeline)).to_list() == [{"_id": None, "n": 125}]
    big = await (await coll.aggregate([{"$sort": {"_id": 1}}], batchSize=7)).to_list()
    assert len(big) == 250


async def test_get_more_on_unknown_cursor_is_cursor_not_found(client: Client) -> None:
    with pytest.raises(OperationFailure) as caught:
        await client.crud.command("getMore", 12345, collection="x")
    assert caught.value.code == 43


def test_synchronous_client_round_trip(sync_client: MongoClient[dict[str, Any]]) -> None:
    coll = sync_client.sync.items
    coll.insert_many([{"_id": i} for i in range(3)])
    coll.update_one({"_id": 1}, {"$set": {"x": 1}})
    coll.delete_one({"_id": 2})
    assert list(coll.find().sort("_id", 1)) == [{"_id": 0}, {"_id": 1, "x": 1}]
    with coll.watch() as stream:
        coll.insert_one({"_id": 5})
        change = stream.next()
    assert change["operationType"] == "insert"
    assert change["fullDocument"] == {"_id": 5}
