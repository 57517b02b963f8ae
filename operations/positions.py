"""`checkpoint show` and `checkpoint reset`: the stream position under the operator's hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bson import Timestamp, json_util
from bson.errors import InvalidBSON
from redis.asyncio import Redis

from cdc.positions import (
    StreamPosition,
    current_position,
    still_in_history,
    token_cluster_time,
)
from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.tokens import Checkpoint, ResumeTokenStore, pack_timestamp
from core.errors import InvalidRequest
from operations.context import Context

# A reset to a time this far ahead of this machine's clock is refused: it would skip
# every change until then. The slack allows for clocks a little apart.
_FUTURE_SLACK = timedelta(minutes=1)

ResetKind = Literal["now", "time", "token", "rescan"]


@dataclass(frozen=True)
class ResetTarget:
    """Where a reset moves the position: the current end of the stream ("now"), the
    first change at or after a time, after a resume token, or nowhere ("rescan": the
    next start of capture scans every watched collection first)."""

    kind: ResetKind
    value: str | None = None

    @classmethod
    def parse(
        cls, *, to_now: bool, to_time: str | None, to_token: str | None, rescan: bool
    ) -> ResetTarget:
        """The one target the options name. Raises InvalidRequest, saying what to
        give, when they name none, several, or a value that cannot be read."""
        given = [
            name
            for name, value in (
                ("--to-now", to_now),
                ("--to-time", to_time is not None),
                ("--to-token", to_token is not None),
                ("--rescan", rescan),
            )
            if value
        ]
        if len(given) != 1:
            named = f"got {' and '.join(given)}" if given else "got none"
            raise InvalidRequest(
                f"give exactly one of --to-now, --to-time, --to-token, --rescan ({named})"
            )
        if to_time is not None:
            parse_time(to_time)
            return cls("time", to_time)
        if to_token is not None:
            parse_token(to_token)
            return cls("token", to_token)
        return cls("now" if to_now else "rescan")

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ResetTarget:
        """The target :meth:`args` described, validated again. Raises InvalidRequest."""
        kind, value = args.get("kind"), args.get("value")
        return cls.parse(
            to_now=kind == "now",
            to_time=value if kind == "time" else None,
            to_token=value if kind == "token" else None,
            rescan=kind == "rescan",
        )

    def args(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def command(self) -> str:
        """The command line that asks for this reset, for the audit log."""
        if self.value is None:
            return f"checkpoint reset --{'to-now' if self.kind == 'now' else 'rescan'}"
        return f"checkpoint reset --to-{self.kind} {self.value}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant with a timezone, not in the future. Raises InvalidRequest."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"--to-time {text!r} is not an ISO 8601 time: write it like 2026-11-30T08:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise InvalidRequest(
            f"--to-time {text!r} has no timezone: add Z for UTC or an offset such as +08:00"
        )
    if when > datetime.now(UTC) + _FUTURE_SLACK:
        raise InvalidRequest(
            f"--to-time {text!r} is in the future: every change until then would be skipped"
        )
    return when


def parse_token(text: str) -> dict[str, Any]:
    """A resume token as `checkpoint show --json` prints it (extended JSON, an object
    with `_data`). Raises InvalidRequest."""
    try:
        token = json_util.loads(text, json_options=json_util.CANONICAL_JSON_OPTIONS)
    except (ValueError, TypeError, InvalidBSON) as error:
        raise InvalidRequest(f"--to-token is not JSON: {error}") from None
    if not isinstance(token, dict) or "_data" not in token:
        raise InvalidRequest(
            '--to-token must be a resume token object such as {"_data": "8267..."}: '
            "copy it from `cdc-sidecar checkpoint show --json` or from a change event"
        )
    return token


def describe(checkpoint: Checkpoint | None) -> str:
    """A position in words, for people and the audit log."""
    if checkpoint is None:
        return "none: the next start scans every watched collection first"
    return StreamPosition.from_checkpoint(checkpoint).explain()


async def target_checkpoint(context: Context, target: ResetTarget) -> Checkpoint | None:
    """The checkpoint *target* names, reading the stream's end from MongoDB for "now".

    Raises InvalidRequest when the server no longer holds a time or token's
    position (capture could not start there)."""
    now = datetime.now(UTC)
    if target.kind == "rescan":
        return None
    if target.kind == "now":
        return (await current_position(context.mongo, context.scope)).checkpoint()
    if target.kind == "time":
        packed = pack_timestamp(Timestamp(parse_time(target.value or ""), 0))
        checkpoint = Checkpoint(None, None, packed, now)
    else:
        token = parse_token(target.value or "")
        checkpoint = Checkpoint(token, token_cluster_time(token), None, now)
    position = StreamPosition.from_checkpoint(checkpoint)
    if not await still_in_history(context.mongo, context.scope, position):
        raise InvalidRequest(
            f"MongoDB no longer holds the change stream {position.explain()} (its oplog "
            "starts later): give a later --to-time, or --rescan to scan every watched "
            "collection again; the position was not moved"
        )
    return checkpoint


async def reset(context: Context, target: ResetTarget, by: str) -> dict[str, Any]:
    """Move the position to *target* under *context*'s fence, with capture stopped
    meanwhile, and audit it. Returns the positions before and after."""
    tokens = ResumeTokenStore(context.redis, context.keys)
    async with context.quiesce():
        before = await tokens.load()
        after = await target_checkpoint(context, target)
        context.check_deadline()
        entry = AuditEntry(
            at=datetime.now(UTC),
            command=target.command(),
            by=by,
            outcome="done",
            before=describe(before),
            after=describe(after),
        )
        await tokens.reset(after, fence=context.fence, audit=entry)
    return {"before": entry.before, "after": entry.after, "checkpoint": _plain(after)}


async def show(redis: Redis, keys: Keys, *, audit_entries: int = 10) -> dict[str, Any]:
    """The position, who holds the lease, and the latest operator commands."""
    checkpoint = await ResumeTokenStore(redis, keys).load()
    holder = await Lease(redis, keys, owner="checkpoint-show").holder()
    entries = await AuditLog(redis, keys).recent(audit_entries)
    return {
        "pipeline": keys.pipeline,
        "position": describe(checkpoint),
        "checkpoint": _plain(checkpoint),
        "lease": None if holder is None else {"owner": holder[0], "since": holder[1]},
        "audit": [{**entry.__dict__, "at": entry.at.isoformat()} for entry in entries],
    }


def _plain(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    """*checkpoint* as JSON-ready data; its token in extended JSON, as --to-token takes it."""
    return None if checkpoint is None else json.loads(checkpoint.to_json())
