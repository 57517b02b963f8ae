"""Operator requests to the running service, and its answers (like Debezium's signals).

A command given while a service holds the pipeline's lease is not carried out by
the command's own process: it is queued here, the holder carries it out under its
fence and answers. Each request has a deadline; the holder drops (and answers as
expired) what it finds past it, so a request nobody answered in time never runs
later by surprise."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from checkpoints.keys import Keys
from checkpoints.stats import StreamEntry, as_text

ANSWER_TTL_SECONDS = 300
"""How long an answer waits for the process that asked (it normally takes it at once)."""


@dataclass(frozen=True)
class Request:
    """*command* with its *args*, asked by *by*, to be carried out before *deadline*
    (seconds since the epoch)."""

    command: str
    args: dict[str, Any]
    by: str
    deadline: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Request:
        """Raises ValueError when *raw* is not a request."""
        try:
            body = json.loads(raw)
            args = dict(body["args"])
            return cls(body["command"], args, body["by"], float(body["deadline"]), body["id"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a request: {error}") from error

    def expired(self) -> bool:
        return time.time() > self.deadline


class RequestChannel:
    """The pipeline's request stream and answer keys.

    The asking side calls :meth:`submit` then :meth:`wait_answer`; the lease holder
    calls :meth:`take` in a loop and :meth:`answer` for each request taken."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def submit(self, request: Request) -> None:
        await self._redis.xadd(self._keys.requests, {"request": request.to_json()})

    async def wait_answer(
        self, request: Request, seconds: float | None = None
    ) -> dict[str, Any] | None:
        """The holder's answer, or None when none came within *seconds* (by
        default: before the request's deadline, plus a second for the answer to travel)."""
        timeout = seconds if seconds is not None else max(1.0, request.deadline - time.time() + 1.0)
        reply = await self._redis.blpop([self._keys.reply(request.id)], timeout=timeout)
        if reply is None:
            return None
        answer: dict[str, Any] = json.loads(reply[1])
        return answer

    async def take(self, after: str, block_ms: int) -> list[tuple[str, Request | None]]:
        """Requests queued after stream id *after* ("0" for all), waiting up to
        *block_ms* for one; each is removed from the stream as it is taken. A
        malformed entry comes back as (its id, None)."""
        reply: list[tuple[bytes, list[StreamEntry]]] | None = await self._redis.xread(  # type: ignore[assignment]
            {self._keys.requests: after}, block=block_ms, count=10
        )
        taken: list[tuple[str, Request | None]] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                by_name = {as_text(name): value for name, value in (fields or {}).items()}
                try:
                    request: Request | None = Request.from_json(by_name["request"])
                except (KeyError, ValueError):
                    request = None
                taken.append((as_text(entry_id), request))
        if taken:
            await self._redis.xdel(self._keys.requests, *(entry_id for entry_id, _ in taken))
        return taken

    async def answer(self, request: Request, answer: dict[str, Any]) -> None:
        key = self._keys.reply(request.id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps(answer, ensure_ascii=False))
        pipe.expire(key, ANSWER_TTL_SECONDS)
        await pipe.execute()
