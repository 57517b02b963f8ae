"""A real Prometheus scraping the real service process with the repository's rules
(deploy/prometheus/rules.yml): the series an operator's dashboards and alerts
read, as Prometheus stores them, and an alert that goes pending when the
service stops.

Prometheus is Debian's `prometheus` package (scripts/ensure_prometheus.sh
installs it; CI runs that script before the tests). It scrapes and evaluates
every second so that the test takes seconds; the rules' `for:` durations are
minutes, so an alert is checked up to `pending`, the state it reaches at the
first evaluation that matches."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from checkpoints.keys import Keys
from sidecar.settings import Settings
from tests.deploy.kit import prometheus_tool
from tests.e2e.e2e_harness import CONVERGE_SECONDS
from tests.e2e.service_process import PROJECT, service_process, streaming
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.model]

RULES = PROJECT / "deploy" / "prometheus" / "rules.yml"
JOB = "cdc-sidecar"
PROMETHEUS_START_SECONDS = 30.0
PROMETHEUS_STOP_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Prometheus:
    """One Prometheus server of this test, answering at :attr:`url`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def require_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    async def api(self, client: httpx.AsyncClient, path: str, **params: str) -> Any:
        """The `data` of a successful answer of Prometheus's HTTP API."""
        self.require_alive()
        answer = await client.get(f"{self.url}/api/v1/{path}", params=params)
        assert answer.status_code == 200, (path, params, answer.text)
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
        """The instant vector *expr* evaluates to now."""
        data = await self.api(client, "query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Start a Prometheus that scrapes one target (host:port) as job `cdc-sidecar`
    every second, with the repository's rules evaluated every second, its own
    data directory and a free port; it is stopped after the test."""
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        binary = prometheus_tool("prometheus")
        assert RULES.is_file(), f"{RULES} is missing"
        home = tmp_path / f"prometheus-{len(started)}"
        home.mkdir()
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        (home / "prometheus.yml").write_text(json.dumps(config, indent=2))
        port = free_port()
        log = home / "prometheus.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={home / 'prometheus.yml'}",
                    f"--storage.tsdb.path={home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(PROMETHEUS_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()


def metric_names_in_rules(rules: dict[str, Any]) -> set[str]:
    """The service's series the rules read: in their expressions and in the queries
    their annotations run (recording rules' own names, `level:metric:op`, excluded)."""
    names: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            texts = [rule["expr"], *rule.get("annotations", {}).values()]
            for text in texts:
                names |= set(re.findall(r"(?<![\w:])cdc_sidecar_\w+(?![\w:])", str(text)))
    return names


def when(rfc3339: str) -> float:
    """Unix time of a timestamp of Prometheus's API (nanoseconds are cut to micro)."""
    cut = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)
    return datetime.fromisoformat(cut).timestamp()


async def test_prometheus_scrapes_the_service_and_evaluates_the_rules(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    articles: Any,
    prometheus: Callable[[str], Prometheus],
    tmp_path: Path,
) -> None:
    rules = yaml.safe_load(RULES.read_text())
    port = free_port()
    target = f"127.0.0.1:{port}"
    settings = make_settings(http_port=port, http_host="127.0.0.1")
    pipeline = settings.pipeline
    selector = f'job="{JOB}", pipeline="{pipeline}"'
    await articles.insert_many(
        [{"_id": i, "title": f"t{i}", "body": f"body {i}"} for i in range(5)]
    )
    async with (
        service_process(settings, tmp_path / "service.log") as service,
        httpx.AsyncClient(timeout=10) as client,
    ):
        # Prometheus starts while the service loads its model.
        server = prometheus(target)

        async def prometheus_ready() -> bool:
            server.require_alive()
            try:
                return (await client.get(f"{server.url}/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(prometheus_ready, within=PROMETHEUS_START_SECONDS, what="prometheus")
        await streaming(service, redis_client, Keys(pipeline))

        # The lag as Prometheus stored it: one series of this pipeline, from the
        # target the test configured, a few seconds at most on a quiet stream.
        async def lag_scraped() -> list[dict[str, Any]]:
            service.require_alive()
            return await server.query(client, f"cdc_sidecar_lag_seconds{{{selector}}}")

        async def has_lag() -> bool:
            return bool(await lag_scraped())

        try:
            await eventually(has_lag, within=CONVERGE_SECONDS, what="the lag in prometheus")
        except pytest.fail.Exception:
            targets = (await server.api(client, "targets"))["activeTargets"]
            scrapes = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
            pytest.fail(f"no lag series of {pipeline} in prometheus; its scrapes: {scrapes}")
        [lag] = await lag_scraped()
        assert lag["metric"] == {
            "__name__": "cdc_sidecar_lag_seconds",
            "instance": target,
            "job": JOB,
            "pipeline": pipeline,
        }
        assert 0 <= float(lag["value"][1]) < 30, lag
        [age] = await server.query(
            client, f"time() - cdc_sidecar_checkpoint_timestamp_seconds{{{selector}}}"
        )
        assert -5 < float(age["value"][1]) < 30, age

        # A change written now is counted, as Prometheus sees the counters.
        await articles.insert_one({"_id": 99, "title": "new", "body": "written after start"})

        async def counted() -> bool:
            found = await server.query(
                client,
                f'cdc_sidecar_index_tasks_total{{{selector}, event_type="created", '
                f'status="success"}} >= 6',
            )
            return bool(found)

        await eventually(counted, within=CONVERGE_SECONDS, what="6 created documents counted")

        # Every series the rules read exists with this pipeline's labels: a metric
        # renamed in the service (or misspelt in the rules) fails here.
        needed = metric_names_in_rules(rules)
        assert {"cdc_sidecar_lag_seconds", "cdc_sidecar_lease_held"} <= needed, needed
        exported = {
            series["metric"]["__name__"]
            for series in await server.query(
                client, f'count by (__name__) ({{__name__=~"cdc_sidecar_.+", {selector}}})'
            )
        }
        missing = sorted(needed - exported)
        assert not missing, f"the rules read series the service does not export: {missing}"

        # Prometheus knows each metric's type and help from the scrape.
        metadata = await server.api(client, "metadata")
        kinds = {name: entries[0]["type"] for name, entries in metadata.items()}
        for name, kind in (
            ("cdc_sidecar_lag_seconds", "gauge"),
            ("cdc_sidecar_lease_held", "gauge"),
            ("cdc_sidecar_index_tasks_total", "counter"),
            ("cdc_sidecar_history_lost_total", "counter"),
            ("cdc_sidecar_dead_lettered_total", "counter"),
            ("cdc_sidecar_index_latency_seconds", "histogram"),
        ):
            assert kinds.get(name) == kind, (name, metadata.get(name))
            assert metadata[name][0]["help"], name

        # The recording rules run on the scraped series.
        async def recorded() -> bool:
            found = await server.query(client, f"pipeline:cdc_sidecar_lease_held:sum{{{selector}}}")
            return [float(series["value"][1]) for series in found] == [1.0]

        await eventually(recorded, within=CONVERGE_SECONDS, what="the recording rules evaluated")

        # Every rule of the file is loaded and evaluates without an error.
        [up] = await server.query(client, f'up{{job="{JOB}"}}')
        assert up["value"][1] == "1", up
        healthy_since = float(up["value"][0])
        expected = {
            group["name"]: [rule.get("alert") or rule["record"] for rule in group["rules"]]
            for group in rules["groups"]
        }

        async def rules_evaluated() -> dict[str, Any]:
            groups = (await server.api(client, "rules"))["groups"]
            return {group["name"]: group for group in groups}

        async def all_evaluated_after_a_healthy_scrape() -> bool:
            groups = await rules_evaluated()
            return set(groups) == set(expected) and all(
                when(group["lastEvaluation"]) > healthy_since
                and all(rule["health"] != "unknown" for rule in group["rules"])
                for group in groups.values()
            )

        await eventually(
            all_evaluated_after_a_healthy_scrape,
            within=CONVERGE_SECONDS,
            what="every rule group evaluated after a healthy scrape",
        )
        for name, group in (await rules_evaluated()).items():
            assert [rule["name"] for rule in group["rules"]] == expected[name]
            for rule in group["rules"]:
                assert rule["health"] == "ok", (name, rule["name"], rule.get("lastError"))
                assert not rule.get("lastError"), rule

        # A healthy service trips no alert, not even a pending one.
        assert (await server.api(client, "alerts"))["alerts"] == []

        # The service stops: the next scrape fails, its series go stale at once
        # and CdcSidecarDown is pending at the next evaluation.
        signalled_at = time.time()
        assert await service.signal_and_wait(signal.SIGTERM) == 0, service.log_tail()
        print(f"the service exited {time.time() - signalled_at:.2f} s after SIGTERM")

        async def down() -> bool:
            found = await server.query(client, f'up{{job="{JOB}"}} == 0')
            return [series["metric"]["instance"] for series in found] == [target]

        await eventually(down, within=CONVERGE_SECONDS, what='up{job="cdc-sidecar"} == 0')
        assert await server.query(client, f"cdc_sidecar_lag_seconds{{{selector}}}") == []

        async def pending_alerts() -> list[dict[str, Any]]:
            alerts: list[dict[str, Any]] = (await server.api(client, "alerts"))["alerts"]
            return alerts

        async def service_down_pending() -> bool:
            return any(
                alert["labels"]["alertname"] == "CdcSidecarDown" for alert in await pending_alerts()
            )

        await eventually(service_down_pending, within=CONVERGE_SECONDS, what="CdcSidecarDown")
        [alert] = await pending_alerts()
        assert alert["state"] == "pending", alert
        assert alert["labels"] == {
            "alertname": "CdcSidecarDown",
            "cause": "scrape_failing",
            "severity": "critical",
            "instance": target,
            "job": JOB,
        }
        assert when(alert["activeAt"]) >= signalled_at, (alert, signalled_at)
        assert target in alert["annotations"]["summary"], alert
        assert alert["annotations"]["runbook_url"].endswith("#service-down")
