"""Helpers shared by the capture tests: the pipeline's Redis objects and a mapper."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from cdc.fields import IndexedText, MetadataFields, UserField
from cdc.mapping import ChangeMapper
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import Checkpoint, ResumeTokenStore
from core.events import DocumentEvent, event_from_json

DATABASE = "app"


@dataclass
class PipelineParts:
    keys: Keys
    redis: aioredis.Redis
    queue: EventQueue
    tokens: ResumeTokenStore
    stats: Stats
    lease: Lease
    fence: int

    async def _entries(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrange(self.keys.events)
        )

    async def events(self) -> list[DocumentEvent]:
        """Every queued event, oldest first."""
        return [event_from_json(fields[b"event"]) for _, fields in await self._entries()]

    async def drain(self) -> list[DocumentEvent]:
        """Take every queued event off the queue, as the indexer does once it applied them."""
        entries = await self._entries()
        if entries:
            await self.redis.xdel(self.keys.events, *[entry_id for entry_id, _ in entries])
        return [event_from_json(fields[b"event"]) for _, fields in entries]


def article_mapper(query: dict[str, Any] | None = None) -> ChangeMapper:
    return ChangeMapper(
        IndexedText(["title", "sections.text"]),
        MetadataFields(["lang"]),
        UserField("owner"),
        query,
    )


class CountingQueue(EventQueue):
    """The real queue, counting capture's reads (it checks the backlog before each)
    and its writes (one append per saved batch, with the batch's event count)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        super().__init__(redis, keys)
        self.reads = 0
        self.appended: list[int] = []

    async def backlog(self) -> int:
        self.reads += 1
        return await super().backlog()

    async def append(
        self,
        events: Sequence[DocumentEvent],
        checkpoint: Checkpoint | None,
        *,
        fence: int,
        urgent: Collection[str] = (),
    ) -> None:
        self.appended.append(len(events))
        await super().append(events, checkpoint, fence=fence, urgent=urgent)
