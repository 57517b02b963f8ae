"""Stopping capture for an operator command and starting it again afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CaptureSwitch:
    """The supervisor runs each life of capture inside :meth:`running`; an operator
    command that moves the position runs inside :meth:`paused`, which ends the
    current life (capture queues the batch in hand and saves its position, as on any
    stop), waits for it to end, and holds the next one back until the block exits.
    The next life reads the position again, so it starts where the command put it."""

    def __init__(self) -> None:
        self._life_stop: asyncio.Event | None = None
        self._life_ended = asyncio.Event()
        self._life_ended.set()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def running(self, stop: asyncio.Event) -> AsyncIterator[asyncio.Event]:
        """One life of capture: yields the event that ends it, set on *stop* or by a
        pause. Waits first while a command holds capture paused."""
        async with self._lock:
            life_stop = asyncio.Event()
            self._life_stop, self._life_ended = life_stop, asyncio.Event()
        relay = asyncio.create_task(_relay(stop, life_stop))
        try:
            yield life_stop
        finally:
            relay.cancel()
            self._life_stop = None
            self._life_ended.set()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Capture stopped for the duration of the block; one command at a time."""
        async with self._lock:
            if self._life_stop is not None:
                self._life_stop.set()
            await self._life_ended.wait()
            yield


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
