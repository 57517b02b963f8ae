"""deploy/grafana/cdc-sidecar.json, the Grafana dashboard, checked offline: its panels
and variables are well formed, every PromQL expression is one promtool accepts (the
template variables replaced by literal values), every cdc_sidecar_* series it reads is
one the service exports and every recording rule one rules.yml records, and the panels
deploy/README.md describes exist. Then the copies of it: the Kubernetes ConfigMap that
deploy/kubernetes/build_grafana_dashboard.py makes of it, and compose's provisioning.

The series the service exports are taken from the service itself: api/metrics.py's
registry is collected with every pipeline series present (a reading of the pipeline
with every counter of checkpoints/stats.py, a running backfill, a build), exactly what
GET /metrics would list. The README's table documents the same names but abbreviates
them (`_queued`, `_estimated`) and leaves out the `_total` and `_bucket` suffixes, so
parsing it would test the parser more than the dashboard.

Grafana's own dashboard schema is not checked: the npm package @grafana/schema (13.2.3)
ships TypeScript types, not a JSON Schema, so a check against it would need the
TypeScript compiler and hand-written glue. The schemaVersion below is that package's
current one (its defaultDashboard)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from api.metrics import Build, Metrics, PipelineReading
from checkpoints.keys import Keys
from checkpoints.stats import Stats
from tests.deploy.kit import (
    COMPOSE,
    DEPLOY,
    KUBERNETES,
    REPO,
    RULES,
    builder,
    documents,
    prometheus_tool,
    run,
    tool,
)

DASHBOARD = DEPLOY / "grafana" / "cdc-sidecar.json"
SCHEMA_VERSION = 42
DATASOURCE = "${datasource}"
VARIABLES = ("namespace", "job", "pipeline")
PREFIX = "cdc_sidecar_"
DOCS = (DEPLOY / "README.md", REPO / "docs" / "zh" / "deploy.md")

SUBSTITUTES = {
    "namespace": "default",
    "job": "cdc-sidecar",
    "pipeline": "default",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
}
"""What each template variable an expression may use stands for when promtool checks
it: the dashboard's three variables and Grafana's interval variables."""

PROMISED = {
    "Index lag": ["cdc_sidecar_lag_seconds"],
    "Capture lag and time since the last applied change": [
        "cdc_sidecar_checkpoint_timestamp_seconds"
    ],
    "Index tasks by event type and status": ["cdc_sidecar_index_tasks_total"],
    "Events captured, filtered and backfilled": ["cdc_sidecar_events_captured_total"],
    "Index latency quantiles by event type": ["cdc_sidecar_index_latency_seconds_bucket"],
    "Queue length by lane": ["cdc_sidecar_index_queue_length"],
    "Pending entries": ["cdc_sidecar_pending_entries"],
    "Dead-letter stream": ["cdc_sidecar_dead_letters"],
    "Dead-lettered per interval": ["cdc_sidecar_dead_lettered_total"],
    "Embeddings skipped vs computed": [
        "cdc_sidecar_embeddings_skipped_total",
        "cdc_sidecar_embeddings_computed_total",
        "cdc_sidecar_chunks_embedded_total",
    ],
    "Backfill progress": [
        "cdc_sidecar_backfill_documents_queued",
        "cdc_sidecar_backfill_documents_estimated",
    ],
    "Backfill and resync running": ["cdc_sidecar_backfill_running", "cdc_sidecar_resync_running"],
    "Lease holder per replica": ["cdc_sidecar_lease_held"],
    "Outages by dependency": ["cdc_sidecar_outage_active"],
    "Paused and backpressure": ["cdc_sidecar_paused", "cdc_sidecar_backpressure_active"],
    "Build info": ["cdc_sidecar_build_info"],
}
"""The panels the task and deploy/README.md promise, with the series each must read."""


# ---- reading the dashboard -------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in all_panels(board) if panel["type"] != "row"]


def variable(board: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in board["templating"]["list"] if v["name"] == name]
    (only,) = found
    return only


def _query_text(query: Any) -> str:
    return str(query["query"] if isinstance(query, dict) else query)


def expressions(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression, by a name telling where it is: the panels' targets,
    the annotations' queries, and the selectors of the variables' label_values()."""
    found: dict[str, str] = {}
    for panel in data_panels(board):
        for target in panel["targets"]:
            found[f"panel_{panel['id']}_{target['refId']}"] = target["expr"]
    for index, annotation in enumerate(board["annotations"]["list"]):
        if "expr" in annotation:
            found[f"annotation_{index}"] = annotation["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", _query_text(var["query"]))
            assert selector, f"variable {var['name']}: not label_values(<selector>, <label>)"
            found[f"variable_{var['name']}"] = selector.group(1)
    return found


def substitute(expr: str) -> str:
    """*expr* with the template variables replaced by literal values; KeyError names
    a variable that is neither the dashboard's nor Grafana's."""

    def value(match: re.Match[str]) -> str:
        return SUBSTITUTES[match.group(1) or match.group(2)]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# ---- promtool ---------------------------------------------------------------------


