"""`dlq list | show | replay | purge`: the dead-letter stream under the operator's hand."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.deadletters import DeadLetters, Moved
from checkpoints.keys import Keys
from core.errors import InvalidRequest
from operations.context import Context

_ENTRY_ID = re.compile(r"\d+-\d+")


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay or purge acts on: *ids*, or all of them."""

    ids: tuple[str, ...] = ()
    all: bool = False

    @classmethod
    def parse(cls, ids: list[str], every: bool) -> Selection:
        """Raises InvalidRequest unless exactly one of ids and --all is given and every
        id looks like a stream id."""
        if bool(ids) == every:
            raise InvalidRequest(
                "give dead-letter ids (as `cdc-sidecar dlq list` shows them) or --all, not "
                + ("both" if every else "neither")
            )
        malformed = [entry_id for entry_id in ids if not _ENTRY_ID.fullmatch(entry_id)]
        if malformed:
            raise InvalidRequest(
                f"not a dead-letter id: {', '.join(malformed)} (ids look like "
                "1764520000000-0; `cdc-sidecar dlq list` shows them)"
            )
        return cls(tuple(ids), every)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Selection:
        return cls.parse(list(args.get("ids", [])), bool(args.get("all")))

    def args(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "all": self.all}

    def describe(self) -> str:
        return "--all" if self.all else " ".join(self.ids)


def check_id(entry_id: str, option: str) -> None:
    """Raises InvalidRequest unless *entry_id* looks like a dead-letter id."""
    if not _ENTRY_ID.fullmatch(entry_id):
        raise InvalidRequest(
            f"{option} {entry_id!r} is not a dead-letter id (ids look like 1764520000000-0; "
            "`cdc-sidecar dlq list` shows them)"
        )


async def listing(redis: Redis, keys: Keys, *, limit: int, after: str | None) -> dict[str, Any]:
    """The number of dead letters and up to *limit* of them, oldest first, after *after*."""
    if after is not None:
        check_id(after, "--after")
    letters = DeadLetters(redis, keys)
    page = await letters.page(limit, after)
    return {
        "total": await letters.count(),
        "letters": [{k: v for k, v in asdict(letter).items() if k != "event"} for letter in page],
        "next": page[-1].id if len(page) == limit else None,
    }


async def show(redis: Redis, keys: Keys, entry_id: str) -> dict[str, Any]:
    """One dead letter with its event. Raises InvalidRequest when there is none."""
    check_id(entry_id, "dlq show")
    letter = await DeadLetters(redis, keys).get(entry_id)
    if letter is None:
        raise InvalidRequest(f"no dead letter {entry_id} (`cdc-sidecar dlq list` shows them)")
    return asdict(letter)


async def replay(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    return await _move(context, args, by, "replay", "replayed")


async def purge(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    return await _move(context, args, by, "purge", "purged")


async def _move(
    context: Context, args: dict[str, Any], by: str, action: str, verb: str
) -> dict[str, Any]:
    selection = Selection.from_args(args)
    letters = DeadLetters(context.redis, context.keys)
    ids = await letters.ids() if selection.all else list(selection.ids)
    act = letters.replay if action == "replay" else letters.purge
    moved = await act(ids, fence=context.fence)
    return await _audited(context, f"dlq {action} {selection.describe()}", by, moved, verb)


async def _audited(
    context: Context, command: str, by: str, moved: Moved, verb: str
) -> dict[str, Any]:
    outcome = f"done: {moved.done} {verb}, {moved.missing} not found"
    if moved.unreplayable:
        outcome += f", {moved.unreplayable} without an event (purge them)"
    await AuditLog(context.redis, context.keys).record(
        AuditEntry(datetime.now(UTC), command, by, outcome)
    )
    return {verb: moved.done, "not_found": moved.missing, "without_event": moved.unreplayable}
