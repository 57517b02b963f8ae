"""The dispatcher: a second handler is added beside the index updater without touching it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from core.events import DocumentDeletedEvent, DocumentEvent, DocumentUpdatedEvent
from indexer.handlers import Dispatcher, Outcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def updated(doc: str) -> DocumentEvent:
    return DocumentUpdatedEvent(
        event_id=doc, document_id=doc, namespace="app.docs", version=1, timestamp=NOW,
        content="text",
    )


def deleted(doc: str) -> DocumentEvent:
    return DocumentDeletedEvent(
        event_id=doc, document_id=doc, namespace="app.docs", version=2, timestamp=NOW
    )


class BatchCounter:
    """A batch handler that counts what it indexed, like the index updater."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def can_handle(self, event: DocumentEvent) -> bool:
        return True

    async def handle(self, event: DocumentEvent) -> Outcome:
        return await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        self.batches.append([e.document_id for e in events])
        outcome = Outcome()
        outcome.counts["documents_indexed"] += len(events)
        return outcome


class DeletionAudit:
    """A single-event handler interested only in deletes (an audit log, say)."""

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[str] = []
        self.fail = fail

    def can_handle(self, event: DocumentEvent) -> bool:
        return event.event_type == "deleted"

    async def handle(self, event: DocumentEvent) -> None:
        if self.fail:
            raise RuntimeError("audit log unavailable")
        self.seen.append(event.document_id)


async def test_each_handler_gets_what_it_can_handle_and_outcomes_merge() -> None:
    indexer, audit = BatchCounter(), DeletionAudit()
    dispatcher = Dispatcher([indexer])
    dispatcher.register(audit)

    outcome = await dispatcher.dispatch([updated("a"), deleted("b"), updated("c")])

    assert indexer.batches == [["a", "b", "c"]], "a batch handler gets one call per batch"
    assert audit.seen == ["b"]
    assert outcome.counts["documents_indexed"] == 3


async def test_a_failing_handler_fails_the_dispatch() -> None:
    dispatcher = Dispatcher([BatchCounter(), DeletionAudit(fail=True)])
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        await dispatcher.dispatch([deleted("x")])


async def test_handlers_with_nothing_to_do_are_not_called() -> None:
    audit = DeletionAudit(fail=True)
    outcome = await Dispatcher([audit]).dispatch([updated("a")])
    assert outcome.versions == {} and not outcome.counts
