"""The producer side of the durable queue: events and the position they lead to, atomically."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced
from checkpoints.tokens import Checkpoint
from core.events import DocumentEvent

# KEYS: fence, events, checkpoint, stats.
# ARGV: fence, checkpoint JSON ("" to keep the saved one), then event JSON and key per event.
_APPEND = LuaScript(
    FENCE_CHECK
    + """
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'event', ARGV[i], 'key', ARGV[i + 1])
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2])
end
local added = (#ARGV - 2) / 2
if added > 0 then
  redis.call('HINCRBY', KEYS[4], 'events_captured', added)
end
return 1
"""
)


class EventQueue:
    """Appends captured events to the pipeline's Redis Stream."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def append(
        self, events: Sequence[DocumentEvent], checkpoint: Checkpoint | None, *, fence: int
    ) -> None:
        """Queue *events* and save *checkpoint* as the position after them, in one atomic
        server-side write: either all of it happens or none of it.

        Zero events with a checkpoint only moves the position (an empty change
        stream batch). Raises LeaseLost, having written nothing, when *fence*
        is not the current lease's fence: the caller must stop capturing. On a
        connection error the write may or may not have happened; re-appending
        the same events after resuming from the saved checkpoint is safe
        because the indexer's version guard drops duplicates."""
        args: list[EncodableT] = [fence, "" if checkpoint is None else checkpoint.to_json()]
        for event in events:
            args += (event.to_json(), event.key)
        keys = self._keys
        done = await _APPEND(
            self._redis, [keys.fence, keys.events, keys.checkpoint, keys.stats], args
        )
        raise_unless_fenced(done, fence)

    async def pending(self) -> int:
        """Entries delivered to the indexer and not acknowledged; 0 before it ever started."""
        try:
            summary = await self._redis.xpending(self._keys.events, self._keys.group)
        except ResponseError:
            return 0
        return int(summary["pending"])

    async def dead_letters(self) -> int:
        """Entries moved to the dead-letter stream."""
        return int(await self._redis.xlen(self._keys.dead))

    async def backlog(self) -> int:
        """Entries queued and not yet acknowledged (the indexer deletes what it
        acknowledges, so the stream's length is the backlog)."""
        return int(await self._redis.xlen(self._keys.events))
