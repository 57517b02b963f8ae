"""Stop producing while the queue is full, so memory does not grow with the backlog."""

from __future__ import annotations

import asyncio

import structlog

from checkpoints.queue import EventQueue
from core.retry import sleep_unless

log = structlog.get_logger("cdc.backpressure")


class Backpressure:
    """Holds a producer back while the queue's backlog exceeds *max_backlog*.

    A producer that waits before each write of at most *max_batch* events
    keeps the queue under ``max_backlog + max_batch`` entries."""

    def __init__(self, queue: EventQueue, max_backlog: int, *, poll: float = 0.2) -> None:
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be positive, got {max_backlog}")
        self._queue = queue
        self._max_backlog = max_backlog
        self._poll = poll

    async def has_room(self) -> bool:
        """Whether the backlog is at most max_backlog now (one read of the queue)."""
        return await self._queue.backlog() <= self._max_backlog

    async def wait(self, stop: asyncio.Event) -> bool:
        """Return True once the backlog is at most max_backlog, False as soon as *stop*
        is set while it is above."""
        backlog = await self._queue.backlog()
        if backlog <= self._max_backlog:
            return True
        log.warning("backpressure_on", backlog=backlog, max_backlog=self._max_backlog)
        while not stop.is_set():
            await sleep_unless(stop, self._poll)
            backlog = await self._queue.backlog()
            if backlog <= self._max_backlog:
                log.info("backpressure_off", backlog=backlog, max_backlog=self._max_backlog)
                return True
        return False
