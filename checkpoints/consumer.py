"""The consumer side of the durable queue: a consumer group reader with crash recovery."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats, StreamEntry
from checkpoints.versions import VersionRecord, VersionStore
from core.events import DocumentEvent, MalformedEvent, event_from_json

BULK_PREFIX = "bulk:"
"""What the ids of bulk-lane entries start with (live entries' ids are Redis's own)."""

PRIORITY_PREFIX = "vip:"
"""What the ids of priority-lane entries start with."""

BULK_BATCH = 8
"""Bulk entries read at once: small, so a bulk batch frees its worker soon. The model
still sees full batches: the embedder pools the texts of the bulk batches in flight
into its slices, serves live and priority texts first (indexer.lanes.LanedEmbedder),
and the indexer leaves a worker free of bulk work for live changes."""


@dataclass(frozen=True)
class QueueEntry:
    """One delivery of a queue entry.

    ``event`` is None when the entry does not decode; ``error`` then says why.
    ``deliveries`` counts this delivery too: 1 on the first read, more when
    the entry was delivered before without being acknowledged."""

    entry_id: str
    event: DocumentEvent | None
    error: str | None
    raw: Mapping[str, bytes]
    deliveries: int


class _Lane:
    """One stream of the queue as this consumer reads it: its own pending entries
    (after a restart), claimable idle entries, then new ones. Entry ids of a lane
    other than the live one carry the lane's *prefix*, so the two lanes' ids (which
    may coincide) never mix up."""

    def __init__(
        self, redis: Redis, keys: Keys, stream: str, prefix: str, consumer: str, claim_idle_ms: int
    ) -> None:
        self.stream = stream
        self.prefix = prefix
        self._redis = redis
        self._group = keys.group
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self.rewind()

    def rewind(self) -> None:
        """Start again from this consumer's own pending entries and a full claim scan."""
        self._own_cursor: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0

    def owns(self, entry_id: str) -> bool:
        return entry_id.startswith(self.prefix) if self.prefix else ":" not in entry_id

    def raw_id(self, entry_id: str) -> str:
        return entry_id[len(self.prefix) :]

    async def start(self, take_over: bool) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        if take_over:
            await self._claim_everything()
            self._own_cursor = "0"

    async def _claim_everything(self) -> None:
        cursor = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.stream,
                self._group,
                self._consumer,
                min_idle_time=0,
                start_id=cursor,
                count=1000,
            )
            cursor = reply[0].decode()
            if cursor == "0-0":
                return

    async def redelivered(self, count: int) -> list[QueueEntry]:
        """This consumer's own pending entries, then idle entries claimed from any."""
        while self._own_cursor is not None:
            batch = await self._read_group(count, self._own_cursor, block_ms=None)
            if not batch:
                self._own_cursor = None
                break
            self._own_cursor = batch[-1][0].decode()
            entries = await self._deliver(batch, known_deliveries=False)
            if entries:
                return entries
        while time.monotonic() >= self._next_claim_at:
            cursor, claimed = await self._claim(count)
            self._claim_cursor = cursor
            if cursor == "0-0":
                self._next_claim_at = time.monotonic() + self._claim_idle_ms / 2000
            entries = await self._deliver(claimed, known_deliveries=False)
            if entries:
                return entries
        return []

    async def new(self, count: int, block_ms: int | None) -> list[QueueEntry]:
        batch = await self._read_group(count, ">", block_ms=block_ms)
        return await self.deliver(batch)

    async def deliver(self, batch: Sequence[StreamEntry]) -> list[QueueEntry]:
        """Entries read as new (first deliveries) of this lane."""
        return await self._deliver(batch, known_deliveries=True)

    async def _read_group(
        self, count: int, from_id: str, *, block_ms: int | None
    ) -> list[StreamEntry]:
        reply: list[tuple[bytes, list[StreamEntry]]] = await self._redis.xreadgroup(  # type: ignore[assignment]
            self._group,
            self._consumer,
            {self.stream: from_id},
            count=count,
            block=block_ms,
        )
        return [entry for _, entries in reply for entry in entries]

    async def _claim(self, count: int) -> tuple[str, list[StreamEntry]]:
        reply = await self._redis.xautoclaim(
            self.stream,
            self._group,
            self._consumer,
            min_idle_time=self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        # Redis 6 replies nil for an entry deleted while pending and leaves it
        # pending (Redis 7 drops it from the PEL); such a ghost is acknowledged
        # when this consumer next re-reads its own pending entries.
        return reply[0].decode(), [entry for entry in reply[1] if entry is not None]

    async def _deliver(
        self, batch: Sequence[StreamEntry], *, known_deliveries: bool
    ) -> list[QueueEntry]:
        # An entry deleted while pending comes back without fields: nothing to
        # process, so it is only acknowledged.
        ghosts = [entry_id for entry_id, fields in batch if not fields]
        live = [(entry_id, fields) for entry_id, fields in batch if fields]
        if ghosts:
            await self._redis.xack(self.stream, self._group, *ghosts)
        if not live:
            return []
        deliveries = {} if known_deliveries else await self._deliveries(live)
        return [
            _decode(self.prefix + entry_id.decode(), fields, deliveries.get(entry_id.decode(), 1))
            for entry_id, fields in live
        ]

    async def _deliveries(self, batch: Sequence[StreamEntry]) -> dict[str, int]:
        pending = await self._redis.xpending_range(
            self.stream,
            self._group,
            min=batch[0][0],
            max=batch[-1][0],
            count=len(batch),
            consumername=self._consumer,
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in pending}


class EventReader:
    """Reads the pipeline's queue as one consumer of the indexer's consumer group.

    The queue has three lanes: changes of priority documents (``Keys.priority``,
    CDC_PRIORITY_FILTER), the other live changes (``Keys.events``) and bulk work
    (``Keys.bulk``: backfills, reindexing, repairs), read in that order: live entries
    are read only when no priority one waits, and bulk entries only when no live one
    waits, at most *bulk_batch* at a time. In each lane, ``read`` delivers, in order of
    priority: this consumer's own entries delivered before and not acknowledged (after a restart);
    entries idle longer than *claim_idle_ms* in any consumer (a crashed one's, or ours
    that were never committed), claimed by XAUTOCLAIM; then new entries. An entry is
    redelivered until ``commit`` or ``dead_letter`` acknowledges it, so the caller must
    acknowledge only what the vector store accepted. *consumer* should be stable across
    restarts of one replica so its own pending entries come back to it at once. A
    blocking read needs a client whose socket timeout exceeds *block_ms*."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        consumer: str,
        claim_idle_ms: int = 300_000,
        versions: VersionStore | None = None,
        take_over: bool = False,
        bulk_batch: int = BULK_BATCH,
    ) -> None:
        """*versions* gives commit its tombstone ttl: pass the VersionStore the
        indexer reads with (without one, tombstones never expire). *take_over*:
        on start, claim every consumer's unacknowledged entries at once, for a
        reader that holds the pipeline's lease (every other consumer is then a
        dead replica): their entries come back first and in queue order,
        before any newer change of the same document can overtake them."""
        self._redis = redis
        self._keys = keys
        self._consumer = consumer
        self._versions = versions or VersionStore(redis, keys, ttl_seconds=None)
        self._stats = Stats(redis, keys)
        self._take_over = take_over
        self._bulk_batch = bulk_batch
        self._priority = _Lane(redis, keys, keys.priority, PRIORITY_PREFIX, consumer, claim_idle_ms)
        self._live = _Lane(redis, keys, keys.events, "", consumer, claim_idle_ms)
        self._bulk = _Lane(redis, keys, keys.bulk, BULK_PREFIX, consumer, claim_idle_ms)
        self._lanes = (self._priority, self._live, self._bulk)

    @property
    def consumer(self) -> str:
        return self._consumer

    async def start(self) -> None:
        """Create the consumer group (and the streams) unless they exist. Idempotent."""
        for lane in self._lanes:
            await lane.start(self._take_over)

    async def read(self, count: int, block_ms: int, *, bulk: bool = True) -> list[QueueEntry]:
        """Up to *count* entries; waits up to *block_ms* for new live ones when
        nothing is pending, claimable or queued in any lane (``block_ms <= 0``:
        does not wait). An empty list means nothing arrived in time. *bulk* False
        leaves the bulk lane unread (the caller has enough bulk work in hand).

        If the consumer group vanished (Redis restarted without persistence),
        recreates it and reads again."""
        try:
            return await self._read(count, block_ms, bulk=bulk)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            await self.start()
            for lane in self._lanes:
                lane.rewind()
            return await self._read(count, block_ms, bulk=bulk)

    async def _read(self, count: int, block_ms: int, *, bulk: bool) -> list[QueueEntry]:
        lanes = self._lanes if bulk else (self._priority, self._live)
        for lane in lanes:
            entries = await lane.redelivered(count)
            if entries:
                return entries
        for lane in (self._priority, self._live):
            entries = await lane.new(count, block_ms=None)
            if entries:
                return entries
        entries = await self._bulk.new(min(count, self._bulk_batch), block_ms=None) if bulk else []
        if not entries and block_ms > 0:
            entries = await self._wait_live(count, block_ms)
        return entries

    async def _wait_live(self, count: int, block_ms: int) -> list[QueueEntry]:
        """New entries of the priority or the live lane, waiting up to *block_ms* for
        the first to arrive in either (priority entries first when both have some)."""
        lanes = (self._priority, self._live)
        reply: list[tuple[bytes, list[StreamEntry]]] = await self._redis.xreadgroup(  # type: ignore[assignment]
            self._keys.group,
            self._consumer,
            {lane.stream: ">" for lane in lanes},
            count=count,
            block=block_ms,
        )
        arrived = {_text(stream): entries for stream, entries in reply}
        found: list[QueueEntry] = []
        for lane in lanes:
            found += await lane.deliver(arrived.get(lane.stream, []))
        return found

    async def commit(
        self,
        entry_ids: Sequence[str],
        *,
        versions: Mapping[str, VersionRecord],
        counts: Mapping[str, int],
        last_applied: Mapping[str, Any] | None,
    ) -> None:
        """Record what a batch applied and acknowledge its entries, in one MULTI/EXEC:
        the version records (by document key), the counter increments, the
        last applied position (JSON; non-JSON values are written as strings),
        and XACK + XDEL of *entry_ids*. Either all of it is written or none.

        Raises ValueError (before writing anything) for an unknown counter."""
        pipe = self._redis.pipeline(transaction=True)
        self._versions.stage(pipe, versions)
        self._stats.stage(pipe, counts)
        if last_applied is not None:
            pipe.set(
                self._keys.last_applied,
                json.dumps(dict(last_applied), default=str, separators=(",", ":")),
            )
        for lane in self._lanes:
            ids = [lane.raw_id(entry_id) for entry_id in entry_ids if lane.owns(entry_id)]
            if ids:
                pipe.xack(lane.stream, self._keys.group, *ids)
                pipe.xdel(lane.stream, *ids)
        await pipe.execute()

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        """Move *entry* to the dead-letter stream with *error*, in one MULTI/EXEC:
        its original fields plus ``error``, ``deliveries``, ``entry_id`` and
        ``failed_at``; then acknowledge and delete it and count it."""
        fields: dict[FieldT, EncodableT] = {k: v for k, v in entry.raw.items()}
        fields |= {
            "error": error,
            "deliveries": entry.deliveries,
            "entry_id": entry.entry_id,
            "failed_at": datetime.now(UTC).isoformat(),
        }
        lane = self._lane_of(entry.entry_id)
        raw_id = lane.raw_id(entry.entry_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.xadd(self._keys.dead, fields)
        pipe.xack(lane.stream, self._keys.group, raw_id)
        pipe.xdel(lane.stream, raw_id)
        self._stats.stage(pipe, {"dead_lettered": 1})
        await pipe.execute()

    async def pending(self) -> int:
        """Entries delivered to any consumer and not acknowledged, in every lane."""
        return await EventQueue(self._redis, self._keys).pending()

    def _lane_of(self, entry_id: str) -> _Lane:
        return next(lane for lane in self._lanes if lane.owns(entry_id))


def _decode(entry_id: str, fields: Mapping[bytes, bytes], deliveries: int) -> QueueEntry:
    raw = {_text(k): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}
    body = raw.get("event")
    if body is None:
        return QueueEntry(entry_id, None, "entry has no 'event' field", raw, deliveries)
    try:
        event = event_from_json(body)
    except MalformedEvent as exc:
        return QueueEntry(entry_id, None, str(exc), raw, deliveries)
    return QueueEntry(entry_id, event, None, raw, deliveries)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
