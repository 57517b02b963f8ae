"""The priority query (CDC_PRIORITY_FILTER): which changes are urgent, what the stream
must carry to decide it, and capture queueing urgent changes in the priority lane."""

from __future__ import annotations

from typing import Any, cast

import pytest
from bson.timestamp import Timestamp

from cdc.fields import IndexedText, MetadataFields, UserField
from cdc.mapping import ChangeMapper
from core.errors import ConfigurationError
from core.events import event_from_json
from sidecar.settings import load_settings
from tests.cdc.capture_support import DATABASE, PipelineParts
from tests.cdc.test_capture import Client, make_capture, queued, running

VIP = {"tier": "gold"}


def mapper(priority: dict[str, Any] | None = VIP) -> ChangeMapper:
    return ChangeMapper(
        IndexedText(["title"]), MetadataFields([]), UserField(None), None, None, priority
    )


def change(operation: str, document: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "_id": {"_data": "82AB"},
        "operationType": operation,
        "clusterTime": Timestamp(1_700_000_000, 1),
        "ns": {"db": DATABASE, "coll": "articles"},
        "documentKey": {"_id": 1},
        **extra,
    }
    if document is not None:
        body["fullDocument"] = document
    return body


def test_a_change_is_urgent_when_the_document_it_shows_matches_the_priority_query() -> None:
    vip = {"_id": 1, "title": "t", "tier": "gold"}
    assert mapper().urgent(change("insert", vip))
    assert not mapper().urgent(change("insert", {**vip, "tier": "silver"}))
    assert not mapper().urgent(change("delete", None))  # a delete shows no document
    assert not mapper(None).urgent(change("insert", vip))


def test_the_stream_carries_the_priority_fields_without_making_them_relevant() -> None:
    assert "tier" in cast(list[str], mapper().projection())
    assert "tier" not in cast(list[str], mapper(None).projection())
    tier_only = change(
        "update",
        {"_id": 1, "title": "t", "tier": "gold"},
        updateDescription={"updatedFields": {"tier": "gold"}, "removedFields": []},
    )
    assert not mapper().relevant(tier_only)  # the indexed text and metadata did not change


def test_a_priority_query_without_the_version_guard_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="CDC_PRIORITY_FILTER needs CDC_INDEX_VERSION"):
        load_settings(priority_filter='{"tier": "gold"}', index_version_enabled=False)
    with pytest.raises(ConfigurationError, match="CDC_PRIORITY_FILTER: not valid JSON"):
        load_settings(priority_filter='{"tier": ')
    assert load_settings(priority_filter='{"tier": "gold"}').priority_filter == VIP


async def test_capture_queues_urgent_changes_in_the_priority_lane(
    mongo: Client, parts: PipelineParts
) -> None:
    articles = mongo[DATABASE]["articles"]
    async with running(make_capture(mongo, parts, mapper=mapper()), parts):
        await articles.insert_one({"_id": 1, "title": "plain"})
        await articles.insert_one({"_id": 2, "title": "gold", "tier": "gold"})
        await articles.update_one(
            {"_id": 1}, {"$set": {"title": "plain, now gold", "tier": "gold"}}
        )
        await queued(parts, 3)
    urgent = [
        event_from_json(fields[b"event"])
        for _, fields in await parts.redis.xrange(parts.keys.priority)  # type: ignore[misc]
    ]
    assert [(e.event_type, e.document_id) for e in urgent] == [
        ("created", "$num:2"),
        ("updated", "$num:1"),
    ]
    assert [e.document_id for e in await parts.events()] == ["$num:1"]
