"""Pipeline counters and the last applied position, for status and metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from checkpoints.keys import Keys


class Stats:
    """Monotonic counters of one pipeline, kept in one Redis hash.

    Capture increments ``events_captured`` inside EventQueue.append and the
    indexer its counters inside EventReader.commit, so a counter moves
    exactly when the work it counts is durable. The one exception is
    ``embeddings_computed``: chunks the model encoded, counted as soon as it
    returns, so that ``embeddings_computed - chunks_embedded`` is the work lost
    to crashes and retried batches; it is a metric, and a process killed while
    Redis was down loses the counts it held."""

    COUNTERS = (
        "events_captured",
        "events_backfilled",
        "events_filtered",
        "documents_indexed",
        "chunks_embedded",
        "embeddings_computed",
        "embeddings_skipped",
        "deletes",
        "documents_rehomed",
        "dead_lettered",
        "history_lost",
    )

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def incr(self, counts: Mapping[str, int]) -> None:
        """Add *counts* to the counters in one round trip."""
        pipe = self._redis.pipeline(transaction=True)
        self.stage(pipe, counts)
        await pipe.execute()

    def stage(self, pipe: Pipeline, counts: Mapping[str, int]) -> None:
        """Queue the increments of *counts* on *pipe*, which the caller executes.

        Raises ValueError for a name not in COUNTERS (a typo would otherwise
        count into a field nobody reads)."""
        for name, count in counts.items():
            if name not in self.COUNTERS:
                raise ValueError(f"unknown counter {name!r}")
            if count:
                pipe.hincrby(self._keys.stats, name, count)

    async def read(self) -> dict[str, int]:
        """Every counter, zero for those never incremented."""
        raw = await self._redis.hgetall(self._keys.stats)
        stored = {as_text(k): int(v) for k, v in raw.items()}
        return {name: stored.get(name, 0) for name in self.COUNTERS}

    async def last_applied(self) -> dict[str, Any] | None:
        """What the indexer's last commit said it applied (for lag), or None before any."""
        raw = await self._redis.get(self._keys.last_applied)
        return None if raw is None else dict(json.loads(raw))


StreamEntry = tuple[bytes, Mapping[bytes, bytes] | None]
"""One entry of a Redis stream reply: its id and fields (None once it was deleted)."""


def as_text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value
