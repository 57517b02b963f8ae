"""The operator's commands against the real service process (`main.py run`, the model,
mongosim, Redis, Milvus Lite), run as operators run them (`main.py checkpoint ...`,
`main.py backfill`): each reset form while the service runs and while it is stopped,
a backfill killed twice and resumed, Redis's data lost without losing the
embeddings, and the consistency check finding planted problems and repairing them."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bson import json_util
from e2e_harness import CONVERGE_SECONDS, assert_index_equals_source, opened_store, wait_applied
from pymongo import AsyncMongoClient
from service_process import ServiceProcess, cdc, service_process, streaming

from checkpoints.audit import AuditLog
from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.stats import Stats
from checkpoints.tokens import ResumeTokenStore
from checkpoints.versions import VersionStore
from indexer.store import ChunkRow
from sidecar.settings import Settings
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = [pytest.mark.model, pytest.mark.slow]
Mongo = AsyncMongoClient[dict[str, Any]]


async def index_then_stop(
    settings: Settings, log: Path, redis: aioredis.Redis, mongo: Mongo, articles: Any, count: int
) -> None:
    """*count* documents written, indexed by a service that then stops on SIGTERM."""
    await articles.insert_many(
        [
            {"_id": n, "title": f"Doc {n}", "body": f"Body of document {n}. " * 8}
            for n in range(count)
        ]
    )
    keys = Keys(settings.pipeline)
    async with service_process(settings, log) as service:
        await streaming(service, redis, keys)
        await wait_applied(redis, keys, mongo)
        assert await service.signal_and_wait(signal.SIGTERM) == 0


async def next_second(articles: Any) -> str:
    """After a write, the start of the next whole second as ISO 8601 (reset times have a
    one-second resolution): a time the server's history holds."""
    await articles.insert_one({"title": "marks a second"})
    first = datetime.now(UTC)

    async def later() -> bool:
        return datetime.now(UTC).replace(microsecond=0) > first

    await eventually(later, what="the next second")
    return datetime.now(UTC).replace(microsecond=0).isoformat()


async def test_every_reset_form_works_while_the_service_runs_and_while_it_is_stopped(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    stats = Stats(redis_client, keys)
    log = tmp_path / "service.log"
    async with service_process(settings, log) as service:
        await streaming(service, redis_client, keys)
        since = await next_second(articles)
        await articles.insert_many([{"_id": n, "title": f"Doc {n}"} for n in range(3)])
        await wait_applied(redis_client, keys, mongo)
        captured = (await stats.read())["events_captured"]
        token = json_util.dumps((await ResumeTokenStore(redis_client, keys).load()).token)  # type: ignore[union-attr]

        moved = await cdc(settings, "checkpoint", "reset", "--to-time", since)
        assert moved["after"] == f"at {since.replace('+00:00', 'Z')}"

        async def replayed() -> bool:
            service.require_alive()
            return (await stats.read())["events_captured"] >= captured + 3

        await eventually(replayed, within=CONVERGE_SECONDS, what="the replay from the time")
        for form in (("--to-token", token), ("--to-now",), ("--rescan",)):
            await cdc(settings, "checkpoint", "reset", *form)
        await articles.insert_one({"_id": "during", "title": "written while it runs"})
        await wait_applied(redis_client, keys, mongo)
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()

    await articles.insert_one({"_id": "stopped", "title": "written while it is stopped"})
    since = await next_second(articles)
    for form in (("--to-time", since), ("--to-token", token), ("--rescan",), ("--to-now",)):
        await cdc(settings, "checkpoint", "reset", *form)
    assert await Lease(redis_client, keys, owner="probe").holder() is None
    audit = await AuditLog(redis_client, keys).recent(20)
    # --rescan while it ran made the service load every document again, as a first start.
    reloaded = [entry.command for entry in audit if "(first start)" in entry.command]
    assert "backfill (first start)" in reloaded
    commands = [entry for entry in audit if "(first start)" not in entry.command]
    assert [entry.outcome for entry in commands[:8]] == ["done"] * 8
    assert all(entry.by.count("@") == 1 for entry in commands[:8])

    # --to-now came last: the write made while stopped is skipped on purpose, and a
    # backfill brings it in; the index then equals the source.
    stopped_key = f"{settings.database}.{settings.collections[0]}/stopped"
    versions = VersionStore(redis_client, keys, ttl_seconds=None)
    async with service_process(settings, log) as service:
        await streaming(service, redis_client, keys)
        await articles.insert_one({"_id": "after", "title": "written after the restart"})
        await wait_applied(redis_client, keys, mongo)
        assert await versions.get_many([stopped_key]) == {}
        await cdc(settings, "backfill")
        await backfilled(service, redis_client, keys)
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
    assert stopped_key in await versions.get_many([stopped_key])
    async with opened_store(settings, embedder) as store:
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)


async def backfilled(service: ServiceProcess, redis: aioredis.Redis, keys: Keys) -> None:
    jobs = BackfillStore(redis, keys)

    async def done() -> bool:
        service.require_alive()
        job = await jobs.load()
        drained = int(await redis.xlen(keys.bulk)) == 0 and int(await redis.xlen(keys.events)) == 0
        return job is not None and job.state == "done" and drained

    await eventually(done, within=CONVERGE_SECONDS * 3, what="the backfill to be indexed")


