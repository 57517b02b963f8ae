"""The dead-letter stream under the operator's hand: list, show, replay, purge."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced
from checkpoints.stats import StreamEntry, as_text

CHUNK = 500
"""Entries moved per atomic script: a replay of the whole stream holds Redis for one
chunk at a time, not for the whole stream."""

# KEYS: fence, dead, events. ARGV: fence, then dead-letter ids. Moves each entry that
# still exists and has an event back to the queue (event and key fields only) and
# deletes it from the dead-letter stream. Returns {1, moved, missing, unreplayable}.
_REPLAY = LuaScript(
    FENCE_CHECK
    + """
local moved, missing, unreplayable = 0, 0, 0
for i = 2, #ARGV do
  local rows = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #rows == 0 then
    missing = missing + 1
  else
    local fields, event, key = rows[1][2], nil, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'event' then event = fields[j + 1] end
      if fields[j] == 'key' then key = fields[j + 1] end
    end
    if event and key then
      redis.call('XADD', KEYS[3], '*', 'event', event, 'key', key)
      redis.call('XDEL', KEYS[2], ARGV[i])
      moved = moved + 1
    else
      unreplayable = unreplayable + 1
    end
  end
end
return {1, moved, missing, unreplayable}
"""
)

# KEYS: fence, dead. ARGV: fence, then at least one id. Returns {1, deleted}.
_PURGE = LuaScript(
    FENCE_CHECK
    + """
return {1, redis.call('XDEL', KEYS[2], unpack(ARGV, 2))}
"""
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered queue entry: the document it was about, why it failed, after
    how many deliveries, when, and the original event (None when it did not decode)."""

    id: str
    doc_key: str | None
    error: str
    deliveries: int
    failed_at: str
    event: dict[str, Any] | None

    @classmethod
    def from_fields(cls, entry_id: str, fields: Mapping[str, bytes | str]) -> DeadLetter:
        text = {name: as_text(value) for name, value in fields.items()}
        try:
            event: dict[str, Any] | None = json.loads(text["event"])
        except (KeyError, ValueError):
            event = None
        return cls(
            id=entry_id,
            doc_key=text.get("key"),
            error=text.get("error", "?"),
            deliveries=int(text.get("deliveries", "0") or 0),
            failed_at=text.get("failed_at", "?"),
            event=event,
        )


@dataclass(frozen=True)
class Moved:
    """What a replay or purge did: entries *done*, ids not found, entries without an
    event (a malformed entry cannot be replayed; purge it)."""

    done: int = 0
    missing: int = 0
    unreplayable: int = 0

    def __add__(self, other: Moved) -> Moved:
        return Moved(
            self.done + other.done,
            self.missing + other.missing,
            self.unreplayable + other.unreplayable,
        )


class DeadLetters:
    """The pipeline's dead-letter stream. Replay and purge check *fence* inside each
    atomic chunk and raise LeaseLost (what earlier chunks did stays done)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def count(self) -> int:
        return int(await self._redis.xlen(self._keys.dead))

    async def page(self, count: int, after: str | None = None) -> list[DeadLetter]:
        """Up to *count* dead letters, oldest first, after id *after* (exclusive)."""
        start = "-" if after is None else f"({after}"
        rows: list[StreamEntry] = await self._redis.xrange(  # type: ignore[assignment]
            self._keys.dead, min=start, count=count
        )
        return [_letter(entry_id, fields) for entry_id, fields in rows]

    async def get(self, entry_id: str) -> DeadLetter | None:
        rows: list[StreamEntry] = await self._redis.xrange(  # type: ignore[assignment]
            self._keys.dead, min=entry_id, max=entry_id
        )
        return _letter(*rows[0]) if rows else None

    async def ids(self) -> list[str]:
        """Every dead letter's id, oldest first."""
        found: list[str] = []
        after: str | None = None
        while page := await self.page(CHUNK, after):
            found += [letter.id for letter in page]
            after = page[-1].id
        return found

    async def of_document(self, doc_key: str) -> list[DeadLetter]:
        """The dead letters about *doc_key*, oldest first (a scan of the stream)."""
        found: list[DeadLetter] = []
        after: str | None = None
        while page := await self.page(CHUNK, after):
            found += [letter for letter in page if letter.doc_key == doc_key]
            after = page[-1].id
        return found

    async def replay(self, entry_ids: Sequence[str], *, fence: int) -> Moved:
        """Queue the events of *entry_ids* again (the indexer applies them as new
        deliveries) and remove them from the dead-letter stream."""
        moved = Moved()
        for start in range(0, len(entry_ids), CHUNK):
            chunk = list(entry_ids[start : start + CHUNK])
            keys = [self._keys.fence, self._keys.dead, self._keys.events]
            _, done, missing, unreplayable = _fenced(
                await _REPLAY(self._redis, keys, [fence, *chunk]), fence
            )
            moved += Moved(done, missing, unreplayable)
        return moved

    async def purge(self, entry_ids: Sequence[str], *, fence: int) -> Moved:
        """Delete *entry_ids* from the dead-letter stream."""
        moved = Moved()
        for start in range(0, len(entry_ids), CHUNK):
            chunk = list(entry_ids[start : start + CHUNK])
            keys = [self._keys.fence, self._keys.dead]
            _, done = _fenced(await _PURGE(self._redis, keys, [fence, *chunk]), fence)
            moved += Moved(done, len(chunk) - done)
        return moved


def _fenced(reply: Any, fence: int) -> list[int]:
    """A fenced script's table reply as integers; raises LeaseLost on its bare 0."""
    if not isinstance(reply, list):
        raise_unless_fenced(int(reply), fence)
    return [int(value) for value in reply]


def _letter(entry_id: bytes | str, fields: Mapping[bytes, bytes] | None) -> DeadLetter:
    by_name = {as_text(name): value for name, value in (fields or {}).items()}
    return DeadLetter.from_fields(as_text(entry_id), by_name)

