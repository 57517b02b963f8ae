"""A pipeline's state as Redis holds it: readable while the service runs, by any process."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from checkpoints.backfills import BackfillStore
from checkpoints.checks import CheckResults
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.pause import PauseFlag
from checkpoints.queue import EventQueue, lag_seconds
from checkpoints.service import ServiceRecord
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
    """The service holding the lease (None when none runs) and the embedder fingerprint
    it recorded (model, weights digest, inference path), checkpoint, lag (as the
    metric cdc_sidecar_lag_seconds), queue length,
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
    lag = lag_seconds(time.time(), checkpoint, await queue.oldest_live())
    holder = await Lease(redis, keys, owner="status").holder()
    service = None
    if holder is not None and not holder[0].startswith(COMMAND_OWNER):
        model = await ServiceRecord(redis, keys).fingerprint(holder[0])
        service = {"owner": holder[0], "since": holder[1], "model": model}
    return {
        "pipeline": keys.pipeline,
        "service": service,
        "checkpoint": position,
        "lag_seconds": None if lag is None else round(lag, 3),
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


def status_lines(report: dict[str, Any]) -> list[str]:
    """`status`'s text: one aligned line per part of *report* (pipeline_status)."""
    lines: list[str] = []
    checkpoint = report["checkpoint"]
    service = report["service"]
    lines.append(f"pipeline        {report['pipeline']}")
    if service is None:
        lines.append("service         NOT RUNNING (no replica holds the lease)")
    else:
        lines.append(f"service         {service['owner']} (lease since {service['since']})")
        if service["model"] is not None:
            lines.append(f"model           {service['model']}")
    if checkpoint is None:
        lines.append("checkpoint      none (the next start scans the collections first)")
    else:
        when = checkpoint["cluster_time"] or checkpoint["start_at_operation_time"] or {}
        lines.append(f"checkpoint      {when.get('iso', '?')}  saved {checkpoint['saved_at']}")
    lag = report["lag_seconds"]
    lines.append(f"lag             {'-' if lag is None else f'{lag:.1f} s'}")
    lines.append(f"queue length    {report['queue_length']}")
    lines.append(f"pending         {report['pending']}")
    lines.append(f"dead letters    {report['dead_letters']}")
    lines.append(f"bulk backlog    {report['backlog_bulk']}")
    job = report["backfill"]
    if job is not None:
        why = f" ({job['reason']}; {job['swept']} deleted)" if job["reason"] else ""
        lines.append(
            f"backfill        {job['id']} {job['state']}{why}: {job['queued']} of about "
            f"{job['estimated']} documents queued ({', '.join(job['collections'])})"
        )
    paused = report["paused"]
    if paused is not None:
        lines.append(
            f"indexing        PAUSED by {paused['by']} since {paused['since']}: "
            f"{paused['reason'] or 'no reason given'} (cdc-sidecar resume)"
        )
    check = report["last_check"]
    if check is not None:
        found = ", ".join(f"{count} {kind}" for kind, count in check["problems"].items() if count)
        lines.append(
            f"last check      {check['started_at']} by {check['by']}: {check['checked']} "
            f"documents, {found or 'no problems'}"
        )
    last = report["last_applied"]
    lines.append(f"last applied    {last['doc_key'] + ' at ' + last['timestamp'] if last else '-'}")
    counters = report["counters"]
    width = max(16, *(len(name) + 2 for name in counters))
    for name, value in counters.items():
        lines.append(f"{name:<{width}}{value}")
    return lines
