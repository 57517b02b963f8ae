"""Queue entries of domain events: what to_json writes and event_from_json reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from core.events import (
    CollectionRenamedEvent,
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentEvent,
    DocumentUpdatedEvent,
    event_from_json,
)

WHEN = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def created(**changes: object) -> DocumentCreatedEvent:
    fields: dict[str, object] = {
        "event_id": "8263A0",
        "document_id": "doc-1",
        "namespace": "db.articles",
        "version": (1_764_583_200 << 32) | 7,
        "timestamp": WHEN,
        "content": '第一段\n\n"quoted" \\ back',
        "source": "db.articles",
        "user_id": "用户-1",
        "metadata": {"lang": "zh", "tags": ["a", "b"], "score": 0.5, "n": None},
    }
    fields.update(changes)
    return DocumentCreatedEvent(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        created(),
        created(timestamp=WHEN.replace(microsecond=123_456)),
        DocumentUpdatedEvent(
            event_id="e",
            document_id="$num:1",
            namespace="db.c",
            version=2,
            timestamp=WHEN,
            content="new",
            old_content="old",
        ),
        DocumentDeletedEvent(
            event_id="e", document_id="d", namespace="db.c", version=3, timestamp=WHEN
        ),
        CollectionRenamedEvent(
            event_id="e", namespace="db.old", to="db.new", version=4, timestamp=WHEN, backfill=True
        ),
    ],
    ids=["created", "microseconds", "updated", "deleted", "renamed"],
)
def test_every_event_reads_back_as_it_was_written(event: DocumentEvent) -> None:
    entry = event.to_json()
    assert event_from_json(entry) == event
    assert "\n" not in entry, "the queue script splits its argument on newlines"
    assert entry.startswith(f'{{"event_type":"{event.event_type}",')


def test_an_entry_is_the_json_of_its_fields_with_text_unescaped() -> None:
    entry = created().to_json()
    assert "第一段" in entry and "用户-1" in entry
    assert json.loads(entry) == {
        "event_type": "created",
        "event_id": "8263A0",
        "document_id": "doc-1",
        "namespace": "db.articles",
        "version": (1_764_583_200 << 32) | 7,
        "timestamp": "2026-12-01T10:00:00+00:00",
        "user_id": "用户-1",
        "metadata": {"lang": "zh", "tags": ["a", "b"], "score": 0.5, "n": None},
        "content": '第一段\n\n"quoted" \\ back',
        "source": "db.articles",
    }


def test_a_timestamp_at_another_offset_reads_back_as_the_same_instant_in_utc() -> None:
    east = WHEN.astimezone(timezone(timedelta(hours=8)))
    decoded = event_from_json(created(timestamp=east).to_json())
    assert decoded.timestamp == WHEN
    assert decoded.timestamp.tzinfo == UTC


def test_a_value_json_has_no_type_for_is_written_as_its_text() -> None:
    entry = created(metadata={"price": Decimal("1.10")}).to_json()
    assert json.loads(entry)["metadata"] == {"price": "1.10"}
