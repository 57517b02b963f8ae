"""Operator commands bound to the configuration: what `cdc-sidecar checkpoint ...` runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cdc.namespaces import WatchScope
from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.queue import EventQueue
from core.errors import RedisUnavailable, is_outage, redact
from operations import deadletters, positions
from operations.backfills import progress
from operations.control import perform
from sidecar.app import redis_for
from sidecar.settings import Settings


@asynccontextmanager
async def pipeline_redis(settings: Settings) -> AsyncIterator[Redis]:
    """The pipeline's Redis, for a command: an unreachable one is one error line."""
    async with redis_for(settings, start_private=False) as redis:
        try:
            yield redis
        except RedisError as error:
            if not is_outage(error):
                raise
            where = redact(settings.redis_url) if settings.redis_url else "the private Redis"
            raise RedisUnavailable(
                f"cannot reach {where}: {error} (check CDC_REDIS_URL; nothing was changed)"
            ) from None


async def show_checkpoint(settings: Settings) -> dict[str, Any]:
    async with pipeline_redis(settings) as redis:
        return await positions.show(redis, Keys(settings.pipeline))


async def command(settings: Settings, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Carry out the operator command *name* under the pipeline's lease (see
    operations.control.perform)."""
    async with pipeline_redis(settings) as redis:
        return await perform(
            redis,
            Keys(settings.pipeline),
            settings.mongo_uri,
            WatchScope(settings.database, settings.collections),
            name,
            args,
        )


async def list_dead_letters(settings: Settings, limit: int, after: str | None) -> dict[str, Any]:
    async with pipeline_redis(settings) as redis:
        return await deadletters.listing(redis, Keys(settings.pipeline), limit=limit, after=after)


async def show_dead_letter(settings: Settings, entry_id: str) -> dict[str, Any]:
    async with pipeline_redis(settings) as redis:
        return await deadletters.show(redis, Keys(settings.pipeline), entry_id)


async def backfill_progress(settings: Settings) -> dict[str, Any]:
    """The backfill job and the bulk lane's backlog, for `backfill --follow`."""
    async with pipeline_redis(settings) as redis:
        keys = Keys(settings.pipeline)
        job = await BackfillStore(redis, keys).load()
        backlog = await EventQueue(redis, keys).bulk_backlog()
        return {"backfill": progress(job), "backlog_bulk": backlog}
