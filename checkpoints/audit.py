"""The audit trail of operator commands: who changed what, when, from what to what."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.typing import EncodableT

from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced
from checkpoints.stats import StreamEntry, as_text

MAX_ENTRIES = 1000
"""Entries kept (approximately: Redis trims whole stream nodes); older ones are dropped."""

# KEYS: fence, the key, audit. ARGV: fence, value ("" deletes the key), audit entry
# JSON, audit length.
_SET_AUDITED = LuaScript(
    FENCE_CHECK
    + """
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[3])
return 1
"""
)


@dataclass(frozen=True)
class AuditEntry:
    """One operator command as carried out. *before* and *after* describe the state it
    changed (a position in words), None when it changed none."""

    at: datetime
    command: str
    by: str
    outcome: str
    before: str | None = None
    after: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "at": self.at.isoformat()}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> AuditEntry:
        body = json.loads(raw)
        return cls(**{**body, "at": datetime.fromisoformat(body["at"])})


class AuditLog:
    """The pipeline's audit stream. Writes that change state add their entry inside
    their own atomic script (ResumeTokenStore.reset); :meth:`record` is for the rest."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def set_key(self, key: str, value: str | None, *, fence: int, entry: AuditEntry) -> None:
        """Set *key* to *value* (None deletes it) and record *entry*, in one atomic
        write behind the fence check. Raises LeaseLost, changing nothing, when
        *fence* is not the current lease's fence."""
        keys = [self._keys.fence, key, self._keys.audit]
        args: list[EncodableT] = [fence, value or "", entry.to_json(), MAX_ENTRIES]
        raise_unless_fenced(await _SET_AUDITED(self._redis, keys, args), fence)

    async def record(self, entry: AuditEntry) -> None:
        await self._redis.xadd(
            self._keys.audit, {"entry": entry.to_json()}, maxlen=MAX_ENTRIES, approximate=True
        )

    async def recent(self, count: int = 10) -> list[AuditEntry]:
        """The last *count* entries, newest first."""
        rows: list[StreamEntry] = await self._redis.xrevrange(self._keys.audit, count=count)  # type: ignore[assignment]
        entries = []
        for _, fields in rows:
            by_name = {as_text(name): value for name, value in (fields or {}).items()}
            entries.append(AuditEntry.from_json(by_name["entry"]))
        return entries