def promtool_errors(exprs: dict[str, str], directory: Path) -> str:
    """promtool check rules over one recording rule per expression: its complaints,
    empty when it accepts them all."""
    promtool = prometheus_tool("promtool")
    rules = [
        {"record": f"dashboard:{name}", "expr": substitute(expr)} for name, expr in exprs.items()
    ]
    path = directory / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(promtool, "check", "rules", path)
    if done.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in done.stdout:
        return ""
    return done.stdout + done.stderr or f"promtool exited {done.returncode}"


# ---- the names the service exports ------------------------------------------------


def _sample(annotation: str) -> Any:
    for kind, value in (("bool", True), ("float", 1.0), ("int", 1), ("dict", {})):
        if kind in str(annotation):
            return value
    raise AssertionError(f"no sample value for a field of type {annotation}")


def exported_series() -> set[str]:
    """The series names GET /metrics serves when every series is present: the lease
    holder's registry, during a backfill, after the model loaded."""
    metrics = Metrics("default")
    metrics.build = Build(version="0", model="model", fingerprint="0")
    metrics.lease_held = True
    backfill = {
        name: 1.0
        for name in (
            "backfill_running",
            "resync_running",
            "backfill_documents_scanned",
            "backfill_documents_queued",
            "backfill_documents_estimated",
        )
    }
    known = {
        "counters": {name: 1 for name in Stats.COUNTERS},
        "lanes": {lane: 1 for lane in Keys("default").lanes},
        "backfill": backfill,
    }
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(PipelineReading):
        if field.name in known:
            fields[field.name] = known[field.name]
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            fields[field.name] = _sample(str(field.type))
    metrics.reading = PipelineReading(**fields)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return {name for name in names if name.startswith(PREFIX)}


