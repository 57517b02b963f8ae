"""The admin API: the operator commands of the command line, over HTTP.

Each endpoint validates its input, then calls the same operation the command line
calls (operations/): state changes go through operations.control.perform, so the
lease holder carries them out under its fence and they are audited the same way.
Every state-changing endpoint, and every one that shows document text (explain,
dead letters), needs the admin token."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from bson import json_util
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from api.auth import require_token
from api.errors import ApiError, from_failure
from api.state import ServiceState
from checkpoints.checks import CheckProgress, CheckResults
from checkpoints.keys import Keys
from operations import deadletters, positions
from operations.backfills import follow_state, parse_filter
from operations.context import no_index
from operations.deadletters import Selection
from sidecar.perform import perform_for
from sidecar.status import pipeline_status


class ErrorBody(BaseModel):
    """Every error's body: one line a person can act on (and, for 422, each problem)."""

    error: str
    problems: list[str] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "The request cannot be carried out as given; nothing was changed."),
        (401, "The admin token is missing or wrong."),
        (403, "No admin token is configured: the admin API is off."),
        (409, "The pipeline's state refused the command."),
        (422, "The body or a parameter has the wrong shape (each problem named)."),
        (503, "Redis, MongoDB or the lease holder did not answer; try again."),
    )
}

router = APIRouter(responses=_ERRORS)
Token = Depends(require_token)
T = TypeVar("T")


class _Body(BaseModel):
    # Strict: `"repair": 0` is not a boolean, and an unknown field is a typo.
    model_config = ConfigDict(extra="forbid", strict=True)


QueryText = dict[str, Any] | str | None
"""A MongoDB query: a JSON object, or the same as text in extended JSON."""


@contextmanager
def _answered() -> Iterator[None]:
    """Turn what the block raises into the answer it means (api.errors.from_failure)."""
    try:
        yield
    except ApiError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure is an answer
        raise from_failure(error) from None


def _filter_text(query: QueryText) -> str:
    """*query* as the extended JSON text the operations take, checked. Raises ApiError."""
    if query is None or query == "":
        return ""
    text = query if isinstance(query, str) else json_util.dumps(query)
    with _answered():
        parse_filter(text)
    return text


class ReindexBody(_Body):
    ids: list[str] = Field(default_factory=list, max_length=10_000, description="Document _ids.")
    filter: QueryText = Field(default=None, description="Or the documents this query matches.")


class PauseBody(_Body):
    reason: str = Field(default="", max_length=500)


class ResetBody(_Body):
    to_now: bool = False
    to_time: str | None = Field(default=None, description="ISO 8601 with a timezone.")
    to_token: dict[str, Any] | str | None = Field(
        default=None, description="A resume token, as GET /checkpoint shows it."
    )
    rescan: bool = False


class BackfillBody(_Body):
    collections: list[str] = Field(default_factory=list, max_length=1000)
    filter: QueryText = None


class CheckBody(_Body):
    repair: bool = False
    sample: int | None = Field(default=None, ge=1, le=10_000_000)


class SelectionBody(_Body):
    ids: list[str] = Field(default_factory=list, max_length=10_000)
    all: bool = False


