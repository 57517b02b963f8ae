"""The HTTP server of the real service process: probes through start-up and standby,
the metrics an operator's Prometheus scrapes, and the admin API next to the
command line (the same operations, the same audit log)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from sidecar.settings import Settings
from tests.e2e.e2e_harness import CONVERGE_SECONDS
from tests.e2e.service_process import cdc, service_process, streaming
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.model]

TOKEN = "an-admin-token-long-enough"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Scrape = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Scrape:
    """Every sample of a scrape by name: its labels and value."""
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def matching(scrape: Scrape, name: str, **labels: str) -> list[float]:
    return [v for found, v in scrape.get(name, []) if labels.items() <= found.items()]


def value(scrape: Scrape, name: str, **labels: str) -> float:
    """The sum of the samples of *name* with *labels*; fails when there is none."""
    found = matching(scrape, name, **labels)
    assert found, f"no sample {name}{labels} in the scrape"
    return sum(found)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


async def test_probes_metrics_and_admin_api_of_a_running_service(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: AsyncMongoClient[dict[str, Any]],
    articles: Any,
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(http_port=port, http_host="127.0.0.1", admin_token=TOKEN)
    keys = Keys(settings.pipeline)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    await articles.insert_many(
        [{"_id": i, "title": f"t{i}", "body": f"body {i}"} for i in range(5)]
    )
    async with (
        service_process(settings, tmp_path / "service.log") as service,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):

        async def answering() -> bool:
            service.require_alive()
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        # The server answers while the model loads: liveness from the first seconds.
        await eventually(answering, within=CONVERGE_SECONDS, what="/healthz answering")
        await streaming(service, redis_client, keys)

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=CONVERGE_SECONDS, what="/readyz 200")
        assert (await client.get("/readyz")).json()["phase"] == "streaming"

        tasks = "cdc_sidecar_index_tasks_total"

        async def loaded() -> bool:
            return sum(matching(await scrape(client), tasks, status="success")) >= 5

        await eventually(loaded, within=CONVERGE_SECONDS, what="the first start's load counted")
        before = await scrape(client)
        await articles.insert_one({"_id": 99, "title": "new", "body": "written after start"})
        await articles.update_one({"_id": 1}, {"$set": {"body": "edited"}})
        await articles.delete_one({"_id": 2})

        def moved(current: Scrape, name: str, **labels: str) -> float:
            return sum(matching(current, name, **labels)) - sum(matching(before, name, **labels))

        async def applied() -> bool:
            current = await scrape(client)
            return all(
                moved(current, tasks, event_type=kind, status="success") >= 1
                for kind in ("created", "updated", "deleted")
            )

        await eventually(applied, within=CONVERGE_SECONDS, what="the changes counted")
        current = await scrape(client)
        pipeline = {"pipeline": settings.pipeline}
        assert value(current, "cdc_sidecar_lease_held", **pipeline) == 1
        for kind in ("created", "updated", "deleted"):
            assert moved(current, tasks, event_type=kind, status="success") == 1, kind
        assert (
            moved(current, tasks, status="failed") == moved(current, tasks, status="rejected") == 0
        )
        assert moved(current, "cdc_sidecar_events_captured_total") == 3
        # Live changes are timed; the first start's load was not.
        assert moved(current, "cdc_sidecar_index_latency_seconds_count") == 3
        assert sum(matching(before, "cdc_sidecar_index_latency_seconds_count")) == 0
        assert value(current, "cdc_sidecar_chunks_embedded_total") >= 6
        assert value(current, "cdc_sidecar_outage_active", dependency="redis") == 0
        assert value(current, "cdc_sidecar_dead_letters") == 0
        # Caught up: the lag is the age of the position saved last (about a second).
        assert 0 <= value(current, "cdc_sidecar_lag_seconds") < 10
        assert value(current, "cdc_sidecar_checkpoint_timestamp_seconds") > 1.7e9
        build = current["cdc_sidecar_build_info"][0][0]
        assert build["fingerprint"] and build["version"] == "0.1.0"
        assert "process_resident_memory_bytes" in current

        # State changes need the token; reads of the pipeline's state do not.
        refused = await client.post("/index/pause", json={"reason": "no token"})
        assert refused.status_code == 401
        assert "Bearer" in refused.json()["error"]
        wrong = await client.post("/index/pause", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        paused = await client.post("/index/pause", json={"reason": "maintenance"}, headers=auth)
        assert paused.status_code == 200, paused.text
        status = (await client.get("/index/status")).json()
        assert status["paused"]["reason"] == "maintenance"
        assert status["replica"]["phase"] == "streaming"
        # The command line sees what the API did, and the audit log holds both.
        assert (await cdc(settings, "status"))["paused"]["reason"] == "maintenance"
        resumed = await client.post("/index/resume", headers=auth)
        assert resumed.status_code == 200, resumed.text
        shown = (await client.get("/checkpoint")).json()
        latest = [(entry["command"], entry["by"]) for entry in shown["audit"][:2]]
        assert latest == [
            ("resume", "http api (127.0.0.1)"),
            ("pause --reason 'maintenance'", "http api (127.0.0.1)"),
        ], latest

        # Bad input: a JSON error a person can act on, never a 5xx, nothing changed.
        for method, path, body in (
            ("post", "/checkpoint/reset", {}),
            ("post", "/checkpoint/reset", {"to_now": True, "rescan": True}),
            ("post", "/checkpoint/reset", {"to_time": "yesterday"}),
            ("post", "/backfill", {"collections": ["not_watched"]}),
            ("post", "/backfill", {"filter": {"$where": "1"}}),
            ("post", "/index/reindex", {"ids": "not a list"}),
            ("post", "/dlq/replay", {"ids": ["not-an-id"]}),
            ("post", "/dlq/purge", {}),
            ("post", "/check", {"sample": 0}),
            ("get", "/dlq?limit=0", None),
            ("get", "/dlq/not-an-id", None),
        ):
            answer = await client.request(method, path, json=body, headers=auth)
            assert 400 <= answer.status_code < 500, (path, body, answer.text)
            assert answer.json()["error"], (path, body)
        assert (await cdc(settings, "checkpoint", "show"))["audit"][0][
            "command"
        ] != "checkpoint reset"

        explained = await client.get("/explain/1", headers=auth)
        assert explained.status_code == 200, explained.text
        assert explained.json()["documents"][0]["verdict"] == "in_sync"
        started = await client.post("/backfill", json={}, headers=auth)
        assert started.status_code == 200, started.text
        job = started.json()["backfill"]
        assert (await client.get("/backfill")).json()["backfill"]["id"] == job["id"]
        assert (await client.get("/dlq", headers=auth)).json()["total"] == 0
        assert (await client.get("/docs")).status_code == 200
        assert "/index/reindex" in (await client.get("/openapi.json")).json()["paths"]


async def test_a_standby_replica_is_ready_and_reports_no_pipeline_series(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    holder_settings = make_settings(http_port=free_port(), http_host="127.0.0.1")
    standby_settings = make_settings(
        http_port=free_port(), http_host="127.0.0.1", milvus_uri=str(tmp_path / "standby.db")
    )
    keys = Keys(holder_settings.pipeline)
    async with service_process(holder_settings, tmp_path / "holder.log") as holder:
        await streaming(holder, redis_client, keys)
        async with (
            service_process(standby_settings, tmp_path / "standby.log") as standby,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{standby_settings.http_port}", timeout=30
            ) as client,
        ):

            async def standing_by() -> bool:
                standby.require_alive()
                try:
                    answer = await client.get("/readyz")
                except httpx.TransportError:
                    return False
                return answer.status_code == 200 and answer.json()["phase"] == "standby"

            await eventually(standing_by, within=CONVERGE_SECONDS, what="the standby ready")
            current = await scrape(client)
            assert value(current, "cdc_sidecar_lease_held") == 0
            assert "cdc_sidecar_lag_seconds" not in current
            assert "cdc_sidecar_events_captured_total" not in current
            # Without a configured token the admin API is refused, not open.
            refused = await client.post("/index/pause", json={})
            assert refused.status_code == 403
            assert "CDC_ADMIN_TOKEN" in refused.json()["error"]
