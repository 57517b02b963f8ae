"""The Prometheus rules in deploy/prometheus: promtool accepts them and their unit
tests pass, and every alert is tested, carries a severity and the annotations an
on-call engineer needs, and is documented in English and Chinese."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kit import prometheus_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
TESTS = ROOT / "deploy" / "prometheus" / "tests.yml"
DOCS = (ROOT / "deploy" / "prometheus" / "README.md", ROOT / "docs" / "zh" / "alerts.md")
RUNBOOK = "https://github.com/example/cdc-sidecar/blob/main/README.md#"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (not skip) when it is missing: scripts/test.sh installs it."""
    return subprocess.run(
        [prometheus_tool("promtool"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    if result.returncode != 0:
        pytest.fail(f"promtool check rules failed:\n{result.stdout}{result.stderr}", pytrace=False)


def test_the_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(TESTS.relative_to(ROOT)))
    if result.returncode != 0:
        pytest.fail(f"promtool test rules failed:\n{result.stdout}{result.stderr}", pytrace=False)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts no test expects to fire"
    assert names - silent == set(), "alerts no test expects to stay silent"


def test_every_alert_has_a_severity_and_the_on_call_annotations() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), rule["alert"]
        assert annotations["runbook_url"].startswith(RUNBOOK), rule["alert"]


def test_every_alert_is_documented_in_english_and_chinese() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert {name for name in names if name not in text} == set(), doc.name
