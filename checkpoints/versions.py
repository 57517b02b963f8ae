"""Per-document version records: what the index holds for each document."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from checkpoints.keys import Keys
from checkpoints.lua import LuaScript
from checkpoints.stats import as_text
from core.errors import ConfigurationError

# KEYS: the floors hash. ARGV: namespace, version. Raises the namespace's floor, never lowers it.
# Versions are packed cluster times near 2**62, past what Lua's doubles hold exactly (two
# changes of one second would compare equal): the decimal strings (no sign, no leading
# zeros) are compared instead, the longer being the larger.
_RAISE_FLOOR = LuaScript(
    """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local new = ARGV[2]
if not current or #new > #current or (#new == #current and new > current) then
  redis.call('HSET', KEYS[1], ARGV[1], new)
end
return 1
"""
)


def database_of(namespace: str) -> str:
    """The database of *namespace* ("db.coll" or "db")."""
    return namespace.partition(".")[0]


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True)
class VersionRecord:
    """What is indexed for one document.

    ``version`` is the packed cluster time of the change applied last: a
    change with a lower version must never overwrite this record or the
    document's chunks. ``chunk_ids`` are the document's chunk ids in Milvus,
    in order, so stale chunks can be deleted by id. A ``deleted`` record is a
    tombstone: it keeps the version of the delete so a replayed older change
    cannot resurrect the document."""

    version: int
    content_hash: str
    metadata_hash: str
    chunk_ids: tuple[str, ...]
    deleted: bool
    updated_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "content_hash": self.content_hash,
                "metadata_hash": self.metadata_hash,
                "chunk_ids": list(self.chunk_ids),
                "deleted": self.deleted,
                "updated_at": self.updated_at.isoformat(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> VersionRecord:
        """Decode what :meth:`to_json` wrote; raises ValueError when *raw* is not a record."""
        try:
            body: dict[str, Any] = json.loads(raw)
            return cls(
                version=int(body["version"]),
                content_hash=str(body["content_hash"]),
                metadata_hash=str(body["metadata_hash"]),
                chunk_ids=tuple(str(c) for c in body["chunk_ids"]),
                deleted=bool(body["deleted"]),
                updated_at=datetime.fromisoformat(body["updated_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a version record: {exc}") from exc


class VersionStore:
    """Reads version records, and stages their writes into the indexer's commit.

    Live records never expire: they hold the chunk ids needed to delete a
    document's stale chunks. Tombstones expire after *ttl_seconds* (None:
    never), long enough to outlive any replay of older changes; after that a
    delete's record is simply absent."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_seconds: int | None) -> None:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ConfigurationError(f"tombstone ttl must be positive, got {ttl_seconds}")
        self._redis = redis
        self._keys = keys
        self._ttl_seconds = ttl_seconds

    @property
    def ttl_seconds(self) -> int | None:
        return self._ttl_seconds

    async def get_many(self, doc_keys: Sequence[str]) -> dict[str, VersionRecord]:
        """The records of *doc_keys* in one round trip; documents without one are absent."""
        if not doc_keys:
            return {}
        raws = await self._redis.mget([self._keys.version(k) for k in doc_keys])
        return {
            key: VersionRecord.from_json(raw)
            for key, raw in zip(doc_keys, raws, strict=True)
            if raw is not None
        }

    def stage(self, pipe: Pipeline, records: Mapping[str, VersionRecord]) -> None:
        """Queue the SETs of *records* (by document key) on *pipe*, a transaction
        the caller executes; tombstones get the ttl, live records none."""
        for doc_key, record in records.items():
            ttl = self._ttl_seconds if record.deleted else None
            pipe.set(self._keys.version(doc_key), record.to_json(), ex=ttl)

    async def floors(self, namespaces: Iterable[str]) -> dict[str, int]:
        """The versions below which *namespaces* (or their databases) hold nothing, by
        namespace: the last drop or rename that emptied them (see :meth:`raise_floor`)."""
        wanted = {namespace: database_of(namespace) for namespace in namespaces}
        names = sorted({*wanted, *wanted.values()})
        if not names:
            return {}
        values = await self._redis.hmget(self._keys.floors, names)
        found = {name: int(value) for name, value in zip(names, values, strict=True) if value}
        floors = {ns: max(found.get(ns, 0), found.get(db, 0)) for ns, db in wanted.items()}
        return {namespace: floor for namespace, floor in floors.items() if floor}

    async def raise_floor(self, namespace: str, version: int) -> None:
        """Make every change of *namespace* (a collection, or a whole database) older
        than *version* stale from now on: the namespace was emptied at *version*."""
        await _RAISE_FLOOR(self._redis, [self._keys.floors], [namespace, version])

    async def put(self, records: Mapping[str, VersionRecord]) -> None:
        """Write *records* (by document key) at once, outside any indexer commit."""
        if records:
            async with self._redis.pipeline(transaction=True) as pipe:
                self.stage(pipe, records)
                await pipe.execute()

    async def remove(self, doc_keys: Sequence[str]) -> None:
        """Delete the records of *doc_keys*."""
        names = [self._keys.version(key) for key in doc_keys]
        for start in range(0, len(names), 500):
            await self._redis.delete(*names[start : start + 500])

    async def keys_in(self, namespace: str) -> AsyncIterator[str]:
        """The document keys with a record under *namespace* (a collection, or a whole
        database), by SCAN (each at least once)."""
        pattern = _escape_glob(namespace) + ("/*" if "." in namespace else ".*")
        async for doc_key in self._scan(pattern):
            yield doc_key

    async def all_keys(self) -> AsyncIterator[str]:
        """Every document key with a record, by SCAN (each at least once; Redis may
        repeat a key when the keyspace is rehashed during the scan)."""
        async for doc_key in self._scan("*"):
            yield doc_key

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        """The document keys whose record key matches *pattern* after the prefix."""
        prefix = self._keys.version_prefix
        async for key in self._redis.scan_iter(match=prefix + pattern, count=1000):
            yield as_text(key)[len(prefix) :]
