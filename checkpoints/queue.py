"""The producer side of the durable queue: events and the position they lead to, atomically."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced
from checkpoints.stats import StreamEntry, as_text
from checkpoints.tokens import Checkpoint, ResumeTokenStore, unpack_timestamp
from core.errors import SidecarError
from core.events import DocumentEvent

# KEYS: fence, stream (a lane), position (the checkpoint, or a backfill's progress),
# stats, the priority lane. ARGV: fence, position JSON ("" to keep the saved one), the
# counter to add the events to, the id the saved position must have, in state running
# ("" for no check), then the events, packed into one string (see _packed): per event
# "p" for the priority lane or "-" for the stream of KEYS[2], its key's length in
# bytes, ":", its key, its JSON and a newline (compact JSON never holds a raw newline).
# One argument instead of three per event spares the client most of its encoding
# work. Returns 1, 0 when the fence is stale, -1 when the saved position is another's
# or was cancelled (nothing written either way).
_APPEND = LuaScript(
    FENCE_CHECK
    + """
if ARGV[4] ~= '' then
  local saved = redis.call('GET', KEYS[3])
  if not saved then
    return -1
  end
  local job = cjson.decode(saved)
  if job['id'] ~= ARGV[4] or job['state'] ~= 'running' then
    return -1
  end
end
local packed = ARGV[5]
local at = 1
local added = 0
while at <= #packed do
  local lane = KEYS[2]
  if string.byte(packed, at) == 112 then
    lane = KEYS[5]
  end
  local colon = string.find(packed, ':', at + 1, true)
  local key_end = colon + tonumber(string.sub(packed, at + 1, colon - 1))
  local line_end = string.find(packed, '\\n', key_end + 1, true)
  redis.call('XADD', lane, '*', 'event', string.sub(packed, key_end + 1, line_end - 1),
    'key', string.sub(packed, colon + 1, key_end))
  added = added + 1
  at = line_end + 1
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2])
end
if added > 0 then
  redis.call('HINCRBY', KEYS[4], ARGV[3], added)
