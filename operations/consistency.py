"""`check [--repair] [--sample N]`: compare MongoDB, the version records and Milvus.

Three passes, each holding one page in memory: the watched collections in ``_id``
order (every document the filter admits must be indexed as it is now), Milvus's rows
(each must belong to such a document and be listed by its record), and the version
records (each live one must belong to such a document). Which documents the first
pass saw, and which are already reported, live in Redis sets for the run
(checkpoints.checks). A document changed while the check runs is judged again at the
end or left out, never reported for a change the indexer has simply not applied yet
when it was read. With *repair*, each problem queues its fix in the bulk lane at once:
a reindex of the document as it is now, or the delete of one the source lacks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from bson.decimal128 import Decimal128
from pymongo.asynchronous.collection import AsyncCollection

from cdc.backfill import not_in_source
from cdc.fields import document_id, id_value
from cdc.mapping import ChangeOrigin
from cdc.namespaces import Document
from cdc.positions import cluster_time
from checkpoints.audit import AuditEntry
from checkpoints.checks import CheckLock, CheckMarks, CheckProgress, CheckResults, drop_versions
from checkpoints.queue import EventQueue, applied_through
from checkpoints.versions import VersionRecord
from core.errors import DocumentRejected, InvalidRequest
from core.events import REINDEX_PREFIX, DocumentEvent
from operations.context import Context, IndexView
from operations.inspection import PROBLEMS, Expected, Finding, expected, judge

log = structlog.get_logger(__name__)

PAGE = 500
"""Documents, records or keys handled at a time."""
EXAMPLES = 5
"""Examples kept per kind of problem."""
REPAIR_LIMIT = 10_000
"""Fixes one `check --repair` queues at most; the report says how many were left."""
AGAIN_LIMIT = 10_000
"""Documents the check judges again at the end (changed while it read them, or looking
wrong, maybe only because the indexer had not caught up): their keys are all it holds
in memory. Beyond that, a changed one is left out and a wrong-looking one reported."""
SETTLE_SECONDS = 30.0
"""How long the check waits, before judging again, for the indexer to catch up with
the check's start (when a service indexes beside it)."""


@dataclass
class Tally:
    """What a check found: counts and examples per problem, and what it queued."""

    checked: int = 0
    changed_while_checking: int = 0
    unsettled: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEMS, 0))
    examples: dict[str, list[dict[str, str]]] = field(
        default_factory=lambda: {verdict: [] for verdict in PROBLEMS}
    )
    repairs_queued: int = 0
    repairs_left: int = 0

    def note(self, doc_key: str, finding: Finding) -> None:
        self.counts[finding.verdict] += 1
        if len(self.examples[finding.verdict]) < EXAMPLES:
            self.examples[finding.verdict].append({"doc_key": doc_key, "reason": finding.reason})


def parse_sample(value: Any) -> int | None:
    """``--sample``'s value: None for a full check. Raises InvalidRequest."""
    if value is None:
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(value).strip() != str(size):
        raise InvalidRequest(f"--sample must be a whole number of documents, at least 1: {value!r}")
    return size


async def check(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    """Run a consistency check (see the module) and keep its report as the last result,
    with an audit entry. Raises InvalidRequest for a bad --sample."""
    sample = parse_sample(args.get("sample"))
    repair = bool(args.get("repair"))
    started = time.monotonic()
    started_at = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:12]
    lock = CheckLock(context.redis, context.keys, run_id)
    running = await lock.take(f"by {by} since {started_at.isoformat()}")
    if running is not None:
        raise InvalidRequest(
            f"a consistency check is already running ({running}): wait for it; "
            "`cdc-sidecar status` shows the last result"
        )
    try:
        async with context.index() as view:
            run = _Run(context, view, run_id, lock, sample=sample, repair=repair)
            try:
                await run.all_passes()
            finally:
                await run.marks.discard()
    finally:
        await lock.release()
    tally = run.tally
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(),
        "seconds": round(time.monotonic() - started, 3),
        "by": by,
        "sample": sample,
        "checked": tally.checked,
        "problems": dict(tally.counts),
        "examples": {k: v for k, v in tally.examples.items() if v},
        "changed_while_checking": tally.changed_while_checking,
        "indexer_caught_up": not tally.unsettled,
        "repair": {"queued": tally.repairs_queued, "left": tally.repairs_left} if repair else None,
    }
    total = sum(tally.counts.values())
    outcome = f"done: {tally.checked} documents checked, {total} problems"
    if repair:
        outcome += f", {tally.repairs_queued} fixes queued"
    command = "check" + (" --repair" if repair else "") + (f" --sample {sample}" if sample else "")
    entry = AuditEntry(datetime.now(UTC), command, by, outcome)
    await CheckResults(context.redis, context.keys).save(report, fence=context.fence, audit=entry)
    log.info("consistency_checked", checked=tally.checked, problems=total, **tally.counts)
    return report


