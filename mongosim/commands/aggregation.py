"""``aggregate`` (plain, or a change stream when the first stage is $changeStream),
``getMore`` and ``killCursors``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongosim.change_events import Scope
from mongosim.change_streams import DEFAULT_AWAIT_SECONDS, RESUMABLE_LABEL, ChangeStreamCursor
from mongosim.context import ANY, READ, Call, CommandSpec
from mongosim.cursors import DEFAULT_FIRST_BATCH, ResultCursor, cursor_reply
from mongosim.errors import RETRYABLE_CODES, CloseConnection, CommandError, type_mismatch
from mongosim.storage import INTERNAL_DATABASES


def _batch_size(options: Any, field: str) -> int | None:
    if not isinstance(options, Mapping):
        return None
    value = options.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise type_mismatch(field, "non-negative integer")
    return value


async def aggregate(call: Call) -> dict[str, Any]:
    """Run a pipeline; a leading ``$changeStream`` opens a change stream instead."""
    pipeline = call.body.get("pipeline")
    if not isinstance(pipeline, list) or not all(isinstance(s, Mapping) for s in pipeline):
        raise type_mismatch("aggregate.pipeline", "array of documents")
    if call.body.get("explain"):
        raise CommandError(115, "mongosim does not explain aggregations")
    if "cursor" not in call.body:
        raise CommandError(
            9, "The 'cursor' option is required, except for aggregate with the explain argument"
        )
    if any("$changeStream" in stage for stage in pipeline[1:]):
        raise CommandError(40602, "$changeStream is only valid as the first stage in a pipeline")
    if pipeline and "$changeStream" in pipeline[0]:
        return await _open_change_stream(call, pipeline)
    if call.target == 1:
        raise CommandError(115, "mongosim supports aggregate: 1 only for $changeStream")
    coll = call.collection_name()
    namespace = f"{call.db}.{coll}"
    collection = call.deployment.storage.collection(call.db, coll)
    results = ResultCursor(namespace, list(collection.aggregate([dict(s) for s in pipeline])))
    size = _batch_size(call.body.get("cursor"), "batchSize")
    batch = results.take(DEFAULT_FIRST_BATCH if size is None else size)
    if results.exhausted:
        return cursor_reply(0, namespace, batch, first=True)
    return cursor_reply(call.deployment.cursors.add(results), namespace, batch, first=True)


def _scope(call: Call, options: Mapping[str, Any]) -> tuple[Scope, str]:
    cluster = bool(options.get("allChangesForCluster", False))
    if call.target == 1:
        if cluster:
            if call.db != "admin":
                raise CommandError(
                    73,
                    "A $changeStream with 'allChangesForCluster:true' may only be opened on the "
                    "'admin' database, and with no collection name",
                )
            return Scope(None, None), "admin.$cmd.aggregate"
        if call.db in INTERNAL_DATABASES:
            raise CommandError(
                73, f"$changeStream may not be opened on the internal {call.db} database"
            )
        return Scope(call.db, None), f"{call.db}.$cmd.aggregate"
    coll = call.collection_name()
    if cluster:
        raise CommandError(
            73,
            "A $changeStream with 'allChangesForCluster:true' may only be opened on the "
            "'admin' database, and with no collection name",
        )
    if call.db in INTERNAL_DATABASES or coll.startswith("system."):
        raise CommandError(
            73, f"$changeStream may not be opened on the internal {call.db}.{coll} namespace"
        )
    call.deployment.storage.collection(call.db, coll)  # 166 for a view, as on the server
    return Scope(call.db, coll), f"{call.db}.{coll}"


async def _open_change_stream(call: Call, pipeline: list[Mapping[str, Any]]) -> dict[str, Any]:
    options = pipeline[0]["$changeStream"]
    if not isinstance(options, Mapping):
        raise type_mismatch("$changeStream", "object")
    scope, namespace = _scope(call, options)
    cursor = ChangeStreamCursor(
        call.deployment.storage, namespace, scope, options, list(pipeline[1:])
    )
    size = _batch_size(call.body.get("cursor"), "batchSize")
    batch, exhausted = await cursor.next_batch(size, 0.0)
    cursor_id = 0 if exhausted else call.deployment.cursors.add(cursor)
    return cursor_reply(
        cursor_id, namespace, batch, first=True, postBatchResumeToken=cursor.resume_token
    )


async def get_more(call: Call) -> dict[str, Any]:
    """The next batch of a cursor; change streams wait up to ``maxTimeMS`` (1 s by default).

    Raises CommandError 43 CursorNotFound for an unknown cursor.
    """
    cursor_id = call.target
    if not isinstance(cursor_id, int) or isinstance(cursor_id, bool):
        raise type_mismatch("getMore", "long")
    coll = call.body.get("collection")
    if not isinstance(coll, str):
        raise type_mismatch("getMore.collection", "string")
    size = _batch_size(call.body, "batchSize")
    max_time_ms = call.body.get("maxTimeMS")
    max_time = DEFAULT_AWAIT_SECONDS
    if isinstance(max_time_ms, int | float) and not isinstance(max_time_ms, bool):
        max_time = max(float(max_time_ms), 0.0) / 1000.0
    deployment = call.deployment
    namespace = f"{call.db}.{coll}"
    cursor = deployment.cursors.checkout(int(cursor_id), namespace)
    close = True
    try:
        failure = deployment.failpoints.after_getmore_checkout()
        if failure is not None:
            if failure.close_connection:
                raise CloseConnection()
            if failure.error is not None:
                error = failure.error
                resumable = error.code in RETRYABLE_CODES and not error.labels_fixed
                if isinstance(cursor, ChangeStreamCursor) and resumable:
                    error.labels.append(RESUMABLE_LABEL)
                raise error
        batch, exhausted = await cursor.next_batch(size, max_time)
        close = exhausted
    finally:
        deployment.cursors.checkin(int(cursor_id), close=close)
    fields: dict[str, Any] = {}
    if isinstance(cursor, ChangeStreamCursor):
        fields["postBatchResumeToken"] = cursor.resume_token
    return cursor_reply(0 if exhausted else int(cursor_id), namespace, batch, first=False, **fields)


async def kill_cursors(call: Call) -> dict[str, Any]:
    """Close the listed cursors."""
    ids = call.body.get("cursors")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise type_mismatch("killCursors.cursors", "array of longs")
    killed, missing = call.deployment.cursors.kill(ids)
    return {
        "cursorsKilled": killed,
        "cursorsNotFound": missing,
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }


HANDLERS: dict[str, CommandSpec] = {
    "aggregate": CommandSpec(aggregate, READ),
    "getMore": CommandSpec(get_more, ANY),
    "killCursors": CommandSpec(kill_cursors, ANY),
}
