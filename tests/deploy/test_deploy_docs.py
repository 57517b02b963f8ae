"""deploy/README.md and docs/zh/deploy.md name the packages the schemas come from, with
their versions: those must be the versions the repository installs."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.kit import DEPLOY, REPO

DOCS = [DEPLOY / "README.md", REPO / "docs" / "zh" / "deploy.md"]


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = dict(
        requirement.split("==")
        for requirement in project["project"]["optional-dependencies"]["dev"]
        if "==" in requirement
    )
    lock = json.loads((REPO / "tests/deploy/crd/package-lock.json").read_text(encoding="utf-8"))
    for path, package in lock["packages"].items():
        if path.startswith("node_modules/"):
            pins[path.removeprefix("node_modules/")] = package["version"]
    return pins


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_the_documented_package_versions_are_the_installed_ones(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    pins = _pins()
    named = re.findall(r"PyPI `([\w.-]+)==([\w.]+)`", text) + re.findall(
        r"npm `(@?[\w./-]+)@([\w.]+)`", text
    )
    assert len(named) >= 6, named
    for package, version in named:
        assert pins.get(package) == version, (
            f"{doc.name}: {package} {version}, installed {pins.get(package)}"
        )