class _Run:
    def __init__(
        self,
        context: Context,
        view: IndexView,
        run_id: str,
        lock: CheckLock,
        *,
        sample: int | None,
        repair: bool,
    ) -> None:
        self.context = context
        self.view = view
        self.sample = sample
        self.repair = repair
        self.run_id = run_id
        self.lock = lock
        self.marks = CheckMarks(context.redis, context.keys, self.run_id)
        self.tally = Tally()
        self.database = context.scope.database
        self.namespaces: list[str] = []
        self.again: dict[str, str] = {}
        self.start_ms = int(time.time() * 1000)
        self.start = 0
        self.progress = CheckProgress(context.redis, context.keys)
        self.phase = "starting"
        self.estimated = 0

    async def all_passes(self) -> None:
        watched = await self.context.scope.collection_names(self.context.mongo)
        database = self.context.mongo[self.database]
        counts = [await database[name].estimated_document_count() for name in watched]
        self.estimated = sum(min(count, self.sample or count) for count in counts)
        self.start = await self._now()
        self.namespaces = [f"{self.database}.{name}" for name in watched]
        self.phase = "MongoDB"
        for name in watched:
            await self._source_pass(name)
        self.phase = "Milvus rows"
        await self._rows_pass()
        if self.sample is None:
            self.phase = "version records"
            await self._records_pass()
        self.phase = "judging again"
        await self._judge_again()
        self.phase = "done"
        await self._publish()

    def _defer(self, namespace: str, doc_key: str) -> bool:
        """Judge *doc_key* again at the end (False when the list is full)."""
        if doc_key not in self.again and len(self.again) >= AGAIN_LIMIT:
            return False
        self.again[doc_key] = namespace
        return True

    async def _judge_again(self) -> None:
        """The documents that changed while read, or looked wrong, judged once more after
        the indexer caught up with the check's start (when a service indexes beside it)."""
        if not self.again:
            return
        await self._settle()
        pending = [(namespace, key) for key, namespace in self.again.items()]
        self.again = {}
        for start in range(0, len(pending), PAGE):
            part = pending[start : start + PAGE]
            flagged = await self.marks.flagged([key for _, key in part])
            part = [pair for pair, done in zip(part, flagged, strict=True) if not done]
            await self._judge_known(part, counted={key for _, key in part}, final=True)

    async def _settle(self) -> None:
        """Wait (at most SETTLE_SECONDS) until capture has read past the check's start
        and the indexer has applied everything queued, when a service runs beside."""
        if not self.context.live:
            return
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if await applied_through(self.context.redis, self.context.keys, self.start):
                return
            await asyncio.sleep(0.2)
        self.tally.unsettled = True

    async def _now(self) -> int:
        """The cluster's time now. Every page asks for it, so the check's lock is
        renewed here too."""
        await self.lock.renew()
        return await cluster_time(self.context.mongo, self.database)

    async def _publish(self) -> None:
        """How far the check is, for the command line's progress bar."""
        progress = {
            "run": self.run_id,
            "phase": self.phase,
            "checked": self.tally.checked,
            "estimated": self.estimated,
        }
        await self.progress.publish(progress)

    # The source: every document the filter admits must be indexed as it is now.

    async def _source_pass(self, collection: str) -> None:
        namespace = f"{self.database}.{collection}"
        handle = self.context.mongo[self.database][collection]
        projection = self.view.mapper.projection()
        read_at = await self._now()
        page: list[Mapping[str, Any]] = []
        async for document in self._documents(handle, projection):
            page.append(document)
            if len(page) == PAGE:
                await self._judge_documents(namespace, page, read_at)
                page = []
        if page:
            await self._judge_documents(namespace, page, read_at)

    async def _documents(
        self, handle: AsyncCollection[Document], projection: list[str] | None
    ) -> AsyncIterator[Document]:
        """Every document of *handle* in _id order, or a random sample of them."""
        if self.sample is None:
            async for document in handle.find(
                {}, projection=projection, sort=[("_id", 1)], batch_size=PAGE
            ):
                yield document
            return
        stages: list[dict[str, Any]] = [{"$sample": {"size": self.sample}}]
        if projection is not None:
            stages.append({"$project": dict.fromkeys(projection, 1)})
        async for document in await handle.aggregate(stages):
            yield document

    async def _judge_documents(
        self, namespace: str, documents: Sequence[Mapping[str, Any]], read_at: int
    ) -> None:
        """Judge documents read after *read_at*: a record newer than that may describe a
        change the read missed, so such a document is judged again at the end."""
        by_key = {f"{namespace}/{document_id(doc['_id'])}": doc for doc in documents}
        sources = {key: expected(self.view, doc) for key, doc in by_key.items()}
        await self.marks.see([key for key, src in sources.items() if isinstance(src, Expected)])
        keys = list(by_key)
        records = await self.view.versions.get_many(keys)
        stored = await self._stored(keys, records)
        now = await self._now()
        again = await self.view.versions.get_many(keys)
        self.tally.checked += len(keys)
        found: dict[str, Finding] = {}
        for key, source in sources.items():
            record = records.get(key)
            changed = again.get(key) != record or (
                record is not None and now >= record.version > read_at
            )
            finding = None if changed else judge(source, record, stored.get(key, set()), now=now)
            if finding is not None and finding.verdict not in PROBLEMS:
                continue
            if self._defer(namespace, key):
                continue
            if finding is None:
                self.tally.changed_while_checking += 1
                continue
            found[key] = finding
        await self._report(found, records, by_key, namespace_of=namespace, version=read_at)
        await self._publish()

    async def _stored(
        self, doc_keys: Sequence[str], records: Mapping[str, VersionRecord]
    ) -> dict[str, set[str]]:
        """The ids Milvus holds of each document: of those a live record lists (cheap
        lookups by id), or every row of a document without one (a filter scan)."""
        listed = {
            key: record.chunk_ids
            for key in doc_keys
            if (record := records.get(key)) is not None and not record.deleted
        }
        present = await self.view.store.existing([cid for ids in listed.values() for cid in ids])
        stored = {key: {cid for cid in ids if cid in present} for key, ids in listed.items()}
        scanned = await self.view.store.chunk_ids_of([k for k in doc_keys if k not in listed])
        stored.update((key, set(ids)) for key, ids in scanned.items())
        return stored

    # Milvus: each row must belong to a document the source admits, listed by its record.

    async def _rows_pass(self) -> None:
        fields = ["id", "doc_key", "namespace", "updated_at"]
        async for page in self.view.store.pages(fields, prefix=await self._sample_prefix()):
            rows: dict[str, list[str]] = {}
            namespaces: dict[str, str] = {}
            recent: set[str] = set()
            for row in page:
                rows.setdefault(row["doc_key"], []).append(str(row["id"]))
                namespaces[row["doc_key"]] = row["namespace"]
                if int(row["updated_at"]) >= self.start_ms:
                    recent.add(row["doc_key"])
            for key in recent:
                if not self._defer(namespaces[key], key):
                    self.tally.changed_while_checking += 1
            keys = [key for key in rows if key not in recent]
            for start in range(0, len(keys), PAGE):
                part = keys[start : start + PAGE]
                await self._rows_of(part, rows, namespaces)
            await self._publish()

    async def _rows_of(
        self, doc_keys: list[str], rows: Mapping[str, list[str]], namespaces: Mapping[str, str]
    ) -> None:
        """Judge, from the source, the documents of these rows that the source pass did
        not see, and those whose record does not list all of these rows."""
        seen = dict(zip(doc_keys, await self.marks.seen(doc_keys), strict=True))
        flagged = await self.marks.flagged(doc_keys)
        open_keys = [key for key, done in zip(doc_keys, flagged, strict=True) if not done]
        records = await self.view.versions.get_many([key for key in open_keys if seen[key]])
        suspect = [
            (namespaces[key], key)
            for key in open_keys
            if not seen[key]
            or (record := records.get(key)) is None
            or record.deleted
            or any(cid not in record.chunk_ids for cid in rows[key])
        ]
        await self._judge_known(suspect, counted={key for key in doc_keys if seen[key]})

    async def _sample_prefix(self) -> str:
        """With --sample N, a random id prefix under which about N rows lie; else ""."""
        if self.sample is None:
            return ""
        rows = await self.view.store.count()
        digits = 0
        while rows > self.sample * 16 ** (digits + 1):
            digits += 1
        return uuid.uuid4().hex[:digits]

    # The version records: each live one must belong to a document the source admits.

    async def _records_pass(self) -> None:
        batch: list[str] = []
        async for key in self.view.versions.all_keys():
            batch.append(key)
            if len(batch) == PAGE:
                await self._records_of(batch)
                batch = []
        if batch:
            await self._records_of(batch)

    async def _records_of(self, doc_keys: list[str]) -> None:
        seen = await self.marks.seen(doc_keys)
        flagged = await self.marks.flagged(doc_keys)
        open_keys = [
            key for key, s, f in zip(doc_keys, seen, flagged, strict=True) if not s and not f
        ]
        records = await self.view.versions.get_many(open_keys)
        live = [key for key in open_keys if (r := records.get(key)) is not None and not r.deleted]
        await self._judge_known([(self._namespace_of(key), key) for key in live])

    def _namespace_of(self, doc_key: str) -> str:
        for namespace in self.namespaces:
            if doc_key.startswith(namespace + "/"):
                return namespace
        return doc_key.split("/", 1)[0]

    # Documents known by key: read from the source, their records and all their rows.

    async def _judge_known(
        self,
        pairs: Sequence[tuple[str, str]],
        counted: Collection[str] = (),
        *,
        final: bool = False,
    ) -> None:
        """Judge the documents *pairs* name ((namespace, doc_key)), reading each from
        the source (those in *counted* were counted as checked already). Unless *final*,
        one that changed while read or looks wrong is judged again at the end; when
        final, one that changed is left out (and counted as such)."""
        if not pairs:
            return
        read_at = await self._now()
        documents: dict[str, Mapping[str, Any]] = {}
        by_namespace: dict[str, list[str]] = {}
        for namespace, key in pairs:
            by_namespace.setdefault(namespace, []).append(key)
        for namespace, keys in by_namespace.items():
            if namespace in self.namespaces:
                documents.update(await self._lookup(namespace, keys))
        keys = [key for _, key in pairs]
        records = await self.view.versions.get_many(keys)
        stored = await self.view.store.chunk_ids_of(keys)
        now = await self._now()
        again = await self.view.versions.get_many(keys)
        found: dict[str, Finding] = {}
        for namespace, key in pairs:
            if key not in counted:
                self.tally.checked += 1
            record = records.get(key)
            changed = again.get(key) != record or (
                record is not None and now >= record.version > read_at
            )
            finding = None
            if not changed:
                source = self._source_of(namespace, documents.get(key))
                finding = judge(source, record, set(stored.get(key, [])), now=now)
            if finding is not None and finding.verdict not in PROBLEMS:
                continue
            if not final and self._defer(namespace, key):
                continue
            if finding is None:
                self.tally.changed_while_checking += 1
                continue
            found[key] = finding
        namespaces = {key: namespace for namespace, key in pairs}
        await self._report(found, records, documents, namespace_of=namespaces, version=read_at)

    def _source_of(
        self, namespace: str, document: Mapping[str, Any] | None
    ) -> Expected | str | None:
        if document is not None:
            return expected(self.view, document)
        if namespace in self.namespaces:
            return None
        return f"its collection {namespace} is not watched (or no longer exists)"

    async def _lookup(self, namespace: str, doc_keys: Sequence[str]) -> dict[str, Any]:
        """The source's documents of *doc_keys* in *namespace*, by doc key."""
        collection = namespace[len(self.database) + 1 :]
        ids: list[Any] = []
        for key in doc_keys:
            value = id_value(key[len(namespace) + 1 :])
            ids.append(value)
            if isinstance(value, float):  # a Decimal128 _id of the same text shares the key
                ids.append(Decimal128(key[len(namespace) + len("/$num:") :]))
        cursor = self.context.mongo[self.database][collection].find(
            {"_id": {"$in": ids}}, projection=self.view.mapper.projection()
        )
        return {f"{namespace}/{document_id(doc['_id'])}": doc async for doc in cursor}

    # Reporting and repairing.

    async def _report(
        self,
        found: Mapping[str, Finding],
        records: Mapping[str, VersionRecord],
        documents: Mapping[str, Mapping[str, Any]],
        *,
        namespace_of: str | Mapping[str, str],
        version: int,
    ) -> None:
        """Count and flag the problems among *found*; with repair, queue their fixes (as
        of *version*, the time the documents were read at)."""
        problems = {key: f for key, f in found.items() if f.verdict in PROBLEMS}
        if not problems:
            return
        await self.marks.flag(list(problems))
        for key, finding in problems.items():
            self.tally.note(key, finding)
        if not self.repair:
            return
        room = REPAIR_LIMIT - self.tally.repairs_queued
        fixing = list(problems)[: max(room, 0)]
        self.tally.repairs_left += len(problems) - len(fixing)
        impossible = [
            key
            for key in fixing
            if (record := records.get(key)) is not None and record.version > version
        ]
        await drop_versions(
            self.context.redis, self.context.keys, impossible, fence=self.context.fence
        )
        events = [
            self._fix(
                key,
                namespace_of if isinstance(namespace_of, str) else namespace_of[key],
                documents.get(key),
                version,
            )
            for key in fixing
        ]
        await self._room(len(events))
        await EventQueue(self.context.redis, self.context.keys).append_bulk(
            events, self.context.keys.backfill, "", fence=self.context.fence, job_id=""
        )
        self.tally.repairs_queued += len(events)

    async def _room(self, adding: int) -> None:
        """With a service indexing beside, wait until the bulk lane has room for *adding*
        more entries under its limit (as a backfill does), so repairs do not grow the
        queue without bound; with none, nothing drains it, so nothing waits."""
        if not self.context.live:
            return
        queue = EventQueue(self.context.redis, self.context.keys)
        while await queue.bulk_backlog() + adding > max(self.context.bulk_room, adding):
            await self.lock.renew()
            await asyncio.sleep(0.2)

    def _fix(
        self, doc_key: str, namespace: str, document: Mapping[str, Any] | None, version: int
    ) -> DocumentEvent:
        """The reindex event that brings *doc_key* in line with *document* (None: the
        source lacks it), as of *version*."""
        key = doc_key[len(namespace) + 1 :]
        origin = ChangeOrigin(
            event_id=f"{REINDEX_PREFIX}check:{self.run_id}:{version}:{doc_key}",
            document_id=key,
            namespace=namespace,
            version=version,
            timestamp=datetime.fromtimestamp(version >> 32, UTC),
        )
        if document is not None and self.view.mapper.matches(document):
            try:
                return self.view.mapper.created(document, origin)
            except DocumentRejected as error:
                return self.view.mapper.rejected(origin, error)
        return not_in_source(
            origin.event_id, namespace, key, version, "not in the source (consistency check)"
        )
