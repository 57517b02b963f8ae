"""Server-side cursors: the registry getMore/killCursors use, and plain result cursors."""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

import bson
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from mongosim.errors import CommandError

DEFAULT_FIRST_BATCH = 101
# The server caps every batch near the 16 MB document limit so that a reply
# stays under maxMessageSizeBytes whatever batch size was asked for.
MAX_BATCH_BYTES = 16 * 1024 * 1024 - 16 * 1024
IDLE_TIMEOUT_SECONDS = 600.0


class Cursor(Protocol):
    """What getMore needs from any cursor."""

    namespace: str
    exhausted: bool
    last_used: float

    async def next_batch(self, batch_size: int | None, max_time: float) -> tuple[list[Any], bool]:
        """The next batch and whether the cursor is now exhausted."""
        ...


class ResultCursor:
    """A cursor over a result computed up front (find, plain aggregate, listings)."""

    def __init__(self, namespace: str, documents: list[Any]) -> None:
        self.namespace = namespace
        self.exhausted = not documents
        self.last_used = time.monotonic()
        self._documents = documents
        self._offset = 0

    def take(self, batch_size: int | None) -> list[Any]:
        """Up to *batch_size* documents (all remaining when None), within MAX_BATCH_BYTES.

        Returns at least one document while any remain.
        """
        self.last_used = time.monotonic()
        end = len(self._documents) if batch_size is None else self._offset + batch_size
        batch: list[Any] = []
        size = 0
        for document in self._documents[self._offset : end]:
            raw = RawBSONDocument(bson.encode(document))
            if batch and size + len(raw.raw) > MAX_BATCH_BYTES:
                break
            batch.append(raw)
            size += len(raw.raw)
        self._offset += len(batch)
        self.exhausted = self._offset >= len(self._documents)
        return batch

    async def next_batch(self, batch_size: int | None, max_time: float) -> tuple[list[Any], bool]:
        """The next batch of the precomputed result; never waits."""
        return self.take(batch_size), self.exhausted


def cursor_reply(
    cursor_id: int, namespace: str, batch: list[Any], *, first: bool, **fields: Any
) -> dict[str, Any]:
    """The ``cursor`` reply document for a find/aggregate (*first*) or getMore batch."""
    return {
        "cursor": {
            "firstBatch" if first else "nextBatch": batch,
            "id": Int64(cursor_id),
            "ns": namespace,
            **fields,
        },
        "ok": 1.0,
    }


class CursorRegistry:
    """Open cursors by id, shared by all connections; idle ones are reaped after 10 minutes."""

    def __init__(self) -> None:
        self._cursors: dict[int, Cursor] = {}
        self._busy: set[int] = set()

    def add(self, cursor: Cursor) -> int:
        """Register *cursor*; returns its new id (never 0)."""
        self._reap()
        cursor_id = secrets.randbits(62) + 1
        self._cursors[cursor_id] = cursor
        return cursor_id

    def checkout(self, cursor_id: int, namespace: str) -> Cursor:
        """The cursor *cursor_id* for one getMore; release it with ``checkin``.

        Raises CommandError 43 CursorNotFound if it does not exist, 13 if it
        belongs to another namespace, 20 if another getMore is using it.
        """
        cursor = self._cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        if cursor.namespace != namespace:
            raise CommandError(
                13,
                f"Requested getMore on namespace '{namespace}', but cursor "
                f"belongs to a different namespace {cursor.namespace}",
            )
        if cursor_id in self._busy:
            raise CommandError(20, f"cursor id {cursor_id} is already in use")
        self._busy.add(cursor_id)
        return cursor

    def checkin(self, cursor_id: int, *, close: bool) -> None:
        """End a getMore on *cursor_id*; *close* removes the cursor."""
        self._busy.discard(cursor_id)
        if close:
            self._cursors.pop(cursor_id, None)

    def kill(self, cursor_ids: list[int]) -> tuple[list[Int64], list[Int64]]:
        """Remove *cursor_ids*; returns (killed, not found)."""
        killed, missing = [], []
        for cursor_id in cursor_ids:
            if self._cursors.pop(int(cursor_id), None) is None:
                missing.append(Int64(cursor_id))
            else:
                killed.append(Int64(cursor_id))
        return killed, missing

    def _reap(self) -> None:
        cutoff = time.monotonic() - IDLE_TIMEOUT_SECONDS
        for cursor_id in [
            cid
            for cid, c in self._cursors.items()
            if c.last_used < cutoff and cid not in self._busy
        ]:
            del self._cursors[cursor_id]
