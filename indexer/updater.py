"""The index updater: applies a batch of document events to Milvus.

It is one EventHandler among possibly several. For a batch it keeps the newest
event per document, plans each document against its version record, embeds
only new chunk texts (in one call across the batch), upserts the new rows
before deleting the stale ones (so a document never lacks vectors), and only
then records the new versions. A crash anywhere before the records are written
replays the batch; chunk ids are deterministic, so the replay converges."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from checkpoints.versions import VersionRecord
from core.events import DocumentEvent, is_collection_event, is_reindex
from indexer.embedding import Embedder
from indexer.handlers import Outcome, applied
from indexer.plan import (
    DocumentPlan,
    PlannedChunk,
    leftover_ids,
    pipeline_fingerprint,
    plan_document,
    rewrite_overwritten,
)
from indexer.store import ChunkRow

log = structlog.get_logger(__name__)


class Chunking(Protocol):
    def __call__(self, text: str) -> list[str]: ...

    @property
    def fingerprint(self) -> str: ...


class ChunkStore(Protocol):
    async def upsert(self, rows: Sequence[ChunkRow]) -> None: ...

    async def delete(self, ids: Sequence[str]) -> None: ...

    async def fetch(self, ids: Sequence[str]) -> dict[str, ChunkRow]: ...

    async def chunk_ids_of(self, doc_keys: Sequence[str]) -> dict[str, list[str]]: ...

    async def flush_if_due(self) -> None: ...


class VersionLedger(Protocol):
    async def get_many(self, doc_keys: Sequence[str]) -> dict[str, VersionRecord]: ...

    async def floors(self, namespaces: Iterable[str]) -> dict[str, int]: ...


class RememberedChunks:
    """*chunker* with its last results remembered by text: a batch chunks the same
    text more than once (planning, and checking what interrupted attempts at the
    document's other events may have written), and chunking calls the tokenizer,
    which competes with the model for the CPU."""

    def __init__(self, chunker: Chunking, size: int = 256) -> None:
        self._split = functools.lru_cache(maxsize=size)(lambda text: tuple(chunker(text)))

    def __call__(self, text: str) -> list[str]:
        return list(self._split(text))


def newest_per_document(events: Sequence[DocumentEvent]) -> dict[str, DocumentEvent]:
    """The event that wins for each document: the highest version, and among
    equal versions the one queued last (so a delete that comes last wins)."""
    latest: dict[str, DocumentEvent] = {}
    for event in events:
        current = latest.get(event.key)
        if current is None or event.version >= current.version:
            latest[event.key] = event
    return latest


class IndexUpdater:
    """Keeps Milvus equal to the documents the events describe (invariants 2-4)."""

    def __init__(
        self,
        *,
        store: ChunkStore,
        embedder: Embedder,
        chunker: Chunking,
        versions: VersionLedger,
        version_guard: bool = True,
        on_embedded: Callable[[int], Awaitable[None]] | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        """*on_embedded* is told how many texts each embed call encoded, as soon as
        it returns (before anything is written). *before_write* runs before the
        batch's first write to Milvus and raises to prevent it (the lease holder
        passes Lease.check_fresh: a holder that may have lost its lease writes
        nothing)."""
        self._on_embedded = on_embedded
        self._before_write = before_write
        self._store = store
        self._embedder = embedder
        self._chunker = RememberedChunks(chunker)
        self._versions = versions
        self._version_guard = version_guard
        self._fingerprint = pipeline_fingerprint(embedder.fingerprint, chunker.fingerprint)

    @property
    def fingerprint(self) -> str:
        """The pipeline fingerprint the content hashes of its version records use."""
        return self._fingerprint

    def can_handle(self, event: DocumentEvent) -> bool:
        return not is_collection_event(event)

    async def handle(self, event: DocumentEvent) -> Outcome:
        return await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[DocumentEvent]) -> Outcome:
        """Apply *events* to Milvus and return the version records and counters the
        caller must commit with the acknowledgement. Raises VectorStoreUnavailable /
        EmbedderUnavailable (retriable) or another error; Milvus may then hold part
        of the batch, which a replay converges (chunk ids are deterministic)."""
        latest = newest_per_document(events)
        by_document: dict[str, list[DocumentEvent]] = {}
        for event in events:
            by_document.setdefault(event.key, []).append(event)
        records = await self._versions.get_many(list(latest))
        floors = await self._versions.floors({event.namespace for event in latest.values()})
        if floors:
            records = _floored(latest, records, floors)
        plans = [
            rewrite_overwritten(
                self._plan(event, records.get(key)), by_document[key], chunker=self._chunker
            )
            for key, event in latest.items()
        ]
        plans, stored = await self._heal_missing_rows(plans, records)
        rows = await self._rows(plans, stored)
        if self._before_write is not None:
            self._before_write()
        if rows:
            await self._store.upsert(rows)
        stale = [cid for plan in plans for cid in plan.stale_ids]
        stale += self._leftovers(by_document, plans, records)
        if stale:
            await self._store.delete(stale)
        await self._store.flush_if_due()
        return self._outcome(plans)

    async def tick(self) -> None:
        """Called when the queue is idle: lets the store flush on its time policy."""
        await self._store.flush_if_due()

    def _plan(self, event: DocumentEvent, record: VersionRecord | None) -> DocumentPlan:
        """The plan of *event* against *record*. A reindex does not trust the record
        (Milvus may have lost rows it lists, or hold rows it does not): behind the
        version guard it plans from scratch, and _heal_missing_rows deletes the rows
        Milvus holds under the document that the plan lacks."""
        guarded = plan_document(
            event,
            record,
            chunker=self._chunker,
            pipeline_fingerprint=self._fingerprint,
            version_guard=self._version_guard,
        )
        if is_reindex(event) and record is not None and guarded.decision != "stale":
            return self._plan(event, None)
        return guarded

    def _leftovers(
        self,
        by_document: Mapping[str, list[DocumentEvent]],
        plans: list[DocumentPlan],
        records: Mapping[str, VersionRecord],
    ) -> list[str]:
        """Chunks that earlier, interrupted attempts at the batch's events may have
        left behind (*by_document*: the batch's events by document key)."""
        return [
            cid
            for plan in plans
            for cid in leftover_ids(
                by_document[plan.event.key],
                plan,
                records.get(plan.event.key),
                chunker=self._chunker,
            )
        ]

    async def _heal_missing_rows(
        self, plans: list[DocumentPlan], records: Mapping[str, VersionRecord]
    ) -> tuple[list[DocumentPlan], dict[str, ChunkRow]]:
        """Bring the plans in line with what Milvus actually holds.

        A document without any version record (new, or its record was lost with
        Redis's data) is deleted by the ids Milvus finds under its key, and a
        reindexed one drops every row Milvus holds under its key that its plan
        lacks (one filter scan for the batch; rare). Both reuse the stored rows of
        chunk ids Milvus already has: a chunk id names the chunk's text, and a
        collection holds vectors of one model only, so the stored vector is the
        one embedding would produce. A document whose rows to rewrite are gone
        from Milvus (its data was lost or restored) is re-planned from scratch:
        slower, but it converges."""
        unrecorded = {p.event.key for p in plans if p.event.key not in records}
        reindexed = {p.event.key for p in plans if is_reindex(p.event) and p.decision != "stale"}
        adoptable = unrecorded | reindexed
        scanned = [
            p.event.key
            for p in plans
            if p.event.key in reindexed or (p.decision == "delete" and p.event.key in unrecorded)
        ]
        found = await self._store.chunk_ids_of(scanned)
        plans = [_drop_unplanned(p, found.get(p.event.key, [])) for p in plans]
        wanted = [c.id for p in plans for c in p.with_action("rewrite")]
        wanted += [c.id for p in plans if p.event.key in adoptable for c in p.with_action("embed")]
        stored = await self._store.fetch(wanted) if wanted else {}
        healed = []
        for plan in plans:
            if plan.event.key in adoptable:
                plan = _adopt(plan, stored)
            if all(c.id in stored for c in plan.with_action("rewrite")):
                healed.append(plan)
            else:
                log.warning("rows_missing_reindexing", doc_key=plan.event.key)
                fresh = self._plan(plan.event, None)
                keep = {chunk.id for chunk in fresh.chunks}
                before = [c.id for c in plan.chunks] + list(plan.stale_ids)
                stale = tuple(cid for cid in before if cid not in keep)
                healed.append(replace(fresh, stale_ids=stale))
        return healed, stored

    async def _rows(
        self, plans: list[DocumentPlan], stored: Mapping[str, ChunkRow]
    ) -> list[ChunkRow]:
        pending = [(plan, chunk) for plan in plans for chunk in plan.with_action("embed")]
        vectors = (
            await self._embedder.embed([chunk.text for _, chunk in pending]) if pending else []
        )
        if vectors and self._on_embedded is not None:
            await self._on_embedded(len(vectors))
        fresh = {chunk.id: vector for (_, chunk), vector in zip(pending, vectors, strict=True)}
        now = int(time.time() * 1000)
        rows = []
        for plan in plans:
            for chunk in plan.chunks:
                if chunk.action == "embed":
                    rows.append(self._row(plan.event, chunk, chunk.text, fresh[chunk.id], now))
                elif chunk.action == "rewrite":
                    old = stored[chunk.id]
                    rows.append(self._row(plan.event, chunk, old.text, old.vector, now))
        return rows

    @staticmethod
    def _row(
        event: DocumentEvent, chunk: PlannedChunk, text: str, vector: Sequence[float], now: int
    ) -> ChunkRow:
        return ChunkRow(
            id=chunk.id,
            doc_key=event.key,
            namespace=event.namespace,
            document_id=event.document_id,
            chunk_index=chunk.index,
            text=text,
            vector=vector,
            updated_at=now,
            metadata=event.metadata,
        )

    @staticmethod
    def _outcome(plans: list[DocumentPlan]) -> Outcome:
        now = datetime.now(UTC)
        outcome = Outcome()
        counts = outcome.counts
        for plan in plans:
            if plan.decision == "stale":
                log.info("stale_change_skipped", doc_key=plan.event.key, version=plan.event.version)
                continue
            deleted = plan.decision == "delete"
            if deleted and plan.event.metadata.get("reason") == "rejected":
                outcome.rejected[plan.event.key] = str(plan.event.metadata.get("error", ""))
            outcome.versions[plan.event.key] = VersionRecord(
                version=plan.event.version,
                content_hash=plan.content_hash,
                metadata_hash=plan.metadata_hash,
                chunk_ids=() if deleted else tuple(c.id for c in plan.chunks),
                deleted=deleted,
                updated_at=now,
            )
            embedded = len(plan.with_action("embed"))
            counts["deletes"] += deleted
            counts["documents_indexed"] += plan.decision in ("reindex", "metadata")
            counts["chunks_embedded"] += embedded
            counts["embeddings_skipped"] += len(plan.chunks) - embedded
        last = max((plan.event for plan in plans), key=lambda event: event.version, default=None)
        if last is not None:
            outcome.last_applied = applied(last, now)
        return outcome


def _floored(
    latest: Mapping[str, DocumentEvent],
    records: Mapping[str, VersionRecord],
    floors: Mapping[str, int],
) -> dict[str, VersionRecord]:
    """*records* as the planner must see them when namespaces were emptied (dropped or
    renamed away) at the versions *floors* gives: a document whose record is older than
    its namespace's floor, or missing, was deleted at the floor, so a change older than
    that is stale."""
    floored = dict(records)
    for key, event in latest.items():
        floor = floors.get(event.namespace, 0)
        record = records.get(key)
        if floor and (record is None or record.version < floor):
            floored[key] = VersionRecord(
                version=floor,
                content_hash="",
                metadata_hash="",
                chunk_ids=(),
                deleted=True,
                updated_at=datetime.now(UTC),
            )
    return floored


def _adopt(plan: DocumentPlan, stored: Mapping[str, ChunkRow]) -> DocumentPlan:
    """*plan* with the chunks Milvus already stores rewritten from their stored rows
    instead of embedded."""
    chunks = tuple(
        replace(chunk, action="rewrite")
        if chunk.action == "embed" and chunk.id in stored
        else chunk
        for chunk in plan.chunks
    )
    return replace(plan, chunks=chunks)


def _drop_unplanned(plan: DocumentPlan, stored_ids: Sequence[str]) -> DocumentPlan:
    """*plan* also deleting the stored chunk ids (found in Milvus under its document)
    that it does not plan to keep."""
    planned = {chunk.id for chunk in plan.chunks}
    extra = [cid for cid in stored_ids if cid not in planned]
    return replace(plan, stale_ids=tuple(dict.fromkeys([*plan.stale_ids, *extra])))
