"""deploy/kubernetes/base/prometheusrule.yaml is generated from deploy/prometheus/rules.yml
by deploy/kubernetes/build_prometheusrule.py: the committed file must be exactly what
the script makes of the committed rules, so the two never drift apart."""

from __future__ import annotations

from types import ModuleType

import pytest
import yaml

from tests.deploy.kit import KUBERNETES, RULES, builder, run, tool


def _builder() -> ModuleType:
    return builder("build_prometheusrule.py")


def test_the_committed_prometheusrule_is_what_the_script_builds_from_rules_yml() -> None:
    builder = _builder()
    expected = builder.render(RULES.read_text(encoding="utf-8"))
    committed = builder.OUTPUT.read_text(encoding="utf-8")
    assert committed == expected, (
        "deploy/kubernetes/base/prometheusrule.yaml is stale: run "
        ".venv/bin/python deploy/kubernetes/build_prometheusrule.py"
    )


def test_the_prometheusrule_holds_the_groups_of_rules_yml_unchanged() -> None:
    """Independent of the script's text: the parsed groups are equal."""
    builder = _builder()
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    resource = yaml.safe_load(builder.OUTPUT.read_text(encoding="utf-8"))
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == rules["groups"]


def test_the_script_refuses_a_file_without_groups() -> None:
    with pytest.raises(ValueError, match="groups"):
        _builder().render("rule_files: []\n")


def test_the_script_check_mode_passes_on_the_committed_files() -> None:
    done = run(tool("python"), KUBERNETES / "build_prometheusrule.py", "--check")
    assert done.returncode == 0, done.stderr
