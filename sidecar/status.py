"""A pipeline's state as Redis holds it: readable while the service runs, by any process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from checkpoints.backfills import BackfillStore
from checkpoints.checks import CheckResults
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore, unpack_timestamp
from operations.backfills import progress
from operations.control import COMMAND_OWNER


def _cluster_time(packed: int | None) -> dict[str, Any] | None:
    if packed is None:
        return None
    ts = unpack_timestamp(packed)
    return {
        "t": ts.time,
        "i": ts.inc,
        "iso": datetime.fromtimestamp(ts.time, UTC).isoformat(),
    }


async def pipeline_status(redis: Redis, keys: Keys) -> dict[str, Any]:
    """The service holding the lease (None when none runs), checkpoint, queue length,
    pending entries, dead letters, last applied change and counters of the pipeline
    named by *keys*."""
    checkpoint = await ResumeTokenStore(redis, keys).load()
    stats = Stats(redis, keys)
    position: dict[str, Any] | None = None
    if checkpoint is not None:
        position = {
            "token": None if checkpoint.token is None else dict(checkpoint.token),
            "cluster_time": _cluster_time(checkpoint.cluster_time),
            "start_at_operation_time": _cluster_time(checkpoint.start_at_operation_time),
            "saved_at": checkpoint.saved_at.isoformat(),
        }
    queue = EventQueue(redis, keys)
    holder = await Lease(redis, keys, owner="status").holder()
    service = None
    if holder is not None and not holder[0].startswith(COMMAND_OWNER):
        service = {"owner": holder[0], "since": holder[1]}
    return {
        "pipeline": keys.pipeline,
        "service": service,
        "checkpoint": position,
        "queue_length": await queue.backlog(),
        "pending": await queue.pending(),
        "dead_letters": await queue.dead_letters(),
        "paused": await PauseFlag(redis, keys).read(),
        "backlog_bulk": await queue.bulk_backlog(),
        "backfill": progress(await BackfillStore(redis, keys).load()),
        "last_check": await CheckResults(redis, keys).last(),
        "last_applied": await stats.last_applied(),
        "counters": await stats.read(),
    }
