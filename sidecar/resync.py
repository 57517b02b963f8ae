"""Resynchronising after lost history, without taking the index offline."""

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
    """What the lease holder does when the change stream lost its position
    (CDC_ON_HISTORY_LOST=resync): capture restarts at the stream's current end, and a
    backfill of every watched collection, recorded first, rescans the source
    (re-embedding only changed documents) and then deletes the vectors of documents
    the source no longer holds. Searches keep being served throughout."""

    def __init__(
        self, mongo: AsyncMongoClient[dict[str, Any]], redis: Redis, keys: Keys, settings: Settings
    ) -> None:
        self._mongo = mongo
        self._redis = redis
        self._keys = keys
        self._scope = WatchScope(settings.database, settings.collections)

    async def start(self, by: str, fence: int, why: str) -> None:
        """Record the backfill, then move the position (a crash between the two
        meets the lost history again at the next start and starts over)."""
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
            reason="history lost",
            sweep_before=position.cluster_time,
        )
        log.error(
            "history_lost_resyncing",
            backfill=job.id,
            collections=collections,
            note="capture restarts at the current end of the stream; the backfill rescans "
            "the collections and deletes vectors of documents the source no longer has",
            error=why,
        )
        store = BackfillStore(self._redis, self._keys)
        running = await store.load()
        outcome = f"started backfill {job.id}"
        if running is not None and running.state == "running":
            # It stops at its next write (JobReplaced): the resync covers every collection.
            outcome += f", replacing backfill {running.id} (it had queued {running.queued})"
        started = AuditEntry(now, "resync (history lost)", by, outcome)
        await store.start(job, fence=fence, audit=started)
        tokens = ResumeTokenStore(self._redis, self._keys)
        before, after = await tokens.load(), position.checkpoint()
        moved = AuditEntry(
            now,
            "checkpoint reset --to-now (history lost)",
            by,
            "done",
            describe(before),
            describe(after),
        )
        await tokens.reset(after, fence=fence, audit=moved)
