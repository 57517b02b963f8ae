"""The first start: queue every watched document, then hand capture a position
taken before the scan, so nothing written during the scan is missed.

Order matters: the change stream position is captured first, the scan runs
second. Every write committed after the position is streamed by capture
later; every write before it is in what the scan reads (the scan reads with
causal consistency after the position). A document changed during the scan
may be both scanned (in any state from the position on) and streamed:
harmless, because snapshot events carry the position's clusterTime as their
version, older than any streamed change, so the indexer's version guard lets
the streamed changes win.

A crash or stop mid-scan saves no position: the next start scans again from
the beginning. That is safe (the indexer skips documents whose content hash
did not change) but not cheap on a large database; resuming a scan is left
to a later change. For the same reason a scan held back by a full queue for
longer than the server's idle cursor timeout (10 minutes by default) fails
with CursorNotFound and must be run again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.mongo_client import AsyncMongoClient

from cdc.backpressure import Backpressure
from cdc.capture import Fence
from cdc.fields import document_id
from cdc.mapping import ChangeMapper, ChangeOrigin
from cdc.namespaces import Document, WatchScope
from cdc.positions import StreamPosition, current_position
from checkpoints.queue import EventQueue
from checkpoints.tokens import Checkpoint
from core.errors import DocumentRejected
from core.events import DocumentEvent

log = structlog.get_logger("cdc.snapshot")


@dataclass(frozen=True)
class SnapshotResult:
    """What a finished scan queued, and the position capture continues from."""

    checkpoint: Checkpoint
    documents: int
    rejected: int


class Snapshot:
    """Queues a DocumentCreatedEvent for every watched document that passes the
    filter, in appends of at most *max_batch* events (holding back while the
    queue is over *max_backlog*), and saves the position captured before the
    scan in the last append.

    Run it only when there is no checkpoint, before capture, under the same
    lease: its appends are fenced like capture's and raise LeaseLost."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        collections: Sequence[str],
        mapper: ChangeMapper,
        queue: EventQueue,
        fence: Fence,
        *,
        max_batch: int = 500,
        max_backlog: int = 10_000,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        self._client = client
        self._scope = WatchScope(database, collections)
        self._mapper = mapper
        self._queue = queue
        self._fence = fence
        self._max_batch = max_batch
        self._backpressure = Backpressure(queue, max_backlog)
        self._documents = 0
        self._rejected = 0

    async def run(self, stop: asyncio.Event) -> SnapshotResult | None:
        """Scan and queue everything; None when *stop* was set before the end
        (then no position was saved and the next start scans again).

        Raises LeaseLost when the fence is stale, and the driver's errors
        when the scan fails: the caller retries the whole snapshot."""
        self._documents = self._rejected = 0
        async with self._client.start_session(causal_consistency=True) as session:
            position = await self._position(session)
            log.info("snapshot_started", scope=self._scope.describe(), **position.describe())
            pending: list[DocumentEvent] = []
            async for event in self._scan(session, position.cluster_time or 0):
                pending.append(event)
                if stop.is_set() or len(pending) >= self._max_batch:
                    if not await self._append(pending, None, stop):
                        return None
                    pending = []
            checkpoint = position.checkpoint()
            if not await self._append(pending, checkpoint, stop):
                return None
        log.info(
            "snapshot_finished",
            documents=self._documents,
            rejected=self._rejected,
            **position.describe(),
        )
        return SnapshotResult(checkpoint, documents=self._documents, rejected=self._rejected)

    async def _scan(
        self, session: AsyncClientSession, version: int
    ) -> AsyncIterator[DocumentEvent]:
        """The created event of every watched document passing the filter, at *version*."""
        taken_at = datetime.fromtimestamp(version >> 32, UTC)
        database = self._scope.database
        for name in await self._scope.collection_names(self._client):
            namespace = f"{database}.{name}"
            cursor = self._client[database][name].find(
                self._mapper.filter,
                projection=self._mapper.projection(),
                batch_size=self._max_batch,
                session=session,
            )
            async with cursor:
                async for document in cursor:
                    key = document_id(document["_id"])
                    origin = ChangeOrigin(
                        event_id=f"snapshot:{version}:{namespace}:{key}",
                        document_id=key,
                        namespace=namespace,
                        version=version,
                        timestamp=taken_at,
                    )
                    self._documents += 1
                    try:
                        yield self._mapper.created(document, origin)
                    except DocumentRejected as exc:
                        self._rejected += 1
                        log.error(
                            "document_rejected",
                            namespace=namespace,
                            document_id=key,
                            error=str(exc),
                        )
                        yield self._mapper.rejected(origin, exc)
            log.info("snapshot_collection_scanned", namespace=namespace)

    async def _position(self, session: AsyncClientSession) -> StreamPosition:
        """The stream's end before the scan, read in the scan's causal session."""
        return await current_position(self._client, self._scope, session)

    async def _append(
        self, events: list[DocumentEvent], checkpoint: Checkpoint | None, stop: asyncio.Event
    ) -> bool:
        await self._backpressure.wait(stop)
        if stop.is_set():
            log.warning("snapshot_stopped", note="no position saved; the next start scans again")
            return False
        fence = self._fence() if callable(self._fence) else self._fence
        await self._queue.append(events, checkpoint, fence=fence)
        return True
