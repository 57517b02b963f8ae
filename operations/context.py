"""What an operator command needs to act: the lease's fence and the pipeline's parts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from pymongo.asynchronous.mongo_client import AsyncMongoClient
from redis.asyncio import Redis

from cdc.mapping import ChangeMapper
from cdc.namespaces import Document, WatchScope
from cdc.positions import cluster_time
from checkpoints.keys import Keys
from checkpoints.versions import VersionStore
from core.errors import ConfigurationError, NoAnswer
from indexer.store import VectorStore


@asynccontextmanager
async def nothing_to_stop() -> AsyncIterator[None]:
    """The quiesce of a process that runs no capture."""
    yield


@dataclass(frozen=True)
class IndexView:
    """What judging documents needs beside Redis and MongoDB: the Milvus collection,
    the version records, the pipeline's mapping of documents to text and metadata,
    and the pipeline fingerprint content hashes are built on."""

    store: VectorStore
    versions: VersionStore
    mapper: ChangeMapper
    fingerprint: str


IndexOpener = Callable[[], AbstractAsyncContextManager[IndexView]]


async def nothing_reads(seconds: float) -> bool:
    """The indexer's reads in a process that runs none: stopped already."""
    return True


def no_index() -> AbstractAsyncContextManager[IndexView]:
    """The opener of a context built without the index (commands that need none)."""
    raise ConfigurationError("this command needs the index, which this process did not open")


@dataclass(frozen=True)
class Context:
    """*fence* is the current lease's; *quiesce* stops capture for the duration of a
    block that moves the position (the service's capture restarts from the new
    position after it), so a reset never interleaves with a batch being queued.
    *deadline* is the request's (seconds since the epoch);
    *index* opens the Milvus collection and what judging documents needs (the
    service lends its own; a process without a service opens them for the command);
    *reads_paused* waits up to its argument's seconds for the indexer to stop reading
    after a pause, and says whether it did; *live* says a service captures and indexes
    beside the command (the running service's own context); *bulk_room* is the bulk
    lane's limit (CDC_BACKFILL_MAX_QUEUED), which a live service's repairs wait under."""

    redis: Redis
    keys: Keys
    fence: int
    mongo: AsyncMongoClient[Document]
    scope: WatchScope
    quiesce: Callable[[], AbstractAsyncContextManager[None]] = nothing_to_stop
    deadline: float | None = None
    index: IndexOpener = no_index
    live: bool = False
    bulk_room: int = 1000
    reads_paused: Callable[[float], Awaitable[bool]] = nothing_reads

    async def cluster_time(self) -> int:
        """The cluster's time now (packed). Raises ConfigurationError without one."""
        return await cluster_time(self.mongo, self.scope.database)

    def check_deadline(self) -> None:
        """Raise NoAnswer when the request's deadline passed (its requester was told it
        was not carried out): call it right before the command's write."""
        if self.deadline is not None and time.time() > self.deadline:
            raise NoAnswer("expired while capture was stopping; not carried out")