def recorded_series() -> set[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def unknown_names(exprs: dict[str, str], exported: set[str], recorded: set[str]) -> list[str]:
    """The cdc_sidecar series the expressions read that are neither exported nor
    recorded, as `where: name`. Quoted strings (label values) are left out first."""
    unknown = []
    for where, expr in exprs.items():
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
            if ":" in name and name not in recorded:
                unknown.append(f"{where}: {name} (not a record of rules.yml)")
            elif ":" not in name and name.startswith(PREFIX) and name not in exported:
                unknown.append(f"{where}: {name} (not exported by api/metrics.py)")
    return unknown


# ---- the dashboard ----------------------------------------------------------------


def test_the_dashboard_is_json_for_current_grafana_with_the_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert board["uid"] == "cdc-sidecar"
    assert board["title"]
    source = variable(board, "datasource")
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name in VARIABLES:
        var = variable(board, name)
        assert var["type"] == "query", name
        assert var["datasource"]["uid"] == DATASOURCE, name
        assert _query_text(var["query"]).startswith("label_values("), name
        assert var["definition"] == _query_text(var["query"]), name
        # "All" must match a missing label (compose's series have no namespace).
        assert var["includeAll"] and var["allValue"] == ".*", name
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"]["uid"] == DATASOURCE


def test_every_panel_has_a_unique_id_a_title_and_targets_on_the_datasource_variable() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in all_panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert all(isinstance(i, int) for i in ids)
    for panel in all_panels(board):
        assert panel.get("title"), panel["id"]
    for panel in data_panels(board):
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where
        assert panel["targets"], f"{where}: no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, where
            assert target["expr"].strip(), where
        assert panel.get("description"), f"{where}: say what it shows"


def test_the_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], int] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["id"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in taken, f"panels {taken.get((x, y))} and {panel['id']}"
                taken[(x, y)] = panel["id"]


def test_promtool_accepts_every_expression(tmp_path: Path) -> None:
    errors = promtool_errors(expressions(dashboard()), tmp_path)
    assert not errors, f"promtool check rules:\n{errors}"


def test_the_promtool_check_fails_on_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: an unclosed bracket, an unknown function."""
    broken = {
        "unclosed": "rate(cdc_sidecar_index_tasks_total[5m]",
        "function": "rates(cdc_sidecar_index_tasks_total[5m])",
    }
    for name, expr in broken.items():
        assert promtool_errors({name: expr}, tmp_path), name


def test_every_template_variable_is_known() -> None:
    for where, expr in expressions(dashboard()).items():
        try:
            substitute(expr)
        except KeyError as error:
            pytest.fail(f"{where}: unknown template variable ${error.args[0]}")


def test_every_series_selector_filters_by_namespace_job_and_pipeline() -> None:
    """So the variables apply to every panel, and with =~ as the variables are multi-value."""
    for where, expr in expressions(dashboard()).items():
        if where.startswith("variable_"):
            continue
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
            if PREFIX in name:
                assert re.search(rf"{re.escape(name)}\{{", expr), f"{where}: {name} has no selector"
        for matchers in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{([^}]*)\}", expr):
            for label in VARIABLES:
                assert f'{label}=~"${label}"' in matchers, f"{where}: {{{matchers}}} lacks {label}"


def test_every_series_is_one_the_service_exports_or_rules_yml_records() -> None:
    exported = exported_series()
    assert {"cdc_sidecar_lag_seconds", "cdc_sidecar_index_latency_seconds_bucket"} <= exported
    assert "cdc_sidecar_backfill_documents_estimated" in exported
    unknown = unknown_names(expressions(dashboard()), exported, recorded_series())
    assert not unknown, "\n".join(unknown)


def test_the_name_check_fails_on_an_unknown_series_and_an_unknown_record() -> None:
    exported, recorded = exported_series(), recorded_series()
    for expr in (
        'rate(cdc_sidecar_nope_total{pipeline=~"$pipeline"}[5m])',
        "cdc_sidecar_index_latency_seconds",  # a histogram has no bare series
        "pipeline:cdc_sidecar_nope:sum",
    ):
        assert unknown_names({"broken": expr}, exported, recorded), expr
    assert not unknown_names({"label": 'up{job="cdc_sidecar_x"}'}, exported, recorded)


def test_the_promised_panels_exist_and_read_their_series() -> None:
    panels = {panel["title"]: panel for panel in data_panels(dashboard())}
    missing = sorted(set(PROMISED) - set(panels))
    assert not missing, f"panels missing: {missing}"
    for title, names in PROMISED.items():
        text = " ".join(target["expr"] for target in panels[title]["targets"])
        for name in names:
            assert re.search(rf"\b{name}\b", text), f"{title!r} does not read {name}"
    quantiles = " ".join(
        t["expr"] for t in panels["Index latency quantiles by event type"]["targets"]
    )
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in quantiles
    assert "by (pipeline, event_type, le)" in quantiles
    capture = panels["Capture lag and time since the last applied change"]["targets"][0]["expr"]
    assert capture.startswith("time() - ")
    lease = panels["Lease holder per replica"]["targets"][0]["expr"]
    assert "instance" in lease


def test_the_docs_describe_every_row_and_variable() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "build_grafana_dashboard.py" in text, doc.name
        missing = [name for name in [*rows, *VARIABLES, "datasource"] if name not in text]
        assert not missing, f"{doc.name} does not mention {missing}"


# ---- the Kubernetes ConfigMap -------------------------------------------------------


def _builder() -> ModuleType:
    return builder("build_grafana_dashboard.py")


def test_the_committed_configmap_is_what_the_script_builds_from_the_json() -> None:
    builder = _builder()
    expected = builder.render(DASHBOARD.read_text(encoding="utf-8"))
    committed = builder.OUTPUT.read_text(encoding="utf-8")
    assert committed == expected, (
        "deploy/kubernetes/base/grafana-dashboard.yaml is stale: run "
        ".venv/bin/python deploy/kubernetes/build_grafana_dashboard.py"
    )


def test_the_configmap_holds_the_dashboard_for_grafanas_sidecar() -> None:
    """Independent of the script's text: the parsed dashboard is the file's."""
    builder = _builder()
    (configmap,) = documents(builder.OUTPUT)
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    assert json.loads(text) == dashboard()
    assert len(builder.OUTPUT.read_bytes()) < 256 * 1024, "kubectl apply's annotation limit"
    (kustomization,) = documents(KUBERNETES / "base" / "kustomization.yaml")
    assert builder.OUTPUT.name in kustomization["resources"]


def test_the_script_refuses_what_is_not_a_dashboard() -> None:
    builder = _builder()
    for text, message in (("{", "not JSON"), ('{"title": "x"}', "panels"), ("[]", "panels")):
        with pytest.raises(ValueError, match=message):
            builder.render(text)


def test_the_script_check_mode_passes_on_the_committed_files() -> None:
    done = run(tool("python"), KUBERNETES / "build_grafana_dashboard.py", "--check")
    assert done.returncode == 0, done.stderr


# ---- compose --------------------------------------------------------------------------


def test_compose_provisions_the_dashboard_and_the_stacks_prometheus() -> None:
    here = COMPOSE.parent
    (spec,) = documents(COMPOSE)
    services = spec["services"]
    grafana = services["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = (here / source).resolve() if source.startswith(".") else source
    assert mounts["/etc/grafana/dashboards/cdc-sidecar.json"] == DASHBOARD
    provisioning = {
        target.split("/")[-2]: path
        for target, path in mounts.items()
        if target.startswith("/etc/grafana/provisioning/")
    }
    (sources,) = documents(provisioning["datasources"])
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in services and "prometheus" in grafana["depends_on"]
    (providers,) = documents(provisioning["dashboards"])
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert f"{provider['options']['path']}/cdc-sidecar.json" in mounts
