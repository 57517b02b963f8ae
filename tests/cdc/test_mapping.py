"""Change documents to domain events, from hand-written changes shaped as pymongo returns them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from bson import Int64, ObjectId, Timestamp
from hypothesis import given
from hypothesis import strategies as st

from cdc.fields import TRUNCATED, IndexedText, MetadataFields, TextLimit, UserField
from cdc.mapping import ChangeMapper, CollectionChange, event_id_of, origin_of
from cdc.query import UnsupportedQuery
from core.errors import DocumentRejected
from core.events import (
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentUpdatedEvent,
    event_from_json,
)

OID = ObjectId("65a1b2c3d4e5f60718293a4b")
CLUSTER_TIME = Timestamp(1_700_000_000, 7)
WALL = datetime(2023, 11, 14, 22, 13, 20, 123000)  # noqa: DTZ001 - pymongo's naive UTC


def mapper(query: Mapping[str, Any] | None = None, user: str | None = "owner") -> ChangeMapper:
    return ChangeMapper(
        IndexedText(["title", "sections.text"]),
        MetadataFields(["lang", "meta.tags"]),
        UserField(user),
        query,
    )


def change(operation: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "_id": {"_data": f"8265{operation}01"},
        "operationType": operation,
        "clusterTime": CLUSTER_TIME,
        "wallTime": WALL,
        "ns": {"db": "app", "coll": "articles"},
        "documentKey": {"_id": OID},
    }
    body.update(extra)
    return body


DOC = {
    "_id": OID,
    "title": "Hello",
    "sections": [{"text": "one"}, {"text": "two"}],
    "lang": "en",
    "owner": "u1",
    "status": "published",
}


def test_insert_is_created_with_every_field() -> None:
    event = mapper()(change("insert", fullDocument=DOC))
    assert event == DocumentCreatedEvent(
        event_id="8265insert01",
        document_id=str(OID),
        namespace="app.articles",
        version=(1_700_000_000 << 32) | 7,
        timestamp=datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        user_id="u1",
        metadata={"lang": "en"},
        content="Hello\n\none\n\ntwo",
        source="app.articles",
    )
    assert isinstance(event, DocumentCreatedEvent)
    assert event_from_json(event.to_json()) == event


def test_timestamp_falls_back_to_cluster_time() -> None:
    body = change("insert", fullDocument=DOC)
    del body["wallTime"]
    event = mapper()(body)
    assert event is not None
    assert not isinstance(event, CollectionChange)
    assert event.timestamp == datetime.fromtimestamp(1_700_000_000, UTC)


def test_update_and_replace_are_updated_with_old_content() -> None:
    before = {**DOC, "title": "Old"}
    update = change(
        "update",
        fullDocument=DOC,
        fullDocumentBeforeChange=before,
        updateDescription={"updatedFields": {"title": "Hello"}, "removedFields": []},
    )
    event = mapper()(update)
    assert isinstance(event, DocumentUpdatedEvent)
    assert event.content == "Hello\n\none\n\ntwo"
    assert event.old_content == "Old\n\none\n\ntwo"
    assert (event.user_id, event.metadata) == ("u1", {"lang": "en"})
    replaced = mapper()(change("replace", fullDocument=DOC))
    assert isinstance(replaced, DocumentUpdatedEvent)
    assert replaced.old_content is None


def test_delete_is_deleted() -> None:
    event = mapper()(change("delete"))
    assert isinstance(event, DocumentDeletedEvent)
    assert (event.document_id, event.namespace, event.metadata) == (str(OID), "app.articles", {})


def test_update_of_a_document_deleted_since_is_deleted() -> None:
    update = change(
        "update", fullDocument=None, updateDescription={"updatedFields": {"title": "x"}}
    )
    event = mapper()(update)
    assert isinstance(event, DocumentDeletedEvent)
    assert event.metadata == {"reason": "deleted_since"}


def test_leaving_the_filter_is_a_delete_and_entering_it_an_update() -> None:
    published = mapper({"status": "published"})
    draft = {**DOC, "status": "draft"}
    leaving = published(
        change("update", fullDocument=draft, updateDescription={"updatedFields": {"status": "d"}})
    )
    assert isinstance(leaving, DocumentDeletedEvent)
    assert leaving.metadata == {"reason": "filtered_out"}
    entering = published(
        change("update", fullDocument=DOC, updateDescription={"updatedFields": {"status": "p"}})
    )
    assert isinstance(entering, DocumentUpdatedEvent)
    assert isinstance(published(change("replace", fullDocument=draft)), DocumentDeletedEvent)


def test_insert_outside_the_filter_is_irrelevant() -> None:
    assert (
        mapper({"status": "published"})(change("insert", fullDocument={**DOC, "status": "x"}))
        is None
    )


@pytest.mark.parametrize(
    ("updated", "removed", "truncated", "relevant"),
    [
        ({"title": "x"}, [], [], True),
        ({"views": 3}, [], [], False),
        ({}, ["views"], [], False),
        ({}, ["lang"], [], True),
        ({"sections.1.text": "x"}, [], [], True),
        ({"sections.1.title": "x"}, [], [], False),
        ({"sections.1": {"text": "x"}}, [], [], True),
        ({"sections": []}, [], [], True),
        ({"meta": {}}, [], [], True),
        ({"meta.tags.0": "x"}, [], [], True),
        ({"meta.author": "x"}, [], [], False),
        ({"owner": "u2"}, [], [], True),
        ({"status": "draft"}, [], [], True),
        ({}, [], [{"field": "sections", "newSize": 1}], True),
        ({}, [], [{"field": "history", "newSize": 1}], False),
        ({"titles": "x"}, [], [], False),
    ],
)
def test_update_relevance(
    updated: dict[str, Any], removed: list[str], truncated: list[Any], relevant: bool
) -> None:
    description = {
        "updatedFields": updated,
        "removedFields": removed,
        "truncatedArrays": truncated,
    }
    event = mapper({"status": "published"})(
        change("update", fullDocument=DOC, updateDescription=description)
    )
    assert (event is not None) == relevant


def test_disambiguated_paths_are_used_for_dotted_field_names() -> None:
    description = {
        "updatedFields": {"title.x": 1},
        "removedFields": [],
        "disambiguatedPaths": {"title.x": ["title.x"]},
    }
    assert mapper()(change("update", fullDocument=DOC, updateDescription=description)) is None


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"$expr": {"$gt": ["$views", 1]}}, "$expr"),
        ({"$where": "this.views > 1"}, "$where"),
        ({"$or": [{"a": 1}, {"$text": {"$search": "x"}}]}, "$text"),
        ({"loc": {"$near": [0, 0]}}, "$near"),
        ({"a": {"$gt": 1, "b": 2}}, "mixes operators and fields"),
        ({"a": {"$regex": "(", "$options": "i"}}, "not a valid pattern"),
        ({"a": {"$options": "i"}}, "$options needs $regex"),
        ({"a": {"$in": 3}}, "$in needs an array"),
        ({"$and": []}, "$and needs a non-empty array"),
    ],
)
def test_a_filter_the_sidecar_cannot_evaluate_is_refused_up_front(
    query: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedQuery, match=re.escape(named)):
        mapper(query)


def test_projection_covers_every_read_field_without_collisions() -> None:
    query = {"$or": [{"status": "published"}, {"meta": {"$exists": True}}]}
    assert mapper(query).projection() == [
        "lang",
        "meta",
        "owner",
        "sections.text",
        "status",
        "title",
    ]


@pytest.mark.parametrize("operation", ["drop", "rename", "dropDatabase", "invalidate"])
def test_collection_operations_are_not_documents(operation: str) -> None:
    body: dict[str, Any] = {
        "_id": {"_data": "82ff"},
        "operationType": operation,
        "clusterTime": CLUSTER_TIME,
    }
    if operation != "invalidate":
        body["ns"] = {"db": "app"} if operation == "dropDatabase" else {"db": "app", "coll": "a"}
    if operation == "rename":
        body["to"] = {"db": "app", "coll": "b"}
    result = mapper()(body)
    assert isinstance(result, CollectionChange)
    assert result.operation_type == operation
    assert result.token == {"_data": "82ff"}
    assert result.cluster_time == (1_700_000_000 << 32) | 7
    assert result.to == ("app.b" if operation == "rename" else None)
    expected = {"invalidate": "", "dropDatabase": "app"}.get(operation, "app.a")
    assert result.namespace == expected


_segments = st.sampled_from(["title", "sections", "text", "0", "1", "meta", "tags", "views"])
_paths = st.lists(_segments, min_size=1, max_size=4).map(".".join)


@given(_paths)
def test_a_change_is_irrelevant_only_when_no_read_value_can_differ(path: str) -> None:
    """Apply a $set at *path* to the document: if mapping says irrelevant, the
    text, metadata, user and filter outcome must be the same before and after."""
    subject = mapper({"status": "published"})
    updated = _set(DOC, path.split("."), "CHANGED")
    if updated is None:
        return
    description = {"updatedFields": {path: "CHANGED"}, "removedFields": []}
    event = subject(change("update", fullDocument=updated, updateDescription=description))
    if event is None:
        before = subject(change("replace", fullDocument=DOC))
        after = subject(change("replace", fullDocument=updated))
        assert isinstance(before, DocumentUpdatedEvent)
        assert isinstance(after, DocumentUpdatedEvent)
        assert (before.content, before.metadata, before.user_id) == (
            after.content,
            after.metadata,
            after.user_id,
        )


def _set(value: Any, parts: list[str], new: Any) -> Any:
    """*value* with MongoDB's $set semantics at *parts*, or None where $set would fail."""
    if not parts:
        return new
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        copy = dict(value)
        inner = _set(copy.get(head, {}), rest, new)
        if inner is None:
            return None
        copy[head] = inner
        return copy
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        items = list(value)
        inner = _set(items[int(head)], rest, new)
        if inner is None:
            return None
        items[int(head)] = inner
        return items
    return None


