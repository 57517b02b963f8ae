"""What start-up checks before it loads the model, so a wrong password or a filter the
server rejects stops the service in seconds, not after a model load."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import ExecutionTimeout
from redis.asyncio import Redis

from core.retry import outlast
from sidecar.settings import Settings

# A collection name for checking the filter when the whole database is watched.
PROBE_COLLECTION = "cdc_sidecar_preflight"

# Long enough for the server to parse and plan the filter, short enough that a
# filter matching nothing in a large collection does not hold start-up up.
PROBE_MS = 1000


async def preflight(settings: Settings, stop: asyncio.Event) -> None:
    """Check that Redis (when CDC_REDIS_URL is set) and MongoDB accept the sidecar's
    credentials and that MongoDB accepts CDC_FILTER. Waits out servers that do not
    answer yet; raises their error otherwise (see core.errors.describe_failure),
    and core.retry.Stopped when *stop* is set while one is down."""
    if settings.redis_url is not None:
        redis = Redis.from_url(settings.redis_url, socket_timeout=5)
        try:
            await outlast(redis.ping, what="Redis", stop=stop)
        finally:
            await redis.aclose()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        collection = mongo[settings.database][(settings.collections or [PROBE_COLLECTION])[0]]

        async def probe() -> None:
            try:
                await collection.find_one(settings.filter, max_time_ms=PROBE_MS)
            except ExecutionTimeout:
                return  # parsed and running: the server accepts the filter

        await outlast(probe, what="MongoDB", stop=stop)
    finally:
        await mongo.close()
