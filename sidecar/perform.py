"""An operator command carried out for a pipeline's settings: what the command line
and the admin API both call."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from cdc.namespaces import WatchScope
from checkpoints.keys import Keys
from operations.context import IndexOpener
from operations.control import perform
from sidecar.settings import Settings


async def perform_for(
    settings: Settings,
    redis: Redis,
    name: str,
    args: dict[str, Any],
    *,
    index: IndexOpener,
    by: str | None = None,
) -> dict[str, Any]:
    """Carry out the operator command *name* of the pipeline *settings* configure,
    under its lease (see operations.control.perform, which says what it raises)."""
    return await perform(
        redis,
        Keys(settings.pipeline),
        settings.mongo_uri,
        WatchScope(settings.database, settings.collections),
        name,
        args,
        index=index,
        lease_ttl=settings.lease_ttl,
        by=by,
    )