def limited(policy: Literal["truncate", "reject"]) -> ChangeMapper:
    return ChangeMapper(
        IndexedText(["title"]),
        MetadataFields(["lang"]),
        UserField(None),
        limit=TextLimit(100, policy),
    )


def test_text_over_the_limit_is_cut_and_its_rows_marked_with_the_full_length() -> None:
    long = {**DOC, "title": "x" * 250}
    for operation in ("insert", "update"):
        event = limited("truncate")(change(operation, fullDocument=long))
        assert isinstance(event, DocumentCreatedEvent | DocumentUpdatedEvent)
        assert event.content == "x" * 100
        assert event.metadata == {"lang": "en", TRUNCATED: 250}


def test_text_at_the_limit_is_indexed_whole_and_unmarked() -> None:
    event = limited("truncate")(change("insert", fullDocument={**DOC, "title": "y" * 100}))
    assert isinstance(event, DocumentCreatedEvent)
    assert event.content == "y" * 100 and event.metadata == {"lang": "en"}


def test_text_over_the_limit_is_rejected_under_the_reject_policy() -> None:
    with pytest.raises(DocumentRejected, match="250 characters, over the limit of 100"):
        limited("reject")(change("insert", fullDocument={**DOC, "title": "x" * 250}))


def test_an_old_text_over_the_limit_is_cut_too() -> None:
    before = {**DOC, "title": "o" * 250}
    event = limited("reject")(change("update", fullDocument=DOC, fullDocumentBeforeChange=before))
    assert isinstance(event, DocumentUpdatedEvent)
    assert event.old_content == "o" * 100