def _service(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def _run(request: Request, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Carry out the operator command *name* as the command line does; the audit log
    names the API's caller."""
    state = _service(request)
    redis, _ = _pipeline(request)
    client = request.client.host if request.client is not None else "unknown"
    index = state.index()
    with _answered():
        return await perform_for(
            state.settings,
            redis,
            name,
            args,
            index=no_index if index is None else lambda: index,
            by=f"http api ({client})",
        )


def _pipeline(request: Request) -> tuple[Redis, Keys]:
    """The service's Redis and the pipeline's keys; ApiError 503 before it has Redis."""
    state = _service(request)
    if state.redis is None:
        raise ApiError(
            503, "the service is starting: try again in a few seconds", headers={"Retry-After": "5"}
        )
    return state.redis, Keys(state.settings.pipeline)


async def _read(reading: Awaitable[T]) -> T:
    with _answered():
        return await reading


@router.get("/index/status", tags=["index"])
async def index_status(request: Request) -> dict[str, Any]:
    """The pipeline's checkpoint, queue, last applied change and counters (as `status`),
    and this replica's phase."""
    report = await _read(pipeline_status(*_pipeline(request)))
    return {**report, "replica": _service(request).readiness()[1]}


@router.get("/index/queue", tags=["index"])
async def index_queue(request: Request) -> dict[str, Any]:
    """Queue lengths by lane, entries pending, dead letters and the backfill's progress."""
    report = await _read(pipeline_status(*_pipeline(request)))
    shown = ("queue_length", "backlog_bulk", "pending", "dead_letters", "paused", "backfill")
    return {name: report[name] for name in shown}


@router.post("/index/reindex", tags=["index"], dependencies=[Token])
async def index_reindex(body: ReindexBody, request: Request) -> dict[str, Any]:
    """Reindex documents by _id, or those a query matches (as `reindex`)."""
    args = {"ids": body.ids, "filter": _filter_text(body.filter)}
    return await _run(request, "reindex", args)


@router.post("/index/pause", tags=["index"], dependencies=[Token])
async def index_pause(request: Request, body: PauseBody | None = None) -> dict[str, Any]:
    """Stop indexing until resumed; capture goes on up to the queue's limit."""
    reason = body.reason if body is not None else ""
    return await _run(request, "pause", {"reason": reason})


@router.post("/index/resume", tags=["index"], dependencies=[Token])
async def index_resume(request: Request) -> dict[str, Any]:
    return await _run(request, "resume", {})


@router.get("/checkpoint", tags=["checkpoint"])
async def checkpoint_show(request: Request) -> dict[str, Any]:
    """The saved position, the lease holder and the latest operator commands."""
    return await _read(positions.show(*_pipeline(request)))


@router.post("/checkpoint/reset", tags=["checkpoint"], dependencies=[Token])
async def checkpoint_reset(body: ResetBody, request: Request) -> dict[str, Any]:
    """Move the position: exactly one of to_now, to_time, to_token, rescan."""
    token = body.to_token
    with _answered():
        target = positions.ResetTarget.parse(
            to_now=body.to_now,
            to_time=body.to_time,
            to_token=json.dumps(token) if isinstance(token, dict) else token,
            rescan=body.rescan,
        )
    return await _run(request, "checkpoint reset", target.args())


@router.get("/backfill", tags=["backfill"])
async def backfill_show(request: Request) -> dict[str, Any]:
    """The backfill job (if any) and the bulk lane's backlog."""
    return await _read(follow_state(*_pipeline(request)))


@router.post("/backfill", tags=["backfill"], dependencies=[Token])
async def backfill_start(body: BackfillBody, request: Request) -> dict[str, Any]:
    """Queue watched documents again beside the live stream (as `backfill`)."""
    args = {"collections": body.collections, "filter": _filter_text(body.filter)}
    return await _run(request, "backfill", args)


@router.post("/backfill/cancel", tags=["backfill"], dependencies=[Token])
async def backfill_cancel(request: Request) -> dict[str, Any]:
    return await _run(request, "backfill cancel", {})


@router.get("/check", tags=["check"])
async def check_show(request: Request) -> dict[str, Any]:
    """The running check's progress and the last finished check's report."""
    redis, keys = _pipeline(request)
    return {
        "progress": await _read(CheckProgress(redis, keys).read()),
        "last": await _read(CheckResults(redis, keys).last()),
    }


@router.post("/check", tags=["check"], dependencies=[Token])
async def check_run(request: Request, body: CheckBody | None = None) -> dict[str, Any]:
    """Compare MongoDB, the version records and Milvus (as `check`); answers when done."""
    body = body or CheckBody()
    return await _run(request, "check", {"repair": body.repair, "sample": body.sample})


@router.get("/explain/{document_id}", tags=["check"], dependencies=[Token])
async def explain(
    document_id: str,
    request: Request,
    collection: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    """How one document stands in MongoDB, its version record, Milvus and the queues."""
    return await _run(request, "explain", {"id": document_id, "collection": collection})


@router.get("/dlq", tags=["dead letters"], dependencies=[Token])
async def dlq_list(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Dead letters, oldest first; `next` is the `after` of the next page."""
    return await _read(deadletters.listing(*_pipeline(request), limit=limit, after=after))


@router.get("/dlq/{entry_id}", tags=["dead letters"], dependencies=[Token])
async def dlq_show(entry_id: str, request: Request) -> dict[str, Any]:
    """One dead letter with its original event."""
    return await _read(deadletters.show(*_pipeline(request), entry_id))


async def _move(name: str, body: SelectionBody, request: Request) -> dict[str, Any]:
    with _answered():
        selection = Selection.parse(body.ids, body.all)
    return await _run(request, name, selection.args())


@router.post("/dlq/replay", tags=["dead letters"], dependencies=[Token])
async def dlq_replay(body: SelectionBody, request: Request) -> dict[str, Any]:
    """Queue dead letters' events again: `ids`, or `all`."""
    return await _move("dlq replay", body, request)


@router.post("/dlq/purge", tags=["dead letters"], dependencies=[Token])
async def dlq_purge(body: SelectionBody, request: Request) -> dict[str, Any]:
    """Delete dead letters for good (audited): `ids`, or `all`."""
    return await _move("dlq purge", body, request)
