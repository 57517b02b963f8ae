"""Event handlers and the dispatcher that hands each batch of events to them.

The index updater is one handler; another (an audit log, a cache invalidator)
is registered beside it without touching it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from checkpoints.versions import VersionRecord
from core.events import DocumentEvent


@dataclass
class Outcome:
    """What handlers applied, committed by the caller atomically with the acknowledgement:
    version records by document key, counter increments, the last applied change,
    and the documents that cannot be indexed (key -> error), whose entries the
    caller moves to the dead-letter stream instead of acknowledging."""

    versions: dict[str, VersionRecord] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    last_applied: dict[str, Any] | None = None
    rejected: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Outcome | None) -> None:
        if other is None:
            return
        self.versions.update(other.versions)
        self.counts.update(other.counts)
        self.rejected.update(other.rejected)
        self.last_applied = other.last_applied or self.last_applied


def applied(event: DocumentEvent, now: datetime) -> dict[str, Any]:
    """The last-applied mark of *event* (what `status` shows and the check waits on)."""
    return {
        "event_id": event.event_id,
        "doc_key": event.key,
        "event_type": event.event_type,
        "version": event.version,
        "timestamp": event.timestamp.isoformat(),
        "applied_at": now.isoformat(),
    }


class EventHandler(Protocol):
    def can_handle(self, event: DocumentEvent) -> bool:
        """Whether this handler wants *event*; must not do I/O."""
        ...

    async def handle(self, event: DocumentEvent) -> Outcome | None:
        """Apply one event. Raising leaves the whole batch unacknowledged."""
        ...


@runtime_checkable
class BatchEventHandler(EventHandler, Protocol):
    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome | None:
        """Apply several events at once, in queue order; same contract as handle."""
        ...


class Dispatcher:
    """Hands every event to each registered handler that can handle it.

    Handlers run one after another in registration order; the first that
    raises stops the batch, which the caller must then not acknowledge."""

    def __init__(self, handlers: Sequence[EventHandler] = ()) -> None:
        self._handlers: list[EventHandler] = list(handlers)

    def register(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def dispatch(self, events: Sequence[DocumentEvent]) -> Outcome:
        """Run every handler on the events it wants; returns their merged outcomes."""
        outcome = Outcome()
        for handler in self._handlers:
            wanted = [event for event in events if handler.can_handle(event)]
            if not wanted:
                continue
            if isinstance(handler, BatchEventHandler):
                outcome.merge(await handler.handle_batch(wanted))
            else:
                for event in wanted:
                    outcome.merge(await handler.handle(event))
        return outcome