def test_a_rejected_document_becomes_the_delete_that_takes_it_out() -> None:
    origin = origin_of(change("insert", fullDocument=DOC))
    event = mapper().rejected(origin, DocumentRejected("text field 'title' holds a bool"))
    assert event == DocumentDeletedEvent(
        event_id="8265insert01",
        document_id=str(OID),
        namespace="app.articles",
        version=(1_700_000_000 << 32) | 7,
        timestamp=datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        metadata={"reason": "rejected", "error": "text field 'title' holds a bool"},
    )


@pytest.fixture
def local_time_in_shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+8 for the test, then restored."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("local_time_in_shanghai")
def test_an_aware_wall_time_is_converted_to_utc() -> None:
    plus_eight = timezone(timedelta(hours=8))
    body = change("delete", wallTime=datetime(2023, 11, 15, 6, 13, 20, tzinfo=plus_eight))
    event = mapper()(body)
    assert isinstance(event, DocumentDeletedEvent)
    assert event.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_a_change_without_a_cluster_time_has_none() -> None:
    result = mapper()({"_id": {"_data": "82ff"}, "operationType": "invalidate"})
    assert isinstance(result, CollectionChange) and result.cluster_time is None


def test_a_token_without_string_data_is_named_by_its_canonical_json() -> None:
    assert event_id_of({"_data": "8265abc"}) == "8265abc"
    assert (
        event_id_of({"_data": 7, "b": Int64(1)})
        == '{"_data": {"$numberInt": "7"}, "b": {"$numberLong": "1"}}'
    )
