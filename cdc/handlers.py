"""Event handlers and the dispatcher that hands each batch of events to them.

The index updater is one handler; another (an audit log, a cache invalidator)
is registered beside it without touching it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cdc.events import DocumentEvent


class EventHandler(Protocol):
    def can_handle(self, event: DocumentEvent) -> bool:
        """Whether this handler wants *event*; must not do I/O."""
        ...

    async def handle(self, event: DocumentEvent) -> None:
        """Apply one event. Raising leaves the whole batch unacknowledged."""
        ...


@runtime_checkable
class BatchEventHandler(EventHandler, Protocol):
    async def handle_batch(self, events: Sequence[DocumentEvent]) -> None:
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

    async def dispatch(self, events: Sequence[DocumentEvent]) -> None:
        for handler in self._handlers:
            wanted = [event for event in events if handler.can_handle(event)]
            if not wanted:
                continue
            if isinstance(handler, BatchEventHandler):
                await handler.handle_batch(wanted)
            else:
                for event in wanted:
                    await handler.handle(event)
