"""Rescanning the source without taking the index offline: the first start, and the
resynchronisation after lost history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from cdc.namespaces import WatchScope
from cdc.positions import current_position
from checkpoints.audit import AuditEntry
from checkpoints.backfills import BackfillJob, BackfillStore
from checkpoints.keys import Keys
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from checkpoints.versions import VersionRecord, VersionStore
from indexer.store import VectorStore
from operations.positions import describe
from sidecar.settings import Settings

log = structlog.get_logger(__name__)


class IndexedDocuments:
    """What the index holds, as a resynchronisation's sweep reads it."""

    def __init__(self, store: VectorStore, versions: VersionStore) -> None:
        self._store = store
        self._versions = versions

    async def documents(self) -> dict[str, tuple[str, str]]:
        return await self._store.documents()

    async def versions(self, doc_keys: Sequence[str]) -> dict[str, VersionRecord]:
        return await self._versions.get_many(doc_keys)


class Resync:
    """Rescanning the source beside the live stream: capture (re)starts at the stream's
    current end, and a backfill of every watched collection, recorded first, reads
    every document (re-embedding only changed ones). On the first start (no
    position saved) that is the whole initial load, resumable like any backfill.
    When the change stream lost its position (CDC_ON_HISTORY_LOST=resync), the
    backfill then also deletes the vectors of documents the source no longer holds.
    Searches keep being served throughout."""

    def __init__(
        self, mongo: AsyncMongoClient[dict[str, Any]], redis: Redis, keys: Keys, settings: Settings
    ) -> None:
        self._mongo = mongo
        self._redis = redis
        self._keys = keys
        self._scope = WatchScope(settings.database, settings.collections)

    async def first_start(self, by: str, fence: int) -> None:
        """No position is saved: load every watched document through a backfill."""
        await self._start(by, fence, reason="first start", sweep=False)

    async def start(self, by: str, fence: int, why: str) -> None:
        """The history is lost (*why*): rescan, then sweep what the source no longer has."""
        log.error(
            "history_lost_resyncing",
            note="capture restarts at the current end of the stream; the backfill rescans "
            "the collections and deletes vectors of documents the source no longer has",
            error=why,
        )
        await self._start(by, fence, reason="history lost", sweep=True)
        await Stats(self._redis, self._keys).incr({"history_lost": 1})

    async def _start(self, by: str, fence: int, *, reason: str, sweep: bool) -> None:
        """Record the backfill, then move the position (a crash between the two finds
        the same situation at the next start, which starts over)."""
        position = await current_position(self._mongo, self._scope)
        collections = await self._scope.collection_names(self._mongo)
        database = self._mongo[self._scope.database]
        now = datetime.now(UTC)
        job = BackfillJob(
            id=uuid.uuid4().hex[:12],
            collections=collections,
            filter="",
            by=by,
            requested_at=now.isoformat(),
            estimated=sum([await database[c].estimated_document_count() for c in collections]),
            reason=reason,
            sweep_before=position.cluster_time if sweep else None,
        )
        log.warning("rescan_started", reason=reason, backfill=job.id, collections=collections)
        store = BackfillStore(self._redis, self._keys)
        running = await store.load()
        outcome = f"started backfill {job.id}"
        if running is not None and running.state == "running":
            # It stops at its next write (JobReplaced): the rescan covers every collection.
            outcome += f", replacing backfill {running.id} (it had queued {running.queued})"
        started = AuditEntry(now, f"{'resync' if sweep else 'backfill'} ({reason})", by, outcome)
        await store.start(job, fence=fence, audit=started)
        tokens = ResumeTokenStore(self._redis, self._keys)
        before, after = await tokens.load(), position.checkpoint()
        moved = AuditEntry(
            now,
            f"checkpoint reset --to-now ({reason})",
            by,
            "done",
            describe(before),
            describe(after),
        )
        await tokens.reset(after, fence=fence, audit=moved)
