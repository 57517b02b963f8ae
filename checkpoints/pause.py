"""The operator's pause of indexing: a flag in Redis that outlives restarts."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys


class PauseFlag:
    """Whether indexing is paused, by whom, since when and why. While it is set the
    indexer reads nothing new from the queue (capture goes on until the queue's
    backpressure limit); it stays set across restarts until resumed."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._audit = AuditLog(redis, keys)

    async def read(self) -> dict[str, Any] | None:
        """``{"by", "since", "reason"}`` while paused, else None."""
        raw = await self._redis.get(self._keys.paused)
        return None if raw is None else dict(json.loads(raw))

    async def is_set(self) -> bool:
        return bool(await self._redis.exists(self._keys.paused))

    async def pause(self, reason: str, *, fence: int, audit: AuditEntry) -> None:
        """Pause, recording who (the audit entry's by), when and *reason*."""
        body = {"by": audit.by, "since": audit.at.isoformat(), "reason": reason}
        await self._audit.set_key(
            self._keys.paused, json.dumps(body, ensure_ascii=False), fence=fence, entry=audit
        )

    async def resume(self, *, fence: int, audit: AuditEntry) -> None:
        await self._audit.set_key(self._keys.paused, None, fence=fence, entry=audit)
