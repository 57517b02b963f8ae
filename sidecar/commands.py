"""Operator commands bound to the configuration: what `cdc-sidecar checkpoint ...` runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from checkpoints.checks import CheckProgress
from checkpoints.keys import Keys
from checkpoints.versions import VersionStore
from core.errors import RedisUnavailable, is_outage, redact
from indexer.plan import pipeline_fingerprint
from operations import deadletters, positions
from operations.backfills import follow_state
from operations.context import IndexView
from sidecar.app import (
    build_chunker,
    build_embedder,
    build_mapper,
    build_store,
    recorded_embedder,
    redis_for,
)
from sidecar.perform import perform_for
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
        return await perform_for(
            settings, redis, name, args, index=lambda: open_index(settings, redis)
        )


@asynccontextmanager
async def open_index(settings: Settings, redis: Redis) -> AsyncIterator[IndexView]:
    """The index as the service would open it, for a command run with no service: the
    model is loaded for its fingerprint (content hashes are built on it) and the
    Milvus collection is opened (and checked against it)."""
    embedder = build_embedder(settings, recorded=await recorded_embedder(settings))
    await embedder.start()
    try:
        store = build_store(settings, embedder)
        await store.start()
        try:
            versions = VersionStore(
                redis, Keys(settings.pipeline), ttl_seconds=settings.index_version_ttl
            )
            yield IndexView(
                store,
                versions,
                build_mapper(settings),
                pipeline_fingerprint(
                    embedder.fingerprint, build_chunker(settings, embedder).fingerprint
                ),
            )
        finally:
            await store.stop()
    finally:
        await embedder.stop()


async def list_dead_letters(settings: Settings, limit: int, after: str | None) -> dict[str, Any]:
    async with pipeline_redis(settings) as redis:
        return await deadletters.listing(redis, Keys(settings.pipeline), limit=limit, after=after)


async def show_dead_letter(settings: Settings, entry_id: str) -> dict[str, Any]:
    async with pipeline_redis(settings) as redis:
        return await deadletters.show(redis, Keys(settings.pipeline), entry_id)


async def backfill_progress(settings: Settings) -> dict[str, Any]:
    """The backfill job and the bulk lane's backlog, for `backfill --follow`."""
    async with pipeline_redis(settings) as redis:
        return await follow_state(redis, Keys(settings.pipeline))


async def check_with_progress(
    settings: Settings, args: dict[str, Any], show: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """`check` carried out as `command` does, calling *show* with the running check's
    progress (phase, documents checked, estimated) about twice a second."""
    work = asyncio.create_task(command(settings, "check", args))
    async with pipeline_redis(settings) as redis:
        progress = CheckProgress(redis, Keys(settings.pipeline))
        while not work.done():
            current = await progress.read()
            if current is not None and current["phase"] != "done":  # not a finished run's
                show(current)
            await asyncio.wait([work], timeout=0.5)
    return await work
