"""Read a change stream ahead of its consumer, so the server prepares the next batch
while the one before it is mapped and queued."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream

from cdc.namespaces import Document

Token = Mapping[str, Any]


class Read:
    """One result of ``try_next``: the change (None when the server had none within
    its await time) and a resume token right after it: the position to save once
    everything up to and including this read is queued."""

    __slots__ = ("change", "token")

    def __init__(self, change: Document | None, token: Token | None) -> None:
        self.change = change
        self.token = token


class ReadAhead:
    """Reads *stream* on a task of its own into a buffer of at most *limit* reads.

    Use as ``async with ReadAhead(stream, limit) as ahead``: leaving cancels the
    reading (the driver then closes the stream). Reads come out in stream order;
    an error of the stream is raised by :meth:`take` after the reads before it.
    Reading stops after an invalidate, which ends the stream."""

    def __init__(self, stream: AsyncChangeStream[Document], limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        self._stream = stream
        self._limit = limit
        self._reads: list[Read] = []
        self._error: Exception | None = None
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadAhead:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def take(self, most: int) -> list[Read]:
        """The reads in hand, at most *most* of them, oldest first, waiting for one when
        there is none (at most about the stream's await time).

        Raises the error that ended the reading, once the reads before it are taken."""
        while not self._reads:
            if self._error is not None:
                raise self._error
            self._arrived.clear()
            await self._arrived.wait()
        taken, self._reads = self._reads[:most], self._reads[most:]
        self._room.set()
        return taken

    async def _read(self) -> None:
        stream = self._stream
        try:
            while True:
                while len(self._reads) >= self._limit:
                    self._room.clear()
                    await self._room.wait()
                change = await stream.try_next()
                if change is None:
                    # The batch's end: the server's postBatchResumeToken, which may be
                    # past changes its pipeline filtered out.
                    self._reads.append(Read(None, stream.resume_token))
                else:
                    # The change's own token: the driver's resume_token would deep-copy
                    # it for every change, and is never behind it by more than the
                    # changes the server filtered out, which the next empty read passes.
                    self._reads.append(Read(change, change["_id"]))
                self._arrived.set()
                if change is not None and change.get("operationType") == "invalidate":
                    return
        except Exception as error:  # noqa: BLE001 - handed to the consumer, raised by take()
            self._error = error
            self._arrived.set()
