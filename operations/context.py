"""What an operator command needs to act: the lease's fence and the pipeline's parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from pymongo.asynchronous.mongo_client import AsyncMongoClient
from redis.asyncio import Redis

from cdc.namespaces import Document, WatchScope
from checkpoints.keys import Keys


@asynccontextmanager
async def nothing_to_stop() -> AsyncIterator[None]:
    """The quiesce of a process that runs no capture."""
    yield


@dataclass(frozen=True)
class Context:
    """*fence* is the current lease's; *quiesce* stops capture for the duration of a
    block that moves the position (the service's capture restarts from the new
    position after it), so a reset never interleaves with a batch being queued."""

    redis: Redis
    keys: Keys
    fence: int
    mongo: AsyncMongoClient[Document]
    scope: WatchScope
    quiesce: Callable[[], AbstractAsyncContextManager[None]] = nothing_to_stop
