"""A backfill's job and progress, kept in Redis so a restart resumes it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from redis.asyncio import Redis
from redis.typing import EncodableT

from checkpoints.audit import MAX_ENTRIES, AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lua import FENCE_CHECK, LuaScript, raise_unless_fenced

State = Literal["running", "done", "cancelled"]

# KEYS: fence, the job, audit. ARGV: fence, the cancelled job's JSON, its id, audit
# entry JSON, audit length. Returns 1, 0 when the fence is stale, -1 when the saved
# job is another or not running (nothing written either way).
_CANCEL = LuaScript(
    FENCE_CHECK
    + """
local saved = redis.call('GET', KEYS[2])
if not saved then
  return -1
end
local job = cjson.decode(saved)
if job['id'] ~= ARGV[3] or job['state'] ~= 'running' then
  return -1
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4])
return 1
"""
)


@dataclass(frozen=True)
class BackfillJob:
    """One backfill: which collections (in order), the operator's extra filter
    (canonical extended JSON, "" for none), who asked and when, and how far it got.
    ``after`` maps a collection being scanned to the last ``_id`` queued (canonical
    extended JSON); ``done`` lists the collections finished. ``estimated`` is the
    collections' document count when the job started, for progress and ETA.

    A resynchronisation (after lost history) sets *sweep_before* to the packed time
    of the position it restarted capture from: once the scan is indexed, every
    indexed document of the scanned collections whose version record is older
    than that (or missing) was not seen by the scan and is deleted (*swept*).

    A reindex sets *force*: its events make the indexer check Milvus instead of
    trusting the version record (missing rows are written again, from stored
    vectors where Milvus has them). *ids* (canonical extended JSON) are the
    ``_id``s it names, if any: one the scan does not find is deleted from the index."""

    id: str
    collections: list[str]
    filter: str
    by: str
    requested_at: str
    estimated: int = 0
    after: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    scanned: int = 0
    queued: int = 0
    state: State = "running"
    finished_at: str | None = None
    reason: str = ""
    sweep_before: int | None = None
    swept: int = 0
    force: bool = False
    ids: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> BackfillJob:
        return cls(**json.loads(raw))

    def advanced(
        self, collection: str, last_id: str | None, scanned: int, queued: int
    ) -> BackfillJob:
        """This job after a chunk of *collection* up to *last_id* (None: the collection
        is finished)."""
        after = dict(self.after)
        done = list(self.done)
        if last_id is None:
            after.pop(collection, None)
            done.append(collection)
        else:
            after[collection] = last_id
        scanned += self.scanned
        queued += self.queued
        return replace(self, after=after, done=done, scanned=scanned, queued=queued)


class BackfillStore:
    """The pipeline's current (or last) backfill. Progress is saved by
    EventQueue.append_bulk together with the events it covers; starting a job goes
    through the fence with its audit entry."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    @property
    def key(self) -> str:
        return self._keys.backfill

    async def load(self) -> BackfillJob | None:
        raw = await self._redis.get(self._keys.backfill)
        return None if raw is None else BackfillJob.from_json(raw)

    async def want(self, collection: str) -> None:
        """Ask for a backfill of *collection* once no job is running (a collection
        renamed into the watched set): the lease holder's backfill task starts it."""
        await self._redis.sadd(self._keys.backfill_wanted, collection)

    async def wanted(self) -> list[str]:
        """The collections waiting for a backfill, sorted."""
        names = await self._redis.smembers(self._keys.backfill_wanted)
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    async def start(self, job: BackfillJob, *, fence: int, audit: AuditEntry) -> None:
        await AuditLog(self._redis, self._keys).set_key(
            self._keys.backfill, job.to_json(), fence=fence, entry=audit
        )

    async def cancel(self, job: BackfillJob, *, fence: int, audit: AuditEntry) -> bool:
        """Record *job* (its state "cancelled") and *audit*, atomically behind the fence,
        if the saved job is still the same one and running (else False, nothing
        written). The running backfill's next write of its progress is then refused
        (JobReplaced), so it stops there. Raises LeaseLost for a stale fence."""
        keys = [self._keys.fence, self._keys.backfill, self._keys.audit]
        args: list[EncodableT] = [fence, job.to_json(), job.id, audit.to_json(), MAX_ENTRIES]
        done = int(await _CANCEL(self._redis, keys, args))
        if done == -1:
            return False
        raise_unless_fenced(done, fence)
        return True
