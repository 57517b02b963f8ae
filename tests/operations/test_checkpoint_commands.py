"""`checkpoint show` / `checkpoint reset` as functions: validation, carried out by the
command itself when no service runs, and by the running service (in-process, with a
deterministic embedder) when one holds the lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis
from bson import json_util
from pymongo import AsyncMongoClient

from cdc.namespaces import WatchScope
from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.requests import Request, RequestChannel
from checkpoints.tokens import Checkpoint, ResumeTokenStore, unpack_timestamp
from core.errors import InvalidRequest, NoAnswer, SidecarError
from operations import control, positions
from operations.context import Context
from operations.control import perform, serve_requests
from operations.positions import ResetTarget
from sidecar.app import Sidecar
from sidecar.settings import Settings
from tests.conftest import COLLECTION, DATABASE
from tests.e2e.e2e_harness import running
from tests.embedders import HashEmbedder
from tests.waiting import eventually

Client = AsyncMongoClient[dict[str, Any]]
SCOPE = WatchScope(DATABASE, [COLLECTION])
WITHIN = 30.0


def target(**options: Any) -> ResetTarget:
    given = {"to_now": False, "to_time": None, "to_token": None, "rescan": False} | options
    return ResetTarget.parse(**given)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "give exactly one of --to-now, --to-time, --to-token, --rescan \\(got none\\)"),
        ({"to_now": True, "rescan": True}, "\\(got --to-now and --rescan\\)"),
        ({"to_time": "yesterday"}, "not an ISO 8601 time: write it like 2026-11-30T08:00:00Z"),
        ({"to_time": "2026-11-30T08:00:00"}, "has no timezone: add Z for UTC"),
        ({"to_time": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"to_token": "{not json"}, "--to-token is not JSON"),
        ({"to_token": '{"token": "x"}'}, "must be a resume token object such as"),
        ({"to_token": '"8200"'}, "must be a resume token object such as"),
    ],
)
def test_a_reset_target_that_cannot_be_acted_on_is_refused_with_what_to_give(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        target(**options)


def test_a_reset_target_travels_in_a_request_unchanged() -> None:
    for reset in (
        target(to_now=True),
        target(rescan=True),
        target(to_time="2026-11-30T08:00:00+08:00"),
        target(to_token='{"_data": "8267"}'),
    ):
        assert ResetTarget.from_args(reset.args()) == reset


async def seen_token(mongo: Client, title: str) -> dict[str, Any]:
    """Insert a document and return the resume token of its change."""
    articles = mongo[DATABASE][COLLECTION]
    async with await articles.watch(max_await_time_ms=100) as stream:
        await articles.insert_one({"title": title})
        while await stream.try_next() is None:
            pass
        token: dict[str, Any] = dict(stream.resume_token or {})
    return token


async def a_new_second(mongo: Client) -> datetime:
    """After one write, the start of the next whole second (reset times have a one-second
    resolution), which the server's history then holds."""
    await seen_token(mongo, "marks the history's start")
    first = datetime.now(UTC)

    async def next_second() -> bool:
        return datetime.now(UTC).replace(microsecond=0) > first

    await eventually(next_second, what="the clock to reach the next second")
    return datetime.now(UTC).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def reset(
    redis: aioredis.Redis, keys: Keys, sim_uri: str, to: ResetTarget
) -> dict[str, Any]:
    return await perform(redis, keys, sim_uri, SCOPE, "checkpoint reset", to.args())


