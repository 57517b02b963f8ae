"""What the tests of the deployment kit (deploy/) share: its paths, its YAML documents,
and the validators' command-line tools installed beside this interpreter."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
RULES = DEPLOY / "prometheus" / "rules.yml"

SIDECAR_IMAGE = "cdc-sidecar:"
"""The prefix of the sidecar's image in every manifest: how a test finds its container."""


def builder(script: str) -> ModuleType:
    """One of deploy/kubernetes's build scripts, loaded as a module (it imports the
    generated.py beside it, as it does when run)."""
    if str(KUBERNETES) not in sys.path:
        sys.path.insert(0, str(KUBERNETES))
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), KUBERNETES / script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prometheus_tool(name: str) -> str:
    """The path of *name* (promtool or prometheus) from Debian's prometheus package; the
    test fails, never skips, without it: scripts/test.sh installs it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `bash scripts/ensure_prometheus.sh` "
            "(scripts/test.sh does), which installs Debian's prometheus package",
            pytrace=False,
        )
    return found


def tool(name: str) -> Path:
    """A command installed into the virtualenv by a dev dependency (pyproject.toml)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: run bash scripts/setup.sh"
    return path


def run(*command: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of *path* (empty ones left out)."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/kubernetes/ (kustomizations aside)."""
    return sorted(
        path
        for path in KUBERNETES.rglob("*.yaml")
        if path.name != "kustomization.yaml" and "node_modules" not in path.parts
    )


def kustomizations() -> list[Path]:
    return sorted(KUBERNETES.rglob("kustomization.yaml"))


def resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in documents(path):
            yield path, doc


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in resources() if doc.get("kind") == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def sidecar_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers running the sidecar's image, init containers included."""
    spec = pod_spec(workload)
    every = [*spec.get("initContainers", []), *spec.get("containers", [])]
    return [c for c in every if str(c.get("image", "")).startswith(SIDECAR_IMAGE)]


def workloads() -> list[dict[str, Any]]:
    """The StatefulSet and the Deployment that run the sidecar."""
    found = [
        doc
        for _, doc in resources()
        if doc.get("kind") in ("StatefulSet", "Deployment") and sidecar_containers(doc)
    ]
    return found
