"""Changes to whole collections as queue events: which drops, renames and dropDatabases
reach the index of a watch scope, with which identity, and how they survive the queue."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from cdc.catalog import catalog_events
from cdc.mapping import CollectionChange
from cdc.namespaces import WatchScope
from core.events import (
    COLLECTION_DOCUMENT,
    CollectionDroppedEvent,
    CollectionRenamedEvent,
    DocumentEvent,
    event_from_json,
    is_collection_event,
)

SECONDS, INC = 1_700_000_000, 7
VERSION = (SECONDS << 32) | INC
WHEN = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # SECONDS as a UTC date
TOKEN = {"_data": "8265538A00000000072B0229296E04"}

ARTICLES = WatchScope("app", ["articles"])
TWO = WatchScope("app", ["articles", "notes"])
EVERYTHING = WatchScope("app")


def change(
    operation: str,
    namespace: str,
    to: str | None = None,
    *,
    token: Mapping[str, Any] = TOKEN,
    cluster_time: int | None = VERSION,
) -> CollectionChange:
    return CollectionChange(
        operation_type=operation,
        namespace=namespace,
        to=to,
        token=token,
        cluster_time=cluster_time,
    )


def described(events: list[DocumentEvent]) -> list[tuple[Any, ...]]:
    """Everything an event carries, so a test compares all of it at once."""
    return [
        (
            type(e).__name__,
            e.event_type,
            e.event_id,
            e.namespace,
            e.document_id,
            e.version,
            e.timestamp,
            e.metadata,
            getattr(e, "to", None),
            getattr(e, "backfill", None),
        )
        for e in events
    ]


def dropped(namespace: str, event_id: str = TOKEN["_data"], **metadata: str) -> tuple[Any, ...]:
    return (
        "CollectionDroppedEvent",
        "dropped",
        event_id,
        namespace,
        COLLECTION_DOCUMENT,
        VERSION,
        WHEN,
        metadata,
        None,
        None,
    )


def renamed(namespace: str, to: str, *, backfill: bool) -> tuple[Any, ...]:
    return (
        "CollectionRenamedEvent",
        "renamed",
        TOKEN["_data"],
        namespace,
        COLLECTION_DOCUMENT,
        VERSION,
        WHEN,
        {},
        to,
        backfill,
    )


@pytest.mark.parametrize("scope", [ARTICLES, TWO, EVERYTHING], ids=lambda s: s.describe())
def test_dropping_a_watched_collection_empties_it(scope: WatchScope) -> None:
    events = catalog_events(change("drop", "app.articles"), scope)
    assert described(events) == [dropped("app.articles")]
    assert all(is_collection_event(e) for e in events)


@pytest.mark.parametrize(
    ("scope", "namespace"),
    [
        (ARTICLES, "app.notes"),
        (ARTICLES, "app.articles2"),
        (TWO, "app.other"),
        (EVERYTHING, "other.articles"),
        (EVERYTHING, "app2.articles"),
        (EVERYTHING, "app.system.views"),
        (EVERYTHING, "app.system.buckets.metrics"),
    ],
)
def test_dropping_a_collection_that_is_not_watched_gives_nothing(
    scope: WatchScope, namespace: str
) -> None:
    assert catalog_events(change("drop", namespace), scope) == []


@pytest.mark.parametrize(
    ("scope", "source", "to"),
    [
        (TWO, "app.articles", "app.notes"),
        (EVERYTHING, "app.articles", "app.archive"),
    ],
)
def test_a_rename_inside_the_watched_set_moves_the_vectors(
    scope: WatchScope, source: str, to: str
) -> None:
    events = catalog_events(change("rename", source, to), scope)
    assert described(events) == [renamed(source, to, backfill=False)]
    assert isinstance(events[0], CollectionRenamedEvent)


@pytest.mark.parametrize(
    ("scope", "source", "to"),
    [
        (ARTICLES, "app.staging", "app.articles"),
        (TWO, "app.staging", "app.notes"),
        (ARTICLES, "other.articles", "app.articles"),
        (EVERYTHING, "app.system.tmp", "app.fresh"),
    ],
)
def test_a_rename_into_the_watched_set_asks_for_a_backfill(
    scope: WatchScope, source: str, to: str
) -> None:
    events = catalog_events(change("rename", source, to), scope)
    assert described(events) == [renamed(source, to, backfill=True)]


@pytest.mark.parametrize(
    ("scope", "source", "to"),
    [
        (ARTICLES, "app.articles", "app.articles_old"),
        (TWO, "app.notes", "app.archive"),
        (EVERYTHING, "app.articles", "other.articles"),
        (ARTICLES, "app.articles", "app2.articles"),
    ],
)
def test_a_rename_out_of_the_watched_set_is_a_drop_that_says_where_it_went(
    scope: WatchScope, source: str, to: str
) -> None:
    events = catalog_events(change("rename", source, to), scope)
    assert described(events) == [dropped(source, to=to)]
    assert isinstance(events[0], CollectionDroppedEvent)


@pytest.mark.parametrize(
    ("scope", "source", "to"),
    [
        (ARTICLES, "app.staging", "app.staging2"),
        (TWO, "app.a", "app.b"),
        (EVERYTHING, "other.a", "other.b"),
        (EVERYTHING, "other.a", "third.a"),
        (ARTICLES, "app.staging", "other.articles"),
        (EVERYTHING, "app.system.a", "app.system.b"),
    ],
)
def test_a_rename_that_never_touches_the_watched_set_gives_nothing(
    scope: WatchScope, source: str, to: str
) -> None:
    assert catalog_events(change("rename", source, to), scope) == []


def test_a_rename_without_a_target_gives_nothing() -> None:
    assert catalog_events(change("rename", "app.articles", None), ARTICLES) == []


def test_dropping_the_database_drops_each_watched_collection_with_its_own_event_id() -> None:
    events = catalog_events(change("dropDatabase", "app"), TWO)
    assert described(events) == [
        dropped("app.articles", TOKEN["_data"] + ":articles"),
        dropped("app.notes", TOKEN["_data"] + ":notes"),
    ]
    assert len({e.event_id for e in events}) == 2
    # Each has its own key, so the scheduler never takes them for one document's changes.
    assert len({e.key for e in events}) == 2


def test_dropping_the_database_of_an_all_collections_scope_is_one_event_for_the_database() -> None:
    events = catalog_events(change("dropDatabase", "app"), EVERYTHING)
    assert described(events) == [dropped("app")]


@pytest.mark.parametrize("scope", [ARTICLES, TWO, EVERYTHING], ids=lambda s: s.describe())
@pytest.mark.parametrize("database", ["other", "app2", "ap"])
def test_dropping_another_database_gives_nothing(scope: WatchScope, database: str) -> None:
    assert catalog_events(change("dropDatabase", database), scope) == []


@pytest.mark.parametrize(
    "operation", ["invalidate", "create", "createIndexes", "dropIndexes", "modify", "shardThing"]
)
@pytest.mark.parametrize("scope", [ARTICLES, EVERYTHING], ids=lambda s: s.describe())
def test_operations_that_leave_the_documents_as_they_are_give_nothing(
    operation: str, scope: WatchScope
) -> None:
    assert catalog_events(change(operation, "app.articles", "app.articles"), scope) == []


@pytest.mark.parametrize(
    ("operation", "namespace", "to"),
    [
        ("drop", "app.articles", None),
        ("rename", "app.articles", "app.notes"),
        ("dropDatabase", "app", None),
    ],
)
def test_a_change_without_a_cluster_time_gives_nothing(
    operation: str, namespace: str, to: str | None
) -> None:
    assert catalog_events(change(operation, namespace, to, cluster_time=None), TWO) == []


def test_the_version_and_timestamp_come_from_the_cluster_time() -> None:
    later = ((SECONDS + 3600) << 32) | 1
    (event,) = catalog_events(change("drop", "app.articles", cluster_time=later), ARTICLES)
    assert event.version == later
    assert event.timestamp == datetime(2023, 11, 14, 23, 13, 20, tzinfo=UTC)
    assert event.timestamp.utcoffset() is not None


def test_a_token_without_string_data_still_names_the_event_stably() -> None:
    token = {"_data": b"\x82\x65", "extra": 1}
    first = catalog_events(change("drop", "app.articles", token=token), ARTICLES)
    again = catalog_events(change("drop", "app.articles", token=dict(token)), ARTICLES)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first[0].event_id and first[0].event_id != TOKEN["_data"]


def test_replaying_a_change_gives_the_same_events() -> None:
    first = catalog_events(change("dropDatabase", "app"), TWO)
    again = catalog_events(change("dropDatabase", "app"), TWO)
    assert described(first) == described(again)


@pytest.mark.parametrize(
    "event",
    [
        CollectionDroppedEvent(
            event_id="82ab", namespace="app.articles", version=VERSION, timestamp=WHEN
        ),
        CollectionDroppedEvent(
            event_id="82ab",
            namespace="app.articles",
            version=VERSION,
            timestamp=WHEN,
            metadata={"to": "app.elsewhere"},
        ),
        CollectionDroppedEvent(event_id="82ab:notes", namespace="app", version=1, timestamp=WHEN),
        CollectionRenamedEvent(
            event_id="82cd", namespace="app.a", version=VERSION, timestamp=WHEN, to="app.b"
        ),
        CollectionRenamedEvent(
            event_id="82cd",
            namespace="other.a",
            version=VERSION,
            timestamp=WHEN,
            to="app.b",
            backfill=True,
        ),
    ],
    ids=["dropped", "renamed-out", "database", "renamed", "renamed-in"],
)
def test_collection_events_round_trip_through_json(event: DocumentEvent) -> None:
    decoded = event_from_json(event.to_json())
    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.document_id == COLLECTION_DOCUMENT and is_collection_event(decoded)


def test_events_made_by_catalog_events_round_trip_through_json() -> None:
    changes = [
        (change("drop", "app.articles"), TWO),
        (change("rename", "app.articles", "app.notes"), TWO),
        (change("rename", "app.staging", "app.notes"), TWO),
        (change("rename", "app.notes", "app.old"), TWO),
        (change("dropDatabase", "app"), TWO),
        (change("dropDatabase", "app"), EVERYTHING),
    ]
    events = [event for c, scope in changes for event in catalog_events(c, scope)]
    assert len(events) == 7
    decoded = [event_from_json(event.to_json()) for event in events]
    assert decoded == events
    assert [type(e) for e in decoded] == [type(e) for e in events]


@pytest.mark.parametrize(
    ("scope", "namespace", "expected"),
    [
        (ARTICLES, "app.articles", True),
        (ARTICLES, "app.notes", False),
        (ARTICLES, "app.articles2", False),
        (ARTICLES, "app.article", False),
        (ARTICLES, "other.articles", False),
        (ARTICLES, "app2.articles", False),
        (ARTICLES, "app", False),
        (TWO, "app.notes", True),
        (TWO, "app.other", False),
        (EVERYTHING, "app.anything", True),
        (EVERYTHING, "app.a.b", True),
        (EVERYTHING, "app", False),
        (EVERYTHING, "app.", False),
        (EVERYTHING, "app2.anything", False),
        (EVERYTHING, "ap.p", False),
        (EVERYTHING, "app.system.profile", False),
        (EVERYTHING, "app.system.views", False),
        (EVERYTHING, "app.systematic", True),
        (EVERYTHING, "", False),
    ],
)
def test_which_namespaces_a_scope_watches(
    scope: WatchScope, namespace: str, expected: bool
) -> None:
    assert scope.watches(namespace) is expected