end
return 1
"""
)


_SCAN_PAGE = 1000


class JobReplaced(SidecarError):
    """A backfill's progress was not saved (nor its events queued): another job took
    its place (a resynchronisation, or an operator's), or an operator cancelled it, and
    the writer must stop."""


class EventQueue:
    """Appends captured events to the pipeline's Redis Stream."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def append(
        self,
        events: Sequence[DocumentEvent],
        checkpoint: Checkpoint | None,
        *,
        fence: int,
        urgent: Collection[str] = (),
    ) -> None:
        """Queue *events* and save *checkpoint* as the position after them, in one atomic
        server-side write: either all of it happens or none of it. Events whose ids
        are in *urgent* go to the priority lane, read before the live one.

        Zero events with a checkpoint only moves the position (an empty change
        stream batch). Raises LeaseLost, having written nothing, when *fence*
        is not the current lease's fence: the caller must stop capturing. On a
        connection error the write may or may not have happened; re-appending
        the same events after resuming from the saved checkpoint is safe
        because the indexer's version guard drops duplicates."""
        position = "" if checkpoint is None else checkpoint.to_json()
        await self._append(
            self._keys.events, events, self._keys.checkpoint, position, fence, "", urgent
        )

    async def append_bulk(
        self,
        events: Sequence[DocumentEvent],
        progress_key: str,
        progress: str,
        *,
        fence: int,
        job_id: str,
    ) -> None:
        """Queue *events* in the bulk lane (read after live changes) and save *progress*
        under *progress_key*, in one atomic write behind the fence, as append does
        for capture: a backfill's progress moves exactly when its events are queued.
        Raises JobReplaced, writing nothing, unless the progress saved there is job
        *job_id*'s."""
        await self._append(self._keys.bulk, events, progress_key, progress, fence, job_id)

    async def _append(
        self,
        stream: str,
        events: Sequence[DocumentEvent],
        position_key: str,
        position: str,
        fence: int,
        guard: str,
        urgent: Collection[str] = (),
    ) -> None:
        counter = "events_captured" if stream == self._keys.events else "events_backfilled"
        args: list[EncodableT] = [fence, position, counter, guard, _packed(events, urgent)]
        keys = [self._keys.fence, stream, position_key, self._keys.stats, self._keys.priority]
        done = int(await _APPEND(self._redis, keys, args))
        if done == -1:
            raise JobReplaced(f"backfill {guard} was cancelled or replaced by another job")
        raise_unless_fenced(done, fence)

    async def pending(self) -> int:
        """Entries (of every lane) delivered to the indexer and not acknowledged; 0
        before it ever started."""
        total = 0
        for stream in self._keys.lanes.values():
            try:
                summary = await self._redis.xpending(stream, self._keys.group)
            except ResponseError:
                continue
            total += int(summary["pending"])
        return total

    async def dead_letters(self) -> int:
        """Entries moved to the dead-letter stream."""
        return int(await self._redis.xlen(self._keys.dead))

    async def backlog(self) -> int:
        """Live entries (of the priority lane too) queued and not yet acknowledged (the
        indexer deletes what it acknowledges, so a stream's length is its backlog).
        Capture's backpressure counts these only: bulk work never holds live changes
        back."""
        live = (self._keys.priority, self._keys.events)
        return sum([int(await self._redis.xlen(stream)) for stream in live])

    async def lengths(self) -> dict[str, int]:
        """Entries queued and not yet acknowledged, by lane (Keys.lanes)."""
        return {
            lane: int(await self._redis.xlen(stream)) for lane, stream in self._keys.lanes.items()
        }

    async def oldest_live(self) -> datetime | None:
        """The cluster time of the oldest live change (either lane) not yet applied, or
        None when there is none: acknowledged entries are deleted, so it is the first
        entry of each stream."""
        times = []
        for stream in (self._keys.priority, self._keys.events):
            rows: list[StreamEntry] = await self._redis.xrange(stream, count=1)  # type: ignore[assignment]
            for _, fields in rows:
                text = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
                event = json.loads(text["event"])
                times.append(datetime.fromisoformat(event["timestamp"]))
        return min(times, default=None)

    async def bulk_backlog(self) -> int:
        """Bulk-lane entries (backfill, reindex) queued and not yet acknowledged."""
        return int(await self._redis.xlen(self._keys.bulk))

    async def entries_of(self, doc_key: str) -> list[dict[str, str]]:
        """The queued entries (every lane, not yet acknowledged) about *doc_key*, oldest
        first per lane: ``{"lane", "id", "event"}``. A scan of the streams, whose
        length the backpressure and backfill limits bound."""
        found: list[dict[str, str]] = []
        for lane, stream in self._keys.lanes.items():
            start = "-"
            while True:
                rows: list[StreamEntry] = await self._redis.xrange(  # type: ignore[assignment]
                    stream, min=start, count=_SCAN_PAGE
                )
                if not rows:
                    break
                for entry_id, fields in rows:
                    text = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
                    if text.get("key") == doc_key:
                        entry = {"lane": lane, "id": as_text(entry_id), "event": text["event"]}
                        found.append(entry)
                start = f"({as_text(rows[-1][0])}"
        return found


def _packed(events: Sequence[DocumentEvent], urgent: Collection[str]) -> str:
    """The events as _APPEND reads them, each encoded once."""
    lines = []
    for event in events:
        key = event.key
        size = len(key) if key.isascii() else len(key.encode())
        lane = "p" if event.event_id in urgent else "-"
        lines.append(f"{lane}{size}:{key}{event.to_json()}\n")
    return "".join(lines)


def position_time(checkpoint: Checkpoint | None) -> float | None:
    """The Unix time of *checkpoint*'s cluster time (or of the operation time it starts
    at), None without one."""
    if checkpoint is None:
        return None
    packed = checkpoint.cluster_time or checkpoint.start_at_operation_time
    return None if packed is None else float(unpack_timestamp(packed).time)


def lag_seconds(
    now: float, checkpoint: Checkpoint | None, oldest_unapplied: datetime | None
) -> float | None:
    """Seconds the index is behind MongoDB at *now*: since the oldest change not yet
    applied, or, with none queued, since the position capture saved last (which a quiet
    stream still moves every second). None before a first position."""
    marks = [position_time(checkpoint)]
    if oldest_unapplied is not None:
        marks.append(oldest_unapplied.timestamp())
    known = [mark for mark in marks if mark is not None]
    return max(0.0, now - min(known)) if known else None


async def applied_through(redis: Redis, keys: Keys, cluster_time: int) -> bool:
    """Whether every change up to *cluster_time* (packed) is captured and applied:
    the checkpoint is at or past it, no backfill is running (the first start's load
    is one) and nothing is queued or pending in either lane."""
    checkpoint = await ResumeTokenStore(redis, keys).load()
    if checkpoint is None or (checkpoint.cluster_time or 0) < cluster_time:
        return False
    job = await BackfillStore(redis, keys).load()
    if job is not None and job.state == "running":
        return False
    queue = EventQueue(redis, keys)
    idle = (await queue.backlog(), await queue.bulk_backlog(), await queue.pending())
    return idle == (0, 0, 0)
