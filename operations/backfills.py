"""`backfill` and `reindex`: queue watched documents again, beside the live stream."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId, json_util
from bson.errors import InvalidBSON
from redis.asyncio import Redis

from cdc.query import Query, UnsupportedQuery
from checkpoints.audit import AuditEntry
from checkpoints.backfills import BackfillJob, BackfillStore
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from core.errors import InvalidRequest
from operations.context import Context

_EJSON = json_util.CANONICAL_JSON_OPTIONS


def parse_filter(text: str) -> dict[str, Any]:
    """A MongoDB query given as (extended) JSON; "" is none. Raises InvalidRequest."""
    if not text:
        return {}
    try:
        query = json_util.loads(text, json_options=_EJSON)
    except (ValueError, TypeError, InvalidBSON) as error:
        raise InvalidRequest(f"--filter is not JSON: {error}") from None
    if not isinstance(query, dict):
        raise InvalidRequest('--filter must be a query object such as {"lang": "zh"}')
    try:
        Query(query)
    except UnsupportedQuery as error:
        raise InvalidRequest(f"--filter: {error}") from None
    return query


async def follow_state(redis: Redis, keys: Keys) -> dict[str, Any]:
    """The backfill job and the bulk lane's backlog, for following a backfill."""
    job = await BackfillStore(redis, keys).load()
    backlog = await EventQueue(redis, keys).bulk_backlog()
    return {"backfill": progress(job), "backlog_bulk": backlog}


def progress(job: BackfillJob | None) -> dict[str, Any] | None:
    """A job as status and the command line show it."""
    if job is None:
        return None
    return {
        "id": job.id,
        "state": job.state,
        "collections": job.collections,
        "filter": job.filter or None,
        "by": job.by,
        "requested_at": job.requested_at,
        "finished_at": job.finished_at,
        "scanned": job.scanned,
        "queued": job.queued,
        "estimated": job.estimated,
        "done": job.done,
        "reason": job.reason,
        "swept": job.swept,
    }


async def start(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    """Record a new backfill job; the lease holder's backfill task runs it."""
    asked = [str(name) for name in args.get("collections") or []]
    query = parse_filter(str(args.get("filter") or ""))
    collections = await watched_collections(context, asked)
    command = "backfill" + "".join(f" --collection {name}" for name in asked)
    return await _record(context, by, command, collections, query)


async def reindex(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    """Record a reindex: a backfill of the named documents (or those matching a filter)
    whose events make the indexer check Milvus instead of trusting the version
    records; named documents the source no longer has are deleted from the index."""
    raw_ids = [str(value) for value in args.get("ids") or []]
    query = parse_filter(str(args.get("filter") or ""))
    if bool(raw_ids) == bool(query):
        both = "both (a named document the filter excludes would be deleted)"
        raise InvalidRequest(f"give document ids or --filter, not {both if query else 'neither'}")
    ids = [value for raw in raw_ids for value in id_candidates(raw)]
    collections = await watched_collections(context, [])
    command = "reindex" + "".join(f" {raw}" for raw in raw_ids)
    return await _record(context, by, command, collections, query, ids=ids, named=len(raw_ids))


async def cancel(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    """Cancel the running backfill or reindex: it stops at its next write; what it
    already queued is still indexed. Raises InvalidRequest when none runs."""
    store = BackfillStore(context.redis, context.keys)
    job = await store.load()
    if job is None or job.state != "running":
        raise InvalidRequest("no backfill is running (`cdc-sidecar status` shows the last one)")
    now = datetime.now(UTC)
    cancelled = replace(
        job, state="cancelled", finished_at=now.isoformat(), reason=f"cancelled by {by}"
    )
    outcome = (
        f"cancelled {job.id} after {job.queued} of about {job.estimated} documents queued"
    )
    entry = AuditEntry(now, "backfill --cancel", by, outcome)
    if not await store.cancel(cancelled, fence=context.fence, audit=entry):
        raise InvalidRequest(
            f"backfill {job.id} finished or was replaced meanwhile: nothing was cancelled "
            "(`cdc-sidecar status` shows the current one)"
        )
    warning = (
        "; it was resynchronising after lost history: documents deleted meanwhile keep "
        "their vectors until `cdc-sidecar check --repair`"
        if job.sweep_before is not None
        else ""
    )
    message = f"backfill {outcome}; what it queued is still indexed{warning}"
    return {"backfill": progress(cancelled), "message": message}


def id_candidates(text: str) -> list[Any]:
    """The ``_id`` values a document id typed on a command line may stand for: extended
    JSON as written ({"$oid": ...}, 42, "x"), else the text itself, and also the
    ObjectId of 24 hex digits or the integer of digits."""
    try:
        parsed = json_util.loads(text, json_options=_EJSON)
    except (ValueError, TypeError, InvalidBSON):
        parsed = text
    candidates: list[Any] = [parsed]
    if isinstance(parsed, str) and ObjectId.is_valid(parsed) and len(parsed) == 24:
        candidates.append(ObjectId(parsed))
    if isinstance(parsed, int) and not isinstance(parsed, bool):
        candidates.append(text)
    return candidates


async def watched_collections(context: Context, asked: list[str]) -> list[str]:
    """*asked*, or every watched collection when it is empty. Raises InvalidRequest
    naming any asked collection that is not watched."""
    watched = await context.scope.collection_names(context.mongo)
    unknown = [name for name in asked if name not in watched]
    if unknown:
        raise InvalidRequest(
            f"not a watched collection: {', '.join(unknown)} (watched: {', '.join(watched)})"
        )
    return asked or watched


async def _record(
    context: Context,
    by: str,
    command: str,
    collections: list[str],
    query: dict[str, Any],
    *,
    ids: list[Any] | None = None,
    named: int = 0,
) -> dict[str, Any]:
    store = BackfillStore(context.redis, context.keys)
    current = await store.load()
    if current is not None and current.state == "running":
        raise InvalidRequest(
            f"backfill {current.id} is still running ({current.queued} of about "
            f"{current.estimated} documents queued): wait for it (`cdc-sidecar status`)"
        )
    database = context.mongo[context.scope.database]
    if named:
        estimated = named
    else:
        estimated = sum([await database[name].estimated_document_count() for name in collections])
    filter_json = json_util.dumps(query, json_options=_EJSON) if query else ""
    job = BackfillJob(
        id=uuid.uuid4().hex[:12],
        collections=collections,
        filter=filter_json,
        by=by,
        requested_at=datetime.now(UTC).isoformat(),
        estimated=estimated,
        force=ids is not None,
        ids=[json_util.dumps(value, json_options=_EJSON) for value in ids or []],
    )
    if filter_json:
        command += f" --filter {filter_json}"
    entry = AuditEntry(datetime.now(UTC), command, by, f"started {job.id}", None, None)
    await store.start(job, fence=context.fence, audit=entry)
    return {"backfill": progress(job)}
