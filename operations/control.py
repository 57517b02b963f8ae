"""Who carries out an operator command: the lease holder, always.

With a service running, the command is a request (checkpoints.requests) that the
service carries out within about a second under its own fence; with none, the
command's process takes the lease itself for the command's duration (a service
starting meanwhile stands by until it is done). Either way the command passes
the same fence as every write, and leaves an audit entry whether it succeeded
or failed."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from cdc.namespaces import Document, WatchScope
from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.requests import Request, RequestChannel
from core.errors import LeaseLost, NoAnswer, SidecarError, describe_failure, is_outage
from core.retry import Stopped, outlast
from operations import backfills, consistency, deadletters, indexing, inspection, positions
from operations.context import Context, IndexOpener, no_index

log = structlog.get_logger(__name__)

COMMAND_OWNER = "command-"
"""How the lease owner of a command run without a service starts (such a holder serves
no requests)."""

ANSWER_SECONDS = 15.0
"""How long a command waits for the running service's answer before giving up (the
request then expires unexecuted). The service normally answers within a second."""

Handler = Callable[[Context, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _reset(context: Context, args: dict[str, Any], by: str) -> dict[str, Any]:
    return await positions.reset(context, positions.ResetTarget.from_args(args), by)


COMMANDS: dict[str, Handler] = {
    "checkpoint reset": _reset,
    "dlq replay": deadletters.replay,
    "dlq purge": deadletters.purge,
    "backfill": backfills.start,
    "backfill cancel": backfills.cancel,
    "reindex": backfills.reindex,
    "pause": indexing.pause,
    "resume": indexing.resume,
    "explain": inspection.explain,
    "check": consistency.check,
}


def requester() -> str:
    """Who is asking, for the audit log: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


async def carry_out(context: Context, request: Request) -> dict[str, Any]:
    """Run *request* and return its answer: ``{"ok": True, "result": ...}`` or
    ``{"ok": False, "error": one line, "status": exit status}``. Every request
    taken leaves an audit entry; a successful state change writes its own inside
    its atomic write. Raises LeaseLost (the caller must stop) and outages (the
    caller waits them out and the request is answered by nobody: it expires)."""
    handler = COMMANDS.get(request.command)
    if request.expired():
        return await _refuse(context, request, "expired before the service took it up", 1)
    if handler is None:
        return await _refuse(
            context,
            request,
            f"this service does not know the command {request.command!r} "
            "(is it an older version than the command line?)",
            2,
        )
    try:
        with_deadline = replace(context, deadline=request.deadline)
        result = await handler(with_deadline, request.args, request.by)
    except LeaseLost:
        raise
    except Exception as error:
        if is_outage(error):
            raise
        status, message = describe_failure(error)
        return await _refuse(context, request, message, status)
    scalars = {
        name: value
        for name, value in result.items()
        if isinstance(value, str | int | float | bool) and name not in ("command", "by")
    }
    log.info("operator_command_done", command=request.command, by=request.by, **scalars)
    return {"ok": True, "result": result}


async def _refuse(context: Context, request: Request, message: str, status: int) -> dict[str, Any]:
    log.warning("operator_command_failed", command=request.command, error=message)
    await AuditLog(context.redis, context.keys).record(
        AuditEntry(datetime.now(UTC), request.command, request.by, f"failed: {message}")
    )
    return {"ok": False, "error": message, "status": status}


LONG_COMMANDS = frozenset({"check"})
"""Commands that may run for minutes: the lease holder runs them beside its request
loop (other commands go on meanwhile) and the requester waits for as long as the
holder that took the request keeps its lease."""


async def serve_requests(context: Context, stop: asyncio.Event, *, block: float = 0.5) -> None:
    """The lease holder's side: carry out requests as they come until *stop*, waiting
    out Redis outages; long commands run beside the loop and are cancelled at *stop*.
    Raises LeaseLost as carry_out does."""
    channel = RequestChannel(context.redis, context.keys)
    after = "0"  # requests left by a previous holder are taken (or expire) too
    block_ms = max(1, round(block * 1000))
    started: list[asyncio.Task[None]] = []
    try:
        async with asyncio.TaskGroup() as long_running:
            try:
                while not stop.is_set():
                    taken = await outlast(
                        partial(channel.take, after, block_ms),
                        what="operator requests (Redis)",
                        stop=stop,
                    )
                    for entry_id, request in taken:
                        after = entry_id
                        if request is None:
                            log.warning("operator_request_malformed", entry=entry_id)
                        elif request.command in LONG_COMMANDS:
                            started.append(
                                long_running.create_task(_serve(context, channel, request, stop))
                            )
                        else:
                            await _serve(context, channel, request, stop)
            except Stopped:
                pass
            for task in started:
                task.cancel()
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None


