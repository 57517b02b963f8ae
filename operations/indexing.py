"""`pause` and `resume`: indexing stopped and started again by an operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from checkpoints.audit import AuditEntry
from checkpoints.pause import PauseFlag
from core.errors import InvalidRequest
from operations.context import Context

MAX_REASON = 500
PAUSE_WAIT_SECONDS = 5.0
"""How long `pause` waits for the indexer to stop reading before it answers."""


async def pause(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    reason = args.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidRequest(f"--reason must be text of at most {MAX_REASON} characters")
    flag = PauseFlag(context.redis, context.keys)
    before = await flag.read()
    command = f"pause --reason {reason!r}" if reason else "pause"
    entry = AuditEntry(datetime.now(UTC), command, by, "done", _state(before), "paused")
    await flag.pause(reason, fence=context.fence, audit=entry)
    note = " (it already was)" if before is not None else ""
    stopped = await context.reads_paused(PAUSE_WAIT_SECONDS)
    reads = (
        "the indexer reads nothing new"
        if stopped
        else f"the indexer did not stop reading within {PAUSE_WAIT_SECONDS:g} s (an outage?): "
        "it stops before its next read"
    )
    return {
        "paused": True,
        "reads_stopped": stopped,
        "message": f"indexing paused{note}: {reads}; batches in flight finish, nothing new "
        "is indexed until `cdc-sidecar resume`; capture goes on until the queue's limit",
    }


async def resume(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    flag = PauseFlag(context.redis, context.keys)
    before = await flag.read()
    entry = AuditEntry(datetime.now(UTC), "resume", by, "done", _state(before), "indexing")
    await flag.resume(fence=context.fence, audit=entry)
    note = "indexing resumed" if before is not None else "indexing was not paused"
    return {"paused": False, "message": note}


def _state(paused: dict[str, Any] | None) -> str:
    return "indexing" if paused is None else f"paused by {paused['by']} since {paused['since']}"