async def test_without_a_service_each_reset_form_moves_the_position_and_is_audited(
    redis_client: aioredis.Redis, pipeline_name: str, mongo: Client, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    tokens = ResumeTokenStore(redis_client, keys)
    second = await a_new_second(mongo)
    token = await seen_token(mongo, "one")

    moved = await reset(redis_client, keys, sim.uri, target(to_token=json_util.dumps(token)))
    saved = await tokens.load()
    assert saved is not None and saved.token == token
    assert moved["before"] == "none: the next start scans every watched collection first"
    assert moved["after"].startswith("after the change at ")

    at_eight = second.astimezone(timezone(timedelta(hours=8))).isoformat()
    await reset(redis_client, keys, sim.uri, target(to_time=at_eight))
    saved = await tokens.load()
    assert saved is not None and saved.token is None and saved.start_at_operation_time
    assert unpack_timestamp(saved.start_at_operation_time).as_datetime() == second

    later = await seen_token(mongo, "two")
    await reset(redis_client, keys, sim.uri, target(to_now=True))
    saved = await tokens.load()
    # "now" is the end of the stream when the command ran: at or after the last change.
    assert saved is not None and saved.cluster_time is not None
    assert saved.token is not None and saved.token["_data"] >= later["_data"]

    await reset(redis_client, keys, sim.uri, target(rescan=True))
    assert await tokens.load() is None

    audit = await AuditLog(redis_client, keys).recent()
    assert [entry.command for entry in audit] == [
        "checkpoint reset --rescan",
        "checkpoint reset --to-now",
        f"checkpoint reset --to-time {at_eight}",
        f"checkpoint reset --to-token {json_util.dumps(token)}",
    ]
    assert all(entry.outcome == "done" and "@" in entry.by for entry in audit)
    assert audit[0].after == "none: the next start scans every watched collection first"
    # The command's own lease is given back: a service can start at once.
    assert await Lease(redis_client, keys, owner="probe").holder() is None


async def test_a_position_the_server_no_longer_holds_is_refused_and_nothing_moves(
    redis_client: aioredis.Redis, pipeline_name: str, mongo: Client, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    await seen_token(mongo, "history starts now")

    with pytest.raises(SidecarError, match="MongoDB no longer holds the change stream at 2001-"):
        await reset(redis_client, keys, sim.uri, target(to_time="2001-01-01T00:00:00Z"))

    assert await ResumeTokenStore(redis_client, keys).load() is None
    (entry,) = await AuditLog(redis_client, keys).recent()
    assert entry.outcome.startswith("failed: MongoDB no longer holds the change stream")


async def test_show_lists_position_lease_and_audit(
    redis_client: aioredis.Redis, pipeline_name: str, mongo: Client, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    second = await a_new_second(mongo)
    await reset(redis_client, keys, sim.uri, target(to_time=iso(second)))
    await Lease(redis_client, keys, owner="replica-7").acquire(wait=False)

    shown = await positions.show(redis_client, keys)

    assert shown["position"] == f"at {iso(second)}"
    assert shown["checkpoint"]["start_at_operation_time"] is not None
    assert shown["lease"]["owner"] == "replica-7"
    assert [entry["command"] for entry in shown["audit"]] == [
        f"checkpoint reset --to-time {iso(second)}"
    ]


async def test_a_holder_that_does_not_answer_leaves_the_command_undone_for_good(
    redis_client: aioredis.Redis, pipeline_name: str, mongo: Client, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    fence = await Lease(redis_client, keys, owner="silent-replica").acquire(wait=False)

    with pytest.raises(NoAnswer, match=r"silent-replica .* did not answer within 0.5 s"):
        await perform(
            redis_client, keys, sim.uri, SCOPE, "checkpoint reset", target(rescan=True).args(),
            answer_seconds=0.5,
        )

    # The holder wakes up later: the expired request is answered as such, not carried out.
    await ResumeTokenStore(redis_client, keys).reset(
        Checkpoint({"_data": "kept"}, None, None, datetime.now(UTC)),
        fence=fence,
        audit=AuditEntry(datetime.now(UTC), "setup", "test", "done"),
    )
    context = Context(redis_client, keys, fence, mongo, SCOPE)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_requests(context, stop, block=0.05))

    async def refusal_audited() -> bool:
        audit = await AuditLog(redis_client, keys).recent()
        return any(entry.outcome.startswith("failed: ") for entry in audit)

    await eventually(refusal_audited, within=WITHIN, what="the expired request to be refused")
    stop.set()
    await serving
    saved = await ResumeTokenStore(redis_client, keys).load()
    assert saved is not None and saved.token == {"_data": "kept"}
    (refused, _) = await AuditLog(redis_client, keys).recent()
    assert refused.outcome == "failed: expired before the service took it up"


@pytest.fixture
async def service(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> AsyncIterator[Sidecar]:
    """A running sidecar that has finished its first scan and streams."""
    async with running(make_settings(), redis_client, HashEmbedder()) as service:
        yield service.sidecar


async def captured(redis: aioredis.Redis, keys: Keys) -> int:
    return int(await redis.hget(keys.stats, "events_captured") or 0)


async def test_the_running_service_carries_out_a_reset_and_streams_on_from_there(
    service: Sidecar, redis_client: aioredis.Redis, mongo: Client, sim: Any
) -> None:
    keys, articles = service.keys, mongo[DATABASE][COLLECTION]
    start = await a_new_second(mongo)
    await articles.insert_many([{"title": f"before {n}"} for n in range(3)])
    base = 1  # a_new_second's own write
    await eventually(
        lambda: captured_at_least(redis_client, keys, base + 3), within=WITHIN, what="3 captured"
    )

    moved = await reset(redis_client, keys, sim.uri, target(to_time=iso(start)))

    assert moved["after"] == f"at {iso(start)}"
    # Capture restarted at that second: the three inserts are captured again, then
    # a new change is followed as usual.
    await articles.insert_one({"title": "after the reset"})
    await eventually(
        lambda: captured_at_least(redis_client, keys, base + 3 + 3 + 1),
        within=WITHIN,
        what="the replay and the new change",
    )
    holder = await Lease(redis_client, keys, owner="probe").holder()
    assert holder is not None and holder[0] == service.lease.owner
    (entry, *_) = await AuditLog(redis_client, keys).recent()
    assert entry.command.startswith("checkpoint reset --to-time") and entry.outcome == "done"


async def captured_at_least(redis: aioredis.Redis, keys: Keys, count: int) -> bool:
    return await captured(redis, keys) >= count


async def test_the_running_service_answers_a_bad_or_unknown_request_without_acting(
    service: Sidecar, redis_client: aioredis.Redis
) -> None:
    keys = service.keys
    before = await service.tokens.load()
    channel = RequestChannel(redis_client, keys)
    for command, args, status, message in (
        ("checkpoint reset", {"kind": "time", "value": "noon"}, 2, "not an ISO 8601 time"),
        ("checkpoint launch", {}, 2, "does not know the command 'checkpoint launch'"),
    ):
        request = Request(command, args, "test", time.time() + WITHIN)
        await channel.submit(request)
        answer = await channel.wait_answer(request)
        assert answer is not None and answer["ok"] is False
        assert answer["status"] == status and message in answer["error"]
    assert await service.tokens.load() == before
    with pytest.raises(SidecarError, match="not an ISO 8601 time"):
        await perform(
            redis_client, keys, "mongodb://unused", SCOPE, "checkpoint reset",
            {"kind": "time", "value": "noon"},
        )


async def test_a_reset_is_refused_after_its_deadline(
    redis_client: aioredis.Redis, pipeline_name: str, mongo: Client
) -> None:
    keys = Keys(pipeline_name)
    fence = await Lease(redis_client, keys, owner="holder").acquire(wait=False)
    late = Context(redis_client, keys, fence, mongo, SCOPE, deadline=time.time() - 1)

    with pytest.raises(NoAnswer, match="expired while capture was stopping; not carried out"):
        await positions.reset(late, target(to_now=True), "ops@host")

    assert await ResumeTokenStore(redis_client, keys).load() is None
    assert await AuditLog(redis_client, keys).recent() == []


async def test_without_a_service_an_outage_is_one_clear_error(
    redis_client: aioredis.Redis, pipeline_name: str, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(pipeline_name)

    async def unreachable(context: Context, request: Request) -> dict[str, Any]:
        raise ConnectionError("MongoDB is down")

    monkeypatch.setattr(control, "carry_out", unreachable)
    clear = r"MongoDB, Redis or Milvus did not answer \(MongoDB is down\); nothing was changed"
    with pytest.raises(SidecarError, match=clear):
        await perform(redis_client, keys, sim.uri, SCOPE, "checkpoint reset",
                      target(to_now=True).args())

    assert await Lease(redis_client, keys, owner="probe").holder() is None


async def test_a_command_without_a_service_holds_the_lease_with_the_configured_ttl(
    redis_client: aioredis.Redis, pipeline_name: str, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttls: list[float] = []
    real = control.Lease

    def recording(redis: aioredis.Redis, keys: Keys, *, owner: str, ttl: float) -> Lease:
        ttls.append(ttl)
        return real(redis, keys, owner=owner, ttl=ttl)

    monkeypatch.setattr(control, "Lease", recording)
    keys = Keys(pipeline_name)
    await perform(
        redis_client, keys, sim.uri, WatchScope(DATABASE, [COLLECTION]), "pause", {},
        lease_ttl=4.0,
    )
    assert ttls == [4.0]


async def test_a_command_refuses_at_once_while_another_command_holds_the_lease(
    redis_client: aioredis.Redis, pipeline_name: str, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    other = Lease(redis_client, keys, owner=f"{control.COMMAND_OWNER}bastion-4242")
    await other.acquire(wait=False)

    with pytest.raises(NoAnswer, match=r"another operator command holds the pipeline's lease"):
        await perform(redis_client, keys, sim.uri, WatchScope(DATABASE, [COLLECTION]), "check", {})
    # Nothing was asked of anyone: no request is left for a later holder.
    assert int(await redis_client.xlen(keys.requests)) == 0
    await other.release()