async def test_a_backfill_killed_twice_resumes_from_its_last_chunk(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    # Small chunks and a small bulk lane, so the scan is still running at each kill; a
    # short lease, so each restart takes over from the killed process within seconds.
    settings = make_settings(backfill_chunk=40, backfill_max_queued=80, lease_ttl=5)
    keys = Keys(settings.pipeline)
    jobs = BackfillStore(redis_client, keys)
    log = tmp_path / "service.log"
    # Not indexed: written before any service ran, then the position set past them.
    total = 400
    await articles.insert_many([{"_id": n, "title": f"Short note {n}."} for n in range(total)])
    await cdc(settings, "checkpoint", "reset", "--to-now")
    await cdc(settings, "backfill")

    progress: list[int] = []
    for _ in range(2):
        async with service_process(settings, log) as service:

            async def advanced() -> bool:
                service.require_alive()
                job = await jobs.load()
                return job is not None and job.queued > (progress[-1] if progress else 0)

            await eventually(advanced, within=CONVERGE_SECONDS, what="the backfill to advance")
            assert await service.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
        job = await jobs.load()
        assert job is not None and job.state == "running", "the kill came after the end"
        progress.append(job.queued)
    assert progress[0] < progress[1] < total

    async with service_process(settings, log) as service:
        await backfilled(service, redis_client, keys)
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
    job = await jobs.load()
    assert job is not None and job.queued == total  # no chunk was scanned twice
    assert (await Stats(redis_client, keys).read())["events_backfilled"] == total
    async with opened_store(settings, embedder) as store:
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)


async def test_losing_redis_data_costs_a_rescan_not_the_embeddings(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    log = tmp_path / "service.log"
    await index_then_stop(settings, log, redis_client, mongo, articles, 20)
    # Everything the pipeline kept in Redis is gone (FLUSHALL, for this pipeline only:
    # the Redis is shared with other tests).
    lost = [key async for key in redis_client.scan_iter(match=f"{keys.prefix}*")]
    await redis_client.delete(*lost)

    async with service_process(settings, log) as service:
        await streaming(service, redis_client, keys)
        await wait_applied(redis_client, keys, mongo)  # the first start's rescan
        await cdc(settings, "backfill")
        await backfilled(service, redis_client, keys)
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
    counters = await Stats(redis_client, keys).read()
    assert counters["embeddings_computed"] == 0 and counters["chunks_embedded"] == 0
    assert counters["embeddings_skipped"] > 0
    async with opened_store(settings, embedder) as store:
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)


async def test_the_checker_finds_each_planted_problem_and_repair_fixes_it(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings(lease_ttl=5)
    keys = Keys(settings.pipeline)
    namespace = f"{settings.database}.{settings.collections[0]}"
    log = tmp_path / "service.log"
    await index_then_stop(settings, log, redis_client, mongo, articles, 12)

    # Planted while the service is stopped: a lost row, an orphan, a row no record
    # lists, a version from the future, and a change skipped by a reset (stale text).
    async with opened_store(settings, embedder) as store:
        rows = await store.chunk_ids_by_document()
        await store.delete([sorted(rows[f"{namespace}/$num:1"])[0]])
        (vector,) = await embedder.embed(["orphan"])
        planted = [
            ChunkRow(
                id=f"planted-{doc}", doc_key=f"{namespace}/{doc}", namespace=namespace,
                document_id=doc, chunk_index=0, text="orphan", vector=vector, updated_at=0,
                metadata={},
            )
            for doc in ("ghost", "$num:5")
        ]
        await store.upsert(planted)
    versions = VersionStore(redis_client, keys, ttl_seconds=None)
    record = (await versions.get_many([f"{namespace}/$num:4"]))[f"{namespace}/$num:4"]
    future = replace(record, version=(int(time.time()) + 86_400) << 32)
    await redis_client.set(keys.version(f"{namespace}/$num:4"), future.to_json())
    await articles.update_one({"_id": 3}, {"$set": {"body": "A change the index never saw."}})
    await cdc(settings, "checkpoint", "reset", "--to-now")

    found = await cdc(settings, "check", status=3)  # no service: the command opens the index
    assert found["problems"] == {"missing": 1, "orphan": 1, "stale": 1, "version_mismatch": 2}

    async with service_process(settings, log) as service:
        await streaming(service, redis_client, keys)
        (explained,) = (await cdc(settings, "explain", "1"))["documents"]
        assert explained["verdict"] == "missing"
        repaired = await cdc(settings, "check", "--repair")
        assert repaired["repair"] == {"queued": 5, "left": 0}
        await backlog_drained(service, redis_client, keys)
        after = await cdc(settings, "check")
        assert sum(after["problems"].values()) == 0
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
    async with opened_store(settings, embedder) as store:
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)


async def backlog_drained(service: ServiceProcess, redis: aioredis.Redis, keys: Keys) -> None:
    async def drained() -> bool:
        service.require_alive()
        lanes = [int(await redis.xlen(lane)) for lane in (keys.bulk, keys.events)]
        return lanes == [0, 0]

    await eventually(drained, within=CONVERGE_SECONDS, what="the repairs to be indexed")
