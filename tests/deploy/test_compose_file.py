"""deploy/compose/compose.yaml, validated offline against the Compose specification's
JSON schema (the copy check-jsonschema ships, `--builtin-schema vendor.compose-spec`),
then what the schema cannot see: names that must refer to something (services, secrets,
volumes, files), the settings against the service's own list, and the Prometheus
configuration that compose mounts, checked by promtool with the rules beside it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from sidecar.settings import SECRETS, known_variables
from tests.deploy.kit import COMPOSE, DEPLOY, documents, prometheus_tool, run, tool

HERE = COMPOSE.parent


def _compose() -> dict[str, Any]:
    (spec,) = documents(COMPOSE)
    return spec


def _check_schema(path: Path) -> Any:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    done = _check_schema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    """The check above can fail: a misspelt service key, a depends_on condition that
    does not exist."""
    for breakage in ("misspelt", "condition"):
        spec = _compose()
        if breakage == "misspelt":
            spec["services"]["redis"]["comand"] = spec["services"]["redis"].pop("command")
        else:
            spec["services"]["cdc-sidecar"]["depends_on"]["redis"]["condition"] = "service_up"
        broken = tmp_path / f"{breakage}.yaml"
        broken.write_text(yaml.safe_dump(spec), encoding="utf-8")
        done = _check_schema(broken)
        assert done.returncode != 0, breakage


def test_every_reference_names_something_that_exists() -> None:
    spec = _compose()
    services = spec["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on {dependency}"
        for secret in service.get("secrets", []):
            assert secret in spec["secrets"], f"{name}: secret {secret}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (HERE / source).exists(), f"{name}: {source}"
            else:
                assert source in spec["volumes"], f"{name}: volume {source}"
        build = service.get("build")
        if build:
            context = (HERE / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build}"
    for name, secret in spec["secrets"].items():
        assert "file" in secret or "environment" in secret, name
        if "file" in secret:
            assert (HERE / secret["file"]).is_file(), f"secret {name}: {secret['file']}"


def test_the_sidecar_gets_known_settings_and_its_credentials_as_files() -> None:
    spec = _compose()
    sidecar = spec["services"]["cdc-sidecar"]
    environment = sidecar["environment"]
    unknown = sorted(name for name in environment if name not in known_variables())
    assert not unknown, f"not settings (see sidecar/settings.py): {unknown}"
    for field in SECRETS:
        path = environment[f"CDC_{field.upper()}_FILE"]
        assert f"CDC_{field.upper()}" not in environment
        assert path.startswith("/run/secrets/")
        assert path.removeprefix("/run/secrets/") in sidecar["secrets"]
    assert sidecar["build"]["dockerfile"] == "deploy/Dockerfile"
    assert sidecar["read_only"] is True
    assert sidecar["cap_drop"] == ["ALL"]


def test_the_stack_is_a_replica_set_with_redis_aof_milvus_and_prometheus() -> None:
    services = _compose()["services"]
    assert "--replSet" in services["mongo"]["command"]
    init = services["mongo-init"]
    assert init["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert "rs.initiate" in init["command"][-1]
    assert services["cdc-sidecar"]["depends_on"]["mongo-init"] == {
        "condition": "service_completed_successfully"
    }
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]
    assert {"etcd", "minio"} <= set(services["milvus"]["depends_on"])
    mounts = services["prometheus"]["volumes"]
    assert "../prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts


def test_the_prometheus_configuration_loads_the_rules_and_scrapes_the_sidecar(
    tmp_path: Path,
) -> None:
    """promtool (Debian's prometheus package, scripts/ensure_prometheus.sh) checks the
    configuration and the rules file it loads, laid out as compose mounts them."""
    promtool = prometheus_tool("promtool")
    shutil.copy(HERE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    done = run(promtool, "check", "config", tmp_path / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout
    (config,) = documents(HERE / "prometheus.yml")
    (job,) = config["scrape_configs"]
    # deploy/prometheus/rules.yml expects this job name.
    assert job["job_name"] == "cdc-sidecar"
    assert job["static_configs"] == [{"targets": ["cdc-sidecar:8000"]}]
