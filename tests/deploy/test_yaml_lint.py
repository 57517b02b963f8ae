"""yamllint over every YAML file in deploy/, with the committed deploy/.yamllint.yaml,
in strict mode: a warning fails too."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.kit import DEPLOY, REPO, run, tool

CONFIG = DEPLOY / ".yamllint.yaml"


def test_deploy_passes_yamllint() -> None:
    done = run(
        tool("yamllint"), "--strict", "-f", "parsable", "-c", CONFIG, DEPLOY.relative_to(REPO)
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_fails_on_a_broken_file(tmp_path: Path) -> None:
    """The lint above can fail: a duplicated key and a yes that YAML 1.1 reads as true."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\na: 2\nenabled: yes\n", encoding="utf-8")
    done = run(tool("yamllint"), "--strict", "-f", "parsable", "-c", CONFIG, broken)
    assert done.returncode != 0
    assert "key-duplicates" in done.stdout
    assert "truthy" in done.stdout
