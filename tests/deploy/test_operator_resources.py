"""The Prometheus Operator's resources in deploy/kubernetes/ (the ServiceMonitor, the
PrometheusRule), validated offline against the schemas of the npm package
@kubernetes-models/prometheus-operator, generated from the operator's Go API types
(monitoring.coreos.com/v1, the types its CRDs are generated from). The package is
installed by scripts/ensure_crd_validators.sh, pinned by tests/deploy/crd/package-lock.json.

Those schemas check types, required fields, enums and patterns (a Duration such as
`for: 5m`, a port name), not unknown fields: the test adds that check for the fields
this kit uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kit import REPO, resources, run

VALIDATOR = REPO / "tests" / "deploy" / "crd" / "validate.mjs"
INSTALLED = VALIDATOR.parent / "node_modules" / "@kubernetes-models" / "prometheus-operator"
OPERATOR_GROUP = "monitoring.coreos.com/"


def _verdicts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is missing: Node.js 20+ validates the Prometheus Operator resources"
    assert INSTALLED.is_dir(), "run bash scripts/ensure_crd_validators.sh (scripts/test.sh does)"
    done = run(node, VALIDATOR, stdin=json.dumps(docs))
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(verdicts) == len(docs), done.stdout
    return verdicts


def _operator_resources() -> list[tuple[Path, dict[str, Any]]]:
    found = [(p, d) for p, d in resources() if d["apiVersion"].startswith(OPERATOR_GROUP)]
    assert found, "no Prometheus Operator resource under deploy/kubernetes/"
    return found


def test_operator_resources_are_valid_against_their_schemas() -> None:
    found = _operator_resources()
    verdicts = _verdicts([doc for _, doc in found])
    failures = [
        f"{path.relative_to(REPO)}: {verdict['kind']}/{verdict['name']}: {verdict['error']}"
        for (path, _), verdict in zip(found, verdicts, strict=True)
        if verdict["error"]
    ]
    assert not failures, "\n".join(failures)


def test_the_validator_rejects_broken_resources() -> None:
    """The check above can fail: a port that is not a name, a duration that is not one,
    a rule without its expression."""
    docs = {doc["kind"]: doc for _, doc in _operator_resources()}
    monitor = json.loads(json.dumps(docs["ServiceMonitor"]))
    monitor["spec"]["endpoints"][0]["port"] = 8000
    interval = json.loads(json.dumps(docs["ServiceMonitor"]))
    interval["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    rule = json.loads(json.dumps(docs["PrometheusRule"]))
    del rule["spec"]["groups"][-1]["rules"][0]["expr"]
    verdicts = _verdicts([monitor, interval, rule])
    assert all(verdict["error"] for verdict in verdicts), verdicts


def test_an_unknown_kind_is_not_passed_silently() -> None:
    done = run(
        shutil.which("node") or "node",
        VALIDATOR,
        stdin=json.dumps([{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitr"}]),
    )
    assert done.returncode == 2
    assert "no schema" in done.stdout


# The fields each kind may use here, from the operator's API reference: the schemas
# above let an unknown (misspelt) field through, which the operator would prune.
_SERVICEMONITOR_SPEC = {"selector", "endpoints", "namespaceSelector", "jobLabel"}
_ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
_RULE_GROUP = {"name", "interval", "rules", "limit", "query_offset", "labels"}
_RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_no_unknown_field(kind: str) -> None:
    for path, doc in _operator_resources():
        if doc["kind"] != kind:
            continue
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, path
        if kind == "ServiceMonitor":
            assert set(doc["spec"]) <= _SERVICEMONITOR_SPEC, path
            for endpoint in doc["spec"]["endpoints"]:
                assert set(endpoint) <= _ENDPOINT, path
        else:
            assert set(doc["spec"]) == {"groups"}, path
            for group in doc["spec"]["groups"]:
                assert set(group) <= _RULE_GROUP, f"{path}: group {group.get('name')}"
                for rule in group["rules"]:
                    assert set(rule) <= _RULE, f"{path}: {rule}"
