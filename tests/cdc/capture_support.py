"""Helpers shared by the capture tests: the pipeline's Redis objects, a mapper, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from cdc.events import DocumentEvent, event_from_json
from cdc.fields import IndexedText, MetadataFields, UserField
from cdc.mapping import ChangeMapper
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore

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


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Wait until *condition* holds, polling; fail the test after *within* seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
