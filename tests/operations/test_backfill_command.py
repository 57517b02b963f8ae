"""`backfill` carried out by a running service (in-process, deterministic embedder): the
job runs beside the live stream, and over an index already in sync it embeds nothing."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from cdc.fields import document_id
from cdc.namespaces import WatchScope
from checkpoints.audit import AuditLog
from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue, JobReplaced
from checkpoints.stats import Stats
from core.errors import SidecarError
from operations.control import perform
from sidecar.app import Sidecar
from tests.conftest import COLLECTION, DATABASE
from tests.operations.conftest import WITHIN, Client, idle, orphan_rows
from tests.waiting import eventually


async def backfill(sidecar: Sidecar, **args: Any) -> dict[str, Any]:
    settings = sidecar.settings
    return await perform(
        sidecar.redis, sidecar.keys, settings.mongo_uri,
        WatchScope(settings.database, settings.collections), "backfill",
        {"collections": [], "filter": ""} | args,
    )


async def test_a_backfill_of_an_index_in_sync_embeds_nothing_and_live_changes_still_flow(
    service: Sidecar, mongo: Client
) -> None:
    stats = Stats(service.redis, service.keys)
    before = await stats.read()

    started = await backfill(service)
    await mongo[DATABASE][COLLECTION].insert_one({"_id": "live", "title": "written during it"})

    async def finished() -> bool:
        job = await BackfillStore(service.redis, service.keys).load()
        return job is not None and job.state == "done" and await idle(service)

    await eventually(finished, within=WITHIN, what="the backfill to be indexed")
    after = await stats.read()
    job = await BackfillStore(service.redis, service.keys).load()
    assert job is not None and job.id == started["backfill"]["id"]
    assert job.queued == 31 and after["events_backfilled"] - before["events_backfilled"] == 31
    # Only the live insert was embedded: the 30 unchanged documents cost no embedding.
    assert after["embeddings_computed"] - before["embeddings_computed"] == after[
        "chunks_embedded"
    ] - before["chunks_embedded"]
    assert after["chunks_embedded"] - before["chunks_embedded"] == 1
    assert after["embeddings_skipped"] > before["embeddings_skipped"]


async def test_a_backfill_names_only_watched_collections_and_runs_one_at_a_time(
    redis_client: aioredis.Redis, pipeline_name: str, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    scope = WatchScope(DATABASE, [COLLECTION])

    async def ask(**args: Any) -> dict[str, Any]:
        body = {"collections": [], "filter": ""} | args
        return await perform(redis_client, keys, sim.uri, scope, "backfill", body)

    unwatched = rf"not a watched collection: nope \(watched: {COLLECTION}\)"
    with pytest.raises(SidecarError, match=unwatched):
        await ask(collections=["nope"])
    with pytest.raises(SidecarError, match="--filter: "):
        await ask(filter='{"$where": "true"}')
    with pytest.raises(SidecarError, match="give document ids or --filter, not both"):
        body = {"ids": ["4"], "filter": '{"lang": "zh"}'}
        await perform(redis_client, keys, sim.uri, scope, "reindex", body)
    first = await ask(filter='{"lang": "zh"}')  # no service runs: it waits for one
    assert first["backfill"]["state"] == "running" and first["backfill"]["filter"]
    with pytest.raises(SidecarError, match=f"backfill {first['backfill']['id']} is still running"):
        await ask()
    (entry, *_) = await AuditLog(redis_client, keys).recent()
    assert entry.outcome.startswith("failed: backfill ")


async def test_a_reindex_by_id_heals_rows_milvus_lost_and_deletes_what_the_source_lacks(
    service: Sidecar,
) -> None:
    keys = {n: f"{DATABASE}.{COLLECTION}/{document_id(n)}" for n in (4, 6, 99)}
    rows = await service.store.chunk_ids_by_document()
    # Milvus lost two documents' rows behind their records' back, and holds an orphan.
    await service.store.delete(sorted(rows[keys[4]] | rows[keys[6]]))
    await service.store.upsert(await orphan_rows(service, keys[99]))

    started = await perform(
        service.redis, service.keys, service.settings.mongo_uri,
        WatchScope(DATABASE, [COLLECTION]), "reindex", {"ids": ["4", "99"], "filter": ""},
    )

    async def healed() -> bool:
        job = await BackfillStore(service.redis, service.keys).load()
        return job is not None and job.state == "done" and await idle(service)

    await eventually(healed, within=WITHIN, what="the reindex to be indexed")
    indexed = await service.store.chunk_ids_by_document()
    assert indexed[keys[4]] == rows[keys[4]]
    assert keys[99] not in indexed
    assert keys[6] not in indexed  # not named: a reindex touches only what it names
    assert started["backfill"]["estimated"] == 2


async def test_a_cancelled_backfill_stops_at_its_next_write_and_says_so(
    redis_client: aioredis.Redis, pipeline_name: str, sim: Any
) -> None:
    keys = Keys(pipeline_name)
    scope = WatchScope(DATABASE, [COLLECTION])
    started = await perform(  # no service runs: the job waits for one
        redis_client, keys, sim.uri, scope, "backfill", {"collections": [], "filter": ""}
    )
    job = await BackfillStore(redis_client, keys).load()
    assert job is not None and job.state == "running"

    cancelled = await perform(redis_client, keys, sim.uri, scope, "backfill cancel", {})

    assert cancelled["message"].startswith(f"backfill cancelled {job.id} after 0 of about ")
    stored = await BackfillStore(redis_client, keys).load()
    assert stored is not None and stored.state == "cancelled"
    assert stored.reason.startswith("cancelled by ") and stored.finished_at is not None
    (entry, *_) = await AuditLog(redis_client, keys).recent()
    assert (entry.command, entry.by) == ("backfill --cancel", started["backfill"]["by"])
    # The runner of the job cannot write its progress (nor queue events) any more.
    runner = Lease(redis_client, keys, owner="runner")
    fence = await runner.acquire()
    with pytest.raises(JobReplaced, match="was cancelled or replaced"):
        await EventQueue(redis_client, keys).append_bulk(
            [], keys.backfill, job.to_json(), fence=fence, job_id=job.id
        )
    assert (await BackfillStore(redis_client, keys).load()) == stored
    await runner.release()
    with pytest.raises(SidecarError, match="no backfill is running"):
        await perform(redis_client, keys, sim.uri, scope, "backfill cancel", {})
