"""How one document stands: what the source says must be indexed, what the version
record says is indexed, what Milvus holds, and the verdict. `explain` shows it for one
document; the consistency check (operations.consistency) judges every document the
same way."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bson import json_util

from cdc.fields import document_id
from checkpoints.deadletters import DeadLetters
from checkpoints.queue import EventQueue
from checkpoints.versions import VersionRecord
from core.errors import DocumentRejected, InvalidRequest
from indexer.plan import content_hash, metadata_hash
from operations.backfills import id_candidates, watched_collections
from operations.context import Context, IndexView

Verdict = Literal["in_sync", "absent", "missing", "stale", "orphan", "version_mismatch"]
PROBLEMS: tuple[Verdict, ...] = ("missing", "orphan", "stale", "version_mismatch")
"""The verdicts a consistency check counts; in_sync and absent are as they should be."""

_PREVIEW = 80


@dataclass(frozen=True)
class Expected:
    """What the index must hold for a document the source has and the filter admits."""

    content_hash: str
    metadata_hash: str
    text_chars: int


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    reason: str


def expected(view: IndexView, document: Mapping[str, Any]) -> Expected | str:
    """What the index must hold for *document*, or why it must hold nothing."""
    if not view.mapper.matches(document):
        return "the pipeline's filter (CDC_FILTER) excludes it"
    try:
        text, metadata = view.mapper.content(document)
    except DocumentRejected as error:
        return f"it cannot be indexed: {error}"
    return Expected(content_hash(text, view.fingerprint), metadata_hash(metadata), len(text))


def judge(
    source: Expected | str | None,
    record: VersionRecord | None,
    stored: Collection[str],
    *,
    now: int,
) -> Finding:
    """The verdict on one document. *source* is what expected() said (None: the source
    does not hold it); *stored* the ids of its rows Milvus holds (all of them, or at
    least those the record lists); *now* the cluster time the judgment is made at."""
    live = record is not None and not record.deleted
    if record is not None and live and record.version > now:
        return Finding(
            "version_mismatch",
            f"its version record claims a change at {_time_of(record.version)}, after the "
            f"cluster's time now ({_time_of(now)}): later changes to it would be ignored",
        )
    if not isinstance(source, Expected):
        why = source or "the source does not hold it"
        if stored:
            return Finding("orphan", f"{why}, but Milvus holds {len(stored)} rows of it")
        if live:
            return Finding("orphan", f"{why}, but its version record says it is indexed")
        return Finding("absent", f"{why}, and the index holds nothing of it")
    if record is None or record.deleted:
        if stored:
            return Finding(
                "version_mismatch",
                f"Milvus holds {len(stored)} rows of it but no version record lists them",
            )
        return Finding("missing", "the source has it; the index holds nothing of it")
    lost = [cid for cid in record.chunk_ids if cid not in stored]
    if lost:
        return Finding(
            "missing",
            f"{len(lost)} of the {len(record.chunk_ids)} rows its version record lists "
            "are not in Milvus",
        )
    if record.content_hash != source.content_hash:
        return Finding("stale", "its text changed since it was indexed")
    if record.metadata_hash != source.metadata_hash:
        return Finding("stale", "its indexed metadata changed since it was indexed")
    extra = [cid for cid in stored if cid not in record.chunk_ids]
    if extra:
        return Finding(
            "version_mismatch",
            f"Milvus holds {len(extra)} rows of it that its version record does not list",
        )
    return Finding("in_sync", "the index holds its current text and metadata")


async def explain(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    """Everything about the document *args["id"]* in every watched collection (or in
    *args["collection"]*): the source, the record, the rows, queued and dead-lettered
    entries, and the verdict. Raises InvalidRequest for an unknown collection."""
    raw = str(args.get("id") or "")
    if not raw:
        raise InvalidRequest("give the document's _id, as `cdc-sidecar explain 42` does")
    asked = args.get("collection")
    collections = await watched_collections(context, [str(asked)] if asked else [])
    candidates = id_candidates(raw)
    async with context.index() as view:
        now = await context.cluster_time()
        subjects = []
        for collection in collections:
            for subject in await _subjects(context, view, collection, candidates, now):
                subjects.append(subject)
    found = [s for s in subjects if s["verdict"] != "absent" or s["document"] is not None]
    return {"id": raw, "documents": found or subjects[:1]}


async def _subjects(
    context: Context,
    view: IndexView,
    collection: str,
    candidates: list[Any],
    now: int,
) -> list[dict[str, Any]]:
    """One report per distinct document key the candidates name in *collection* (42
    names both ``_id: 42`` and ``_id: "42"``)."""
    namespace = f"{context.scope.database}.{collection}"
    cursor = context.mongo[context.scope.database][collection].find(
        {"_id": {"$in": candidates}}, projection=view.mapper.projection()
    )
    found = {document_id(doc["_id"]): doc async for doc in cursor}
    reports = []
    for key in dict.fromkeys(document_id(value) for value in candidates):
        doc_key = f"{namespace}/{key}"
        document = found.get(key)
        reports.append(await _report(context, view, namespace, key, doc_key, document, now))
    return reports


async def _report(
    context: Context,
    view: IndexView,
    namespace: str,
    key: str,
    doc_key: str,
    document: Mapping[str, Any] | None,
    now: int,
) -> dict[str, Any]:
    source = expected(view, document) if document is not None else None
    record = (await view.versions.get_many([doc_key])).get(doc_key)
    rows = await view.store.chunks_of(doc_key)
    finding = judge(source, record, {row.id for row in rows}, now=now)
    queued = await EventQueue(context.redis, context.keys).entries_of(doc_key)
    letters = await DeadLetters(context.redis, context.keys).of_document(doc_key)
    return {
        "namespace": namespace,
        "document_id": key,
        "doc_key": doc_key,
        "document": _source_part(document, source),
        "record": _record_part(record),
        "rows": [
            {
                "id": row.id,
                "chunk_index": row.chunk_index,
                "chars": len(row.text),
                "text": row.text[:_PREVIEW],
            }
            for row in rows
        ],
        "queued": queued,
        "dead_letters": [
            {"id": letter.id, "error": letter.error, "failed_at": letter.failed_at}
            for letter in letters
        ],
        "verdict": finding.verdict,
        "reason": finding.reason,
    }


def _source_part(
    document: Mapping[str, Any] | None, source: Expected | str | None
) -> dict[str, Any] | None:
    if document is None:
        return None
    part: dict[str, Any] = {
        "_id": json_util.dumps(document["_id"], json_options=json_util.RELAXED_JSON_OPTIONS),
        "indexed": isinstance(source, Expected),
    }
    if isinstance(source, Expected):
        part.update(content_hash=source.content_hash, text_chars=source.text_chars)
    else:
        part["why_not"] = source
    return part


def _record_part(record: VersionRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "version": record.version,
        "version_time": _time_of(record.version),
        "deleted": record.deleted,
        "content_hash": record.content_hash,
        "metadata_hash": record.metadata_hash,
        "chunks": len(record.chunk_ids),
        "updated_at": record.updated_at.isoformat(),
    }


def _time_of(version: int) -> str:
    """A packed cluster time (seconds << 32 | increment) as ISO 8601."""
    return datetime.fromtimestamp(version >> 32, UTC).isoformat()
