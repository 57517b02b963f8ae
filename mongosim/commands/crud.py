"""Document commands: insert, update, delete, findAndModify, find, count, distinct."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongosim.context import READ, WRITE, Call, CommandSpec
from mongosim.cursors import DEFAULT_FIRST_BATCH, ResultCursor, cursor_reply
from mongosim.engine import results, run_pipeline
from mongosim.errors import CommandError, type_mismatch
from mongosim.writes import WriteOutcome, is_replacement, sort_spec


def _statements(call: Call, field: str) -> list[dict[str, Any]]:
    value = call.body.get(field)
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise type_mismatch(f"{call.name}.{field}", "array of documents")
    if not value:
        raise CommandError(2, "Write batch sizes must be between 1 and 100000. Got 0 operations.")
    return [dict(item) for item in value]


def _write_reply(outcome: WriteOutcome, *, with_modified: bool = False) -> dict[str, Any]:
    reply: dict[str, Any] = {"n": outcome.n}
    if with_modified:
        reply["nModified"] = outcome.modified
        if outcome.upserted:
            reply["upserted"] = outcome.upserted
    if outcome.errors:
        reply["writeErrors"] = outcome.errors
    reply["ok"] = 1.0
    return reply


async def insert(call: Call) -> dict[str, Any]:
    """Insert ``documents``; per-document failures become ``writeErrors``."""
    documents = _statements(call, "documents")
    outcome = call.deployment.writer.insert(
        call.db, call.collection_name(), documents, bool(call.body.get("ordered", True))
    )
    return _write_reply(outcome)


async def update(call: Call) -> dict[str, Any]:
    """Apply ``updates`` statements (operators, replacements, pipelines, upserts, multi)."""
    statements = _statements(call, "updates")
    outcome = call.deployment.writer.update(
        call.db, call.collection_name(), statements, bool(call.body.get("ordered", True))
    )
    return _write_reply(outcome, with_modified=True)


async def delete(call: Call) -> dict[str, Any]:
    """Apply ``deletes`` statements."""
    statements = _statements(call, "deletes")
    outcome = call.deployment.writer.delete(
        call.db, call.collection_name(), statements, bool(call.body.get("ordered", True))
    )
    return _write_reply(outcome)


def project(call: Call, document: dict[str, Any] | None, fields: Any) -> dict[str, Any] | None:
    """*document* with the ``fields`` projection applied (None stays None)."""
    if document is None or not fields:
        return document
    database = call.deployment.storage.database(call.db)
    return run_pipeline([document], database, [{"$project": fields}])[0]


async def find_and_modify(call: Call) -> dict[str, Any]:
    """Update, replace or remove one document and return it (before or after)."""
    coll = call.collection_name()
    body = call.body
    writer = call.deployment.writer
    query = body.get("query") or {}
    ids = writer.matching_ids(call.db, coll, query, body.get("sort"), False)
    fields = body.get("fields")
    if body.get("remove"):
        if body.get("update") is not None or body.get("new"):
            raise CommandError(9, "remove cannot be combined with update or new")
        removed = writer.remove(call.db, coll, ids[0]) if ids else None
        return {
            "lastErrorObject": {"n": 1 if removed is not None else 0},
            "value": project(call, removed, fields),
            "ok": 1.0,
        }
    update_spec = body.get("update")
    if update_spec is None:
        raise CommandError(9, "Either an update or remove=true must be specified")
    is_replacement(update_spec)
    if not ids:
        if not body.get("upsert"):
            return {"lastErrorObject": {"n": 0, "updatedExisting": False}, "value": None, "ok": 1.0}
        doc_id = writer.upsert(call.db, coll, query, update_spec, body.get("arrayFilters"))
        created = call.deployment.storage.collection(call.db, coll).find_one({"_id": doc_id})
        return {
            "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": doc_id},
            "value": project(call, created, fields) if body.get("new") else None,
            "ok": 1.0,
        }
    collection = call.deployment.storage.collection(call.db, coll)
    before = collection.find_one({"_id": ids[0]})
    writer.apply(call.db, coll, query, ids[0], update_spec, body.get("arrayFilters"))
    after = collection.find_one({"_id": ids[0]})
    return {
        "lastErrorObject": {"n": 1, "updatedExisting": True},
        "value": project(call, after if body.get("new") else before, fields),
        "ok": 1.0,
    }


def _integer(call: Call, field: str) -> int:
    value = call.body.get(field, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise type_mismatch(f"{call.name}.{field}", "integer")
    return value


async def find(call: Call) -> dict[str, Any]:
    """Run a query and return its first batch, keeping a cursor for the rest."""
    coll = call.collection_name()
    body = call.body
    query = body.get("filter") or {}
    if not isinstance(query, Mapping):
        raise type_mismatch("find.filter", "object")
    limit = _integer(call, "limit")
    skip = _integer(call, "skip")
    if skip < 0:
        raise CommandError(51024, "BSON field 'skip' value must be >= 0")
    single_batch = bool(body.get("singleBatch")) or limit < 0
    cursor = call.deployment.storage.collection(call.db, coll).find(
        query,
        body.get("projection") or None,
        skip=skip,
        limit=abs(limit),
        sort=sort_spec(body.get("sort")),
    )
    namespace = f"{call.db}.{coll}"
    found = ResultCursor(namespace, results(cursor))
    batch_size = body.get("batchSize")
    if not isinstance(batch_size, int) or batch_size < 0:
        batch_size = DEFAULT_FIRST_BATCH
    batch = found.take(batch_size)
    if found.exhausted or single_batch:
        return cursor_reply(0, namespace, batch, first=True)
    cursor_id = call.deployment.cursors.add(found)
    return cursor_reply(cursor_id, namespace, batch, first=True)


async def count(call: Call) -> dict[str, Any]:
    """Count matching documents, honouring ``skip`` and ``limit``."""
    coll = call.collection_name()
    query = call.body.get("query") or {}
    collection = call.deployment.storage.collection(call.db, coll)
    limit = abs(_integer(call, "limit"))
    skip = _integer(call, "skip")
    if limit:
        n = collection.count_documents(query, skip=skip, limit=limit)
    else:
        n = collection.count_documents(query, skip=skip)
    return {"n": n, "ok": 1.0}


async def distinct(call: Call) -> dict[str, Any]:
    """The distinct values of ``key`` among matching documents."""
    key = call.body.get("key")
    if not isinstance(key, str):
        raise type_mismatch("distinct.key", "string")
    collection = call.deployment.storage.collection(call.db, call.collection_name())
    return {"values": collection.distinct(key, call.body.get("query") or {}), "ok": 1.0}


HANDLERS: dict[str, CommandSpec] = {
    "insert": CommandSpec(insert, WRITE),
    "update": CommandSpec(update, WRITE),
    "delete": CommandSpec(delete, WRITE),
    "findAndModify": CommandSpec(find_and_modify, WRITE),
    "findandmodify": CommandSpec(find_and_modify, WRITE),
    "find": CommandSpec(find, READ),
    "count": CommandSpec(count, READ),
    "distinct": CommandSpec(distinct, READ),
}
