"""A backfill: every watched document queued again, resumably, beside the live stream.

The scan reads each collection in ``_id`` order, in chunks. Each chunk's events go
to the queue's bulk lane in one atomic write with the job's progress (the last
``_id`` queued), so a crash or stop resumes after the last chunk queued, not from
the start. A chunk's events carry as version the cluster time taken just before the
read that produced them, in the same causally consistent session: every live
change the read missed is later than that and wins whichever is applied first;
a live change the read already saw may apply again after it, harmlessly (its
updateLookup state is as new or newer). The
indexer embeds only documents whose content hash differs from the one indexed,
so a backfill of an index in sync embeds nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from bson import json_util
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from cdc.bson_order import after
from cdc.capture import Fence
from cdc.fields import document_id
from cdc.mapping import ChangeMapper, ChangeOrigin
from cdc.namespaces import Document
from cdc.positions import cluster_time
from checkpoints.backfills import BackfillJob
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue, JobReplaced
from checkpoints.versions import VersionRecord
from core.errors import DocumentRejected
from core.events import REINDEX_PREFIX, DocumentDeletedEvent, DocumentEvent
from core.retry import raise_if_cancelling, sleep_unless

log = structlog.get_logger("cdc.backfill")


def job_kind(job: BackfillJob) -> str:
    """The event id prefix (without its colon) of *job*'s events."""
    return REINDEX_PREFIX.rstrip(":") if job.force else "backfill"


class IndexedDocuments(Protocol):
    """What the index holds, for a resynchronisation's sweep."""

    async def documents(self) -> Mapping[str, tuple[str, str]]:
        """doc_key -> (namespace, document_id) of every document with rows."""
        ...

    async def versions(self, doc_keys: Sequence[str]) -> Mapping[str, VersionRecord]: ...

_EJSON = json_util.CANONICAL_JSON_OPTIONS


