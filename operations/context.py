"""What an operator command needs to act: the lease's fence and the pipeline's parts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from pymongo.asynchronous.mongo_client import AsyncMongoClient
from redis.asyncio import Redis

from cdc.namespaces import Document, WatchScope
from checkpoints.keys import Keys
from core.errors import NoAnswer


@asynccontextmanager
async def nothing_to_stop() -> AsyncIterator[None]:
    """The quiesce of a process that runs no capture."""
    yield


@dataclass(frozen=True)
class Context:
    """*fence* is the current lease's; *quiesce* stops capture for the duration of a
    block that moves the position (the service's capture restarts from the new
    position after it), so a reset never interleaves with a batch being queued.
    *scanning* says whether the first-start scan is running (a reset other than
    --rescan would cut it short); *deadline* is the request's (seconds since the epoch)."""

    redis: Redis
    keys: Keys
    fence: int
    mongo: AsyncMongoClient[Document]
    scope: WatchScope
    quiesce: Callable[[], AbstractAsyncContextManager[None]] = nothing_to_stop
    scanning: Callable[[], bool] = lambda: False
    deadline: float | None = None

    def check_deadline(self) -> None:
        """Raise NoAnswer when the request's deadline passed (its requester was told it
        was not carried out): call it right before the command's write."""
        if self.deadline is not None and time.time() > self.deadline:
            raise NoAnswer("expired while capture was stopping; not carried out")
