"""Applying changes to whole collections: a drop empties a namespace in the index, a
rename into the watched set moves its vectors to the new name without embedding.

The scheduler applies such an event alone, after every entry read before it has
finished and before any entry behind it is read, so the changes queued before
a drop are applied first and nothing runs beside the namespace's rewrite. The
namespace's floor (checkpoints.versions) then makes every older change of it
stale: a backfill's earlier read still in the bulk lane cannot bring a dropped
document back. Every step can be repeated after a crash: the event stays
queued until it is acknowledged, and a second run finds the work done."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from checkpoints.versions import VersionRecord, VersionStore
from core.events import (
    CollectionDroppedEvent,
    CollectionRenamedEvent,
    DocumentEvent,
    is_collection_event,
)
from indexer.handlers import Outcome, applied
from indexer.plan import identified
from indexer.rows import ChunkRow
from indexer.store import VectorStore

log = structlog.get_logger(__name__)

_DOCUMENTS = 100
"""Documents rewritten at once: a rename holds their rows, vectors included, in memory."""


class CatalogHandler:
    """The event handler of collection events (see core.events).

    *keep_dropped* keeps the vectors of a dropped collection or database (a rename
    out of the watched set still deletes them). *backfill* is called with the name
    of a collection renamed into the watched set from outside it, whose documents
    must be read from the source. *before_write* runs before each write and raises
    to prevent it (the lease holder's freshness check)."""

    def __init__(
        self,
        store: VectorStore,
        versions: VersionStore,
        *,
        keep_dropped: bool,
        backfill: Callable[[str], Awaitable[None]],
        before_write: Callable[[], None],
    ) -> None:
        self._store = store
        self._versions = versions
        self._keep_dropped = keep_dropped
        self._backfill = backfill
        self._before_write = before_write

    def can_handle(self, event: DocumentEvent) -> bool:
        return is_collection_event(event)

    async def handle(self, event: DocumentEvent) -> Outcome:
        counts: Counter[str] = Counter()
        if isinstance(event, CollectionRenamedEvent):
            counts["documents_rehomed"] = await self._rename(event)
        elif isinstance(event, CollectionDroppedEvent):
            if self._keep_dropped and "to" not in event.metadata:
                log.warning("dropped_collection_kept", namespace=event.namespace)
            else:
                counts["deletes"] = await self._drop(event.namespace, event.version)
        outcome = Outcome(counts=counts, last_applied=applied(event, datetime.now(UTC)))
        log.warning(
            "collection_change_applied",
            change=event.event_type,
            namespace=event.namespace,
            to=getattr(event, "to", None) or event.metadata.get("to"),
            **counts,
        )
        return outcome

    async def _drop(self, namespace: str, version: int) -> int:
        """Empty *namespace* of what is older than *version*; returns the documents deleted."""
        self._before_write()
        await self._versions.raise_floor(namespace, version)
        return await self._empty(namespace, version)

    async def _empty(self, namespace: str, version: int) -> int:
        """Delete the rows and records of *namespace*'s documents older than *version*
        (rows without a record too), and rows a newer record does not name."""
        deleted = 0
        async for ids in self._documents(namespace):
            records = await self._versions.get_many(list(ids))
            gone = [key for key in ids if _older(records.get(key), version)]
            stale = [cid for key in gone for cid in ids[key]]
            stale += [
                cid
                for key, record in records.items()
                if key not in gone
                for cid in ids[key]
                if cid not in record.chunk_ids
            ]
            self._before_write()
            await self._store.delete(stale)
            await self._versions.remove([key for key in gone if key in records])
            deleted += len(gone)
        await self._remove_records(namespace, version)
        return deleted

    async def _documents(self, namespace: str) -> AsyncIterator[dict[str, list[str]]]:
        """The chunk ids of *namespace*'s documents by document key, _DOCUMENTS documents
        at a time, each with all its chunks. The scan splits the id space, and a
        document's chunk ids are spread over it: the rows of one page are not all of
        their documents' rows, and a rename must rewrite a document whole (its ids
        number repeated texts, its record lists every chunk)."""
        async for page in self._store.pages(["doc_key"], namespace=namespace):
            keys = list(dict.fromkeys(str(row["doc_key"]) for row in page))
            for start in range(0, len(keys), _DOCUMENTS):
                found = await self._store.chunk_ids_of(keys[start : start + _DOCUMENTS])
                if found:
                    yield found

    async def _remove_records(self, namespace: str, version: int) -> None:
        """Delete the records left under *namespace* older than *version* (tombstones,
        and records whose rows are already gone)."""
        keys = [key async for key in self._versions.keys_in(namespace)]
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            records = await self._versions.get_many(part)
            self._before_write()
            await self._versions.remove([k for k, r in records.items() if r.version < version])

    async def _rename(self, event: CollectionRenamedEvent) -> int:
        """Move the source namespace's vectors and records to the new name, replacing
        what the target held; returns the documents moved."""
        source, target, version = event.namespace, event.to, event.version
        self._before_write()
        await self._versions.raise_floor(source, version)
        await self._versions.raise_floor(target, version)
        await self._empty(target, version)
        moved = kept = 0
        async for ids in self._documents(source):
            found = await self._store.fetch(
                [cid for chunk_ids in ids.values() for cid in chunk_ids]
            )
            rows: dict[str, list[ChunkRow]] = {}
            for row in found.values():
                rows.setdefault(row.doc_key, []).append(row)
            records = await self._versions.get_many(list(rows))
            newer = {key for key in rows if not _older(records.get(key), version)}
            kept += len(newer)
            moved += await self._move(
                {key: chunks for key, chunks in rows.items() if key not in newer},
                records,
                target,
                version,
            )
        await self._remove_records(source, version)
        if event.backfill or kept:
            # Kept: what such a document held before the rename now lives under the
            # new name in the source, and only a read of the source can bring it.
            await self._backfill(target.partition(".")[2])
        return moved

    async def _move(
        self,
        rows: Mapping[str, Sequence[ChunkRow]],
        records: Mapping[str, VersionRecord],
        target: str,
        version: int,
    ) -> int:
        """Write *rows* (by document key) under *target* with their vectors, with a
        record at *version* for each document that had a live one, then delete the
        originals. The caller leaves out a document whose record is newer than the
        rename: the old name was created again and written to after the rename, and that
        change, taken from the priority or the bulk lane, was applied first."""
        moved: list[ChunkRow] = []
        moved_records: dict[str, VersionRecord] = {}
        new_keys = {key: f"{target}/{chunks[0].document_id}" for key, chunks in rows.items()}
        # A change of the target made after the rename may have been applied first
        # (from the priority lane): it is newer than the moved state, which it replaces.
        newer = await self._versions.get_many(list(new_keys.values()))
        for doc_key, chunks in rows.items():
            record = records.get(doc_key)
            new_key = new_keys[doc_key]
            if not _older(newer.get(new_key), version):
                continue
            renamed = _renamed(sorted(chunks, key=lambda c: c.chunk_index), new_key, target)
            moved += renamed
            if record is not None and not record.deleted:
                moved_records[new_key] = replace(
                    record,
                    version=version,
                    chunk_ids=tuple(row.id for row in renamed),
                    updated_at=datetime.now(UTC),
                )
        self._before_write()
        await self._store.upsert(moved)
        await self._versions.put(moved_records)
        await self._store.delete([row.id for chunks in rows.values() for row in chunks])
        await self._versions.remove([key for key in rows if key in records])
        return len(rows)


def _older(record: VersionRecord | None, version: int) -> bool:
    return record is None or record.version < version


def _renamed(chunks: Sequence[ChunkRow], doc_key: str, namespace: str) -> list[ChunkRow]:
    """*chunks* (one document's, in order) as rows of *doc_key*: the ids the planner
    gives the same texts under that key."""
    ids = identified(doc_key, [chunk.text for chunk in chunks])
    return [
        replace(chunk, id=cid, doc_key=doc_key, namespace=namespace)
        for chunk, (cid, _) in zip(chunks, ids, strict=True)
    ]
