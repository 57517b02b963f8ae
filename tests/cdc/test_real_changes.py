"""Mapping the change documents mongosim produces for every operation type, through the driver."""

from __future__ import annotations

from typing import Any

from capture_support import DATABASE, article_mapper
from pymongo import AsyncMongoClient

from cdc.fields import document_id
from cdc.mapping import CollectionChange
from cdc.namespaces import WatchScope
from core.events import DocumentCreatedEvent, DocumentDeletedEvent, DocumentUpdatedEvent

Client = AsyncMongoClient[dict[str, Any]]


async def collect(stream: Any, count: int) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for _ in range(200):
        change = await stream.try_next()
        if change is not None:
            changes.append(change)
            if len(changes) == count:
                return changes
    raise AssertionError(f"got {len(changes)} of {count} changes")


async def test_document_operations(mongo: Client) -> None:
    database = mongo[DATABASE]
    await database.create_collection("articles", changeStreamPreAndPostImages={"enabled": True})
    articles = database["articles"]
    mapper = article_mapper({"status": "published"})
    pipeline = WatchScope(DATABASE, ["articles"]).pipeline(mapper.projection(), pre_images=True)
    async with await articles.watch(
        pipeline,
        # Point-in-time post-images: updateLookup would read the document as
        # it is when the change is read, after all of these writes.
        full_document="required",
        full_document_before_change="whenAvailable",
        max_await_time_ms=50,
    ) as stream:
        doc = {
            "_id": 1,
            "title": "Hello",
            "sections": [{"text": "a"}, {"text": "b"}],
            "status": "published",
            "lang": "en",
            "owner": "u1",
            "big": "irrelevant " * 1000,
        }
        await articles.insert_one(doc)
        await articles.update_one({"_id": 1}, {"$set": {"sections.1.text": "B"}})
        await articles.update_one({"_id": 1}, {"$inc": {"views": 1}})
        await articles.update_one({"_id": 1}, {"$set": {"status": "draft"}})
        await articles.replace_one({"_id": 1}, {**doc, "title": "Replaced"})
        await articles.delete_one({"_id": 1})
        await articles.insert_one({"_id": 2, "title": "draft", "status": "draft"})
        # None of the projected fields: the projected document must still be there.
        await articles.insert_one({"_id": 3, "status": "published", "other": 1})
        await articles.update_one({"_id": 3}, {"$unset": {"status": ""}})
        changes = await collect(stream, 9)

    assert all("big" not in (c.get("fullDocument") or {}) for c in changes)
    created, edited, views, unpublished, replaced, deleted, draft, bare, unset = map(
        mapper, changes
    )
    assert isinstance(created, DocumentCreatedEvent)
    assert (created.content, created.user_id, created.metadata, created.source) == (
        "Hello\n\na\n\nb",
        "u1",
        {"lang": "en"},
        "app.articles",
    )
    assert isinstance(edited, DocumentUpdatedEvent)
    assert (edited.content, edited.old_content) == ("Hello\n\na\n\nB", "Hello\n\na\n\nb")
    assert views is None
    assert isinstance(unpublished, DocumentDeletedEvent)
    assert unpublished.metadata == {"reason": "filtered_out"}
    assert isinstance(replaced, DocumentUpdatedEvent) and replaced.content.startswith("Replaced")
    assert isinstance(deleted, DocumentDeletedEvent) and deleted.metadata == {}
    assert draft is None
    assert isinstance(bare, DocumentCreatedEvent) and bare.content == ""
    assert isinstance(unset, DocumentDeletedEvent)
    assert unset.metadata == {"reason": "filtered_out"}
    events = [created, edited, unpublished, replaced, deleted]
    assert all(e.document_id == document_id(1) for e in events if e is not None)
    assert [c["_id"]["_data"] for c in changes[:2]] == [created.event_id, edited.event_id]


async def test_update_of_a_document_deleted_before_the_lookup(mongo: Client) -> None:
    articles = mongo[DATABASE]["articles"]
    async with await articles.watch(full_document="updateLookup", max_await_time_ms=50) as stream:
        await articles.insert_one({"_id": "x", "title": "a"})
        await articles.update_one({"_id": "x"}, {"$set": {"title": "b"}})
        await articles.delete_one({"_id": "x"})
        changes = await collect(stream, 3)
    update = article_mapper()(changes[1])
    assert isinstance(update, DocumentDeletedEvent)
    assert update.metadata == {"reason": "deleted_since"}


async def test_collection_operations(mongo: Client) -> None:
    database = mongo[DATABASE]
    await database["a"].insert_one({"_id": 1})
    await database["c"].insert_one({"_id": 1})
    mapper = article_mapper()
    async with await database.watch(max_await_time_ms=50) as stream:
        await database["a"].rename("b")
        await database["b"].drop()
        await mongo.drop_database(DATABASE)
        changes = await collect(stream, 5)
    results = [mapper(change) for change in changes]
    assert all(isinstance(r, CollectionChange) for r in results)
    kinds = [
        (r.operation_type, r.namespace, r.to) for r in results if isinstance(r, CollectionChange)
    ]
    assert kinds == [
        ("rename", "app.a", "app.b"),
        ("drop", "app.b", None),
        ("drop", "app.c", None),
        ("dropDatabase", "app", None),
        ("invalidate", "", None),
    ]