class Backfill:
    """Runs BackfillJobs of one pipeline under its lease (appends are fenced and
    raise LeaseLost). *chunk* documents are read and queued at a time; reading
    holds back while the bulk lane holds more than *max_bulk* entries, so a
    backfill never grows the queue without bound and live changes stay ahead."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        mapper: ChangeMapper,
        queue: EventQueue,
        keys: Keys,
        fence: Fence,
        *,
        chunk: int = 200,
        max_bulk: int = 1000,
        indexed: IndexedDocuments | None = None,
    ) -> None:
        """*indexed* lists the documents the index holds and their version records,
        for the sweep of a resynchronisation (jobs with ``sweep_before``)."""
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self._client = client
        self._database = database
        self._mapper = mapper
        self._queue = queue
        self._keys = keys
        self._fence = fence
        self._chunk = chunk
        self._max_bulk = max_bulk
        self._indexed = indexed

    async def run(self, job: BackfillJob, stop: asyncio.Event) -> BackfillJob:
        """Scan what *job* has left and return it as saved last: finished, as far as it
        got when *stop* was set, or when another job replaced it (the caller then
        runs that one)."""
        try:
            return await self._run(job, stop)
        except JobReplaced:
            log.warning("backfill_replaced", id=job.id, note="another job took its place")
            return job

    async def _run(self, job: BackfillJob, stop: asyncio.Event) -> BackfillJob:
        log.info("backfill_started", id=job.id, done=job.done, queued=job.queued)
        for collection in job.collections:
            if collection in job.done:
                continue
            while not stop.is_set():
                raise_if_cancelling()
                if not await self._room(stop):
                    break
                job = await self._chunk_of(job, collection)
                if collection in job.done:
                    break
            if stop.is_set():
                log.info("backfill_stopped", id=job.id, scanned=job.scanned, queued=job.queued)
                return job
        if job.ids:
            job = await self._delete_unfound(job)
        if job.sweep_before is not None:
            swept = await self._sweep(job, job.sweep_before, stop)
            if swept is None:
                return job
            job = swept
        finished = replace(job, state="done", finished_at=datetime.now(UTC).isoformat())
        await self._save([], finished)
        log.info("backfill_finished", id=job.id, scanned=job.scanned, queued=job.queued)
        return finished

    async def _sweep(
        self, job: BackfillJob, before: int, stop: asyncio.Event
    ) -> BackfillJob | None:
        """Once the scan's events are indexed, delete every indexed document of the
        job's collections that the scan did not see (its version record is older than
        *before*, or gone), and every indexed document of a collection of the
        database that no longer exists (dropped while the history was lost). The
        deletes carry *before* as version: a document written again since has a
        later version and stays. None when stopped."""
        if self._indexed is None:
            raise ValueError("a sweeping backfill needs the indexed documents")
        while await self._queue.bulk_backlog() > 0:
            await sleep_unless(stop, 0.2)
            if stop.is_set():
                return None
        stored = await self._indexed.documents()
        prefix = f"{self._database}."
        existing = set(await self._client[self._database].list_collection_names())
        swept = {prefix + name for name in job.collections} | {
            namespace
            for namespace, _ in stored.values()
            if namespace.startswith(prefix) and namespace[len(prefix) :] not in existing
        }
        candidates = [(key, place) for key, place in stored.items() if place[0] in swept]
        for start in range(0, len(candidates), self._chunk):
            raise_if_cancelling()
            part = candidates[start : start + self._chunk]
            records = await self._indexed.versions([key for key, _ in part])
            gone = [
                not_in_source(f"resync:{job.id}:{key}", namespace, document, before)
                for key, (namespace, document) in part
                if (record := records.get(key)) is None
                or (not record.deleted and record.version < before)
            ]
            job = replace(job, swept=job.swept + len(gone))
            await self._save(gone, job)
        log.info("backfill_swept", id=job.id, deleted=job.swept)
        return job

    async def _delete_unfound(self, job: BackfillJob) -> BackfillJob:
        """A reindex of named ``_id``s: the ones no watched collection holds (or the
        filter excludes) are deleted from the index, at the time of this read."""
        named = [json_util.loads(raw, json_options=_EJSON) for raw in job.ids]
        gone: list[DocumentEvent] = []
        async with self._client.start_session(causal_consistency=True) as session:
            version = await self._read_time(session)
            found: dict[str, set[str]] = {}
            for collection in job.collections:
                cursor = self._client[self._database][collection].find(
                    self._query(job, collection), projection={"_id": 1}, session=session
                )
                found[collection] = {document_id(doc["_id"]) async for doc in cursor}
        for collection, present in found.items():
            namespace = f"{self._database}.{collection}"
            gone += [
                not_in_source(
                    f"{job_kind(job)}:{job.id}:{version}:{namespace}:{key}", namespace, key, version
                )
                for key in dict.fromkeys(document_id(value) for value in named)
                if key not in present
            ]
        advanced = replace(job, queued=job.queued + len(gone))
        await self._save(gone, advanced)
        return advanced

    async def _room(self, stop: asyncio.Event) -> bool:
        """Wait until the bulk lane has room; False when *stop* came first."""
        while await self._queue.bulk_backlog() > self._max_bulk:
            await sleep_unless(stop, 0.2)
            if stop.is_set():
                return False
        return True

    async def _chunk_of(self, job: BackfillJob, collection: str) -> BackfillJob:
        """Read and queue the next chunk of *collection*; the job as saved with it."""
        query = self._query(job, collection)
        async with self._client.start_session(causal_consistency=True) as session:
            version = await self._read_time(session)
            cursor = self._client[self._database][collection].find(
                query,
                projection=self._mapper.projection(),
                sort=[("_id", 1)],
                limit=self._chunk,
                session=session,
            )
            documents = await cursor.to_list()
        namespace = f"{self._database}.{collection}"
        events = [self._event(job, namespace, document, version) for document in documents]
        last = (
            json_util.dumps(documents[-1]["_id"], json_options=_EJSON)
            if len(documents) == self._chunk
            else None
        )
        advanced = job.advanced(collection, last, scanned=len(documents), queued=len(events))
        await self._save(events, advanced)
        return advanced

    async def _read_time(self, session: AsyncClientSession) -> int:
        """The cluster's time now, read in *session* before the session's reads: what
        they read is at least as new (causal consistency), so events carrying it as
        version never outrank a change the reads missed, and a change they saw but
        that the stream delivers later applies again harmlessly (same state or newer)."""
        return await cluster_time(self._client, self._database, session)

    def _query(self, job: BackfillJob, collection: str) -> dict[str, Any]:
        parts: list[Mapping[str, Any]] = [self._mapper.filter]
        if job.filter:
            parts.append(json_util.loads(job.filter, json_options=_EJSON))
        if job.ids:
            named = [json_util.loads(raw, json_options=_EJSON) for raw in job.ids]
            parts.append({"_id": {"$in": named}})
        resume = job.after.get(collection)
        if resume is not None:
            parts.append(after("_id", json_util.loads(resume, json_options=_EJSON)))
        parts = [part for part in parts if part]
        return {"$and": parts} if len(parts) > 1 else dict(parts[0]) if parts else {}

    def _event(
        self, job: BackfillJob, namespace: str, document: Mapping[str, Any], version: int
    ) -> DocumentEvent:
        key = document_id(document["_id"])
        origin = ChangeOrigin(
            event_id=f"{job_kind(job)}:{job.id}:{version}:{namespace}:{key}",
            document_id=key,
            namespace=namespace,
            version=version,
            timestamp=datetime.fromtimestamp(version >> 32, UTC),
        )
        try:
            return self._mapper.created(document, origin)
        except DocumentRejected as error:
            log.error("document_rejected", namespace=namespace, document_id=key, error=str(error))
            return self._mapper.rejected(origin, error)

    async def _save(self, events: Sequence[DocumentEvent], job: BackfillJob) -> None:
        """Queue *events* with *job* as the saved progress, unless another job replaced it
        (JobReplaced)."""
        await self._queue.append_bulk(
            events, self._keys.backfill, job.to_json(), fence=self._current_fence(), job_id=job.id
        )

    def _current_fence(self) -> int:
        return self._fence() if callable(self._fence) else self._fence


def not_in_source(
    event_id: str,
    namespace: str,
    document: str,
    version: int,
    reason: str = "not in the source",
) -> DocumentEvent:
    """The event that deletes a document the source does not hold (as of *version*)."""
    return DocumentDeletedEvent(
        event_id=event_id,
        document_id=document,
        namespace=namespace,
        version=version,
        timestamp=datetime.fromtimestamp(version >> 32, UTC),
        metadata={"reason": reason},
    )