async def _serve(
    context: Context, channel: RequestChannel, request: Request, stop: asyncio.Event
) -> None:
    """Carry out one request and answer it (an outage is waited out; at *stop* the
    request stays unanswered and its requester is told the service went away)."""
    try:
        answer = await outlast(
            partial(carry_out, context, request),
            what=f"operator command {request.command} (Redis or MongoDB)",
            stop=stop,
        )
        await outlast(partial(channel.answer, request, answer), what="operator answer", stop=stop)
    except Stopped:
        return


async def perform(
    redis: Redis,
    keys: Keys,
    mongo_uri: str,
    scope: WatchScope,
    command: str,
    args: dict[str, Any],
    *,
    index: IndexOpener = no_index,
    answer_seconds: float = ANSWER_SECONDS,
    lease_ttl: float = 15.0,
    by: str | None = None,
) -> dict[str, Any]:
    """Carry out *command* under the pipeline's lease and return its result: by the
    running service when one holds the lease, else here (opening the index with
    *index* if the command needs it). Raises SidecarError with the reason when it
    failed, NoAnswer when the service did not answer in time. *lease_ttl* is the
    lease's time to live while this process holds it; *by* is who asks, for the
    audit log (the local user@host when not given)."""
    request = Request(command, args, by or requester(), time.time() + answer_seconds)
    owner = f"{COMMAND_OWNER}{socket.gethostname()}-{os.getpid()}"
    lease = Lease(redis, keys, owner=owner, ttl=lease_ttl)
    try:
        fence = await lease.acquire(wait=False)
    except LeaseLost:
        answer = await _ask_holder(redis, keys, lease, request, answer_seconds)
    else:
        answer = await _carry_out_here(
            redis, keys, mongo_uri, scope, lease, fence, request, index
        )
    if not answer["ok"]:
        raise _Failed(answer["error"], int(answer.get("status", 2)))
    result: dict[str, Any] = answer["result"]
    return result


async def _ask_holder(
    redis: Redis, keys: Keys, lease: Lease, request: Request, answer_seconds: float
) -> dict[str, Any]:
    channel = RequestChannel(redis, keys)
    holder = await lease.holder()
    if holder is not None and holder[0].startswith(COMMAND_OWNER):
        raise NoAnswer(
            f"another operator command holds the pipeline's lease ({holder[0]}, since "
            f"{holder[1]}); run this one when it is done"
        )
    await channel.submit(request)
    answer = await channel.wait_answer(request)
    while answer is None and request.command in LONG_COMMANDS:
        now_holding = await lease.holder()
        if now_holding is None or now_holding != holder:
            raise NoAnswer(
                f"the service that held the lease stopped before it finished {request.command}: "
                "run the command again"
            )
        answer = await channel.wait_answer(request, seconds=_HOLDER_CHECK_SECONDS)
    if answer is not None:
        return answer
    who = "the service" if holder is None else f"the service {holder[0]} (lease since {holder[1]})"
    raise NoAnswer(
        f"{who} did not answer within {answer_seconds:g} s, "
        "so the command was not carried out: if that service was killed, its lease "
        "expires within CDC_LEASE_TTL (15 s by default); then run the command again"
    )


_HOLDER_CHECK_SECONDS = 2.0
"""How often a requester waiting for a long command checks that its holder still runs."""


async def _carry_out_here(
    redis: Redis,
    keys: Keys,
    mongo_uri: str,
    scope: WatchScope,
    lease: Lease,
    fence: int,
    request: Request,
    index: IndexOpener,
) -> dict[str, Any]:
    log.info("operator_command_without_service", command=request.command, fence=fence)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(mongo_uri, tz_aware=True)
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(lease.hold(stop))
            try:
                context = Context(redis, keys, fence, mongo, scope, index=index)
                return await carry_out(context, request)
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        error = group.exceptions[0]
        if is_outage(error):
            raise _Failed(
                f"{request.command}: MongoDB, Redis or Milvus did not answer ({error}); "
                "nothing was changed: check CDC_MONGO_URI, CDC_REDIS_URL and CDC_MILVUS_URI "
                "(a service starting up holds a Milvus Lite database already) and run the "
                "command again",
                1,
            ) from None
        raise error from None
    finally:
        await lease.release()
        await mongo.close()


class _Failed(SidecarError):
    """A command the lease holder carried out and that failed: its one line and status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.retriable = status == 1
