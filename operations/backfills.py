"""`backfill`: queue every watched document (or some) again, beside the live stream."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from bson import json_util
from bson.errors import InvalidBSON

from cdc.query import Query, UnsupportedQuery
from checkpoints.audit import AuditEntry
from checkpoints.backfills import BackfillJob, BackfillStore
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
    query = parse_filter(str(args.get("filter") or ""))
    watched = await context.scope.collection_names(context.mongo)
    asked = [str(name) for name in args.get("collections") or []]
    unknown = [name for name in asked if name not in watched]
    if unknown:
        raise InvalidRequest(
            f"not a watched collection: {', '.join(unknown)} (watched: {', '.join(watched)})"
        )
    store = BackfillStore(context.redis, context.keys)
    current = await store.load()
    if current is not None and current.state == "running":
        raise InvalidRequest(
            f"backfill {current.id} is still running ({current.queued} of about "
            f"{current.estimated} documents queued): wait for it (`cdc-sidecar status`)"
        )
    collections = asked or watched
    database = context.mongo[context.scope.database]
    estimated = sum([await database[name].estimated_document_count() for name in collections])
    filter_json = json_util.dumps(query, json_options=_EJSON) if query else ""
    job = BackfillJob(
        id=uuid.uuid4().hex[:12],
        collections=collections,
        filter=filter_json,
        by=by,
        requested_at=datetime.now(UTC).isoformat(),
        estimated=estimated,
    )
    command = "backfill" + "".join(f" --collection {name}" for name in asked)
    if filter_json:
        command += f" --filter {filter_json}"
    entry = AuditEntry(datetime.now(UTC), command, by, f"started {job.id}", None, None)
    await store.start(job, fence=context.fence, audit=entry)
    return {"backfill": progress(job)}
