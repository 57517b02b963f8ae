"""The Kubernetes manifests in deploy/kubernetes/: every built-in resource is valid
against the Kubernetes API's own schemas (kubernetes-validate ships them, so this runs
offline), strictly (an unknown field fails, as `kubectl apply --validate=strict` would),
for the first release with native sidecar containers on by default and the newest the
package knows. Then what the schemas cannot see: the two kustomizations, the settings
against the service's own list, and the properties deploy/README.md promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar.settings import SECRETS, known_variables
from tests.deploy.kit import (
    KUBERNETES,
    documents,
    kustomizations,
    manifest_files,
    of_kind,
    pod_spec,
    resources,
    run,
    sidecar_containers,
    tool,
    workloads,
)

# 1.29: native sidecar containers (an init container with restartPolicy: Always) are
# on by default from here. The newest release whose schemas the package ships.
VERSIONS = ("1.29", "1.37")
OPERATOR_GROUP = "monitoring.coreos.com/"
"""Custom resources, validated by test_operator_resources.py instead."""


def _validate(resource: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} {where}: {error.message}")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "path", manifest_files(), ids=lambda path: str(path.relative_to(KUBERNETES))
)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no resource"
    for resource in docs:
        if str(resource.get("apiVersion", "")).startswith(OPERATOR_GROUP):
            continue
        _validate(resource, version)


def test_the_validator_rejects_an_unknown_field_and_a_wrong_type() -> None:
    """The check above can fail: a misspelt field and a string where a number goes."""
    (statefulset,) = of_kind("StatefulSet")
    misspelt = {**statefulset, "spec": {**statefulset["spec"], "replica": 3}}
    wrong_type = {**statefulset, "spec": {**statefulset["spec"], "replicas": "three"}}
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_custom_resources_are_the_prometheus_operator_kinds() -> None:
    """Any other kind fails above: kubernetes-validate has no schema for it
    (SchemaNotFoundError), which is an error, not a skip."""
    custom = [doc["kind"] for _, doc in resources() if doc["apiVersion"].startswith(OPERATOR_GROUP)]
    assert sorted(custom) == ["PrometheusRule", "ServiceMonitor"]


def test_kustomizations_list_every_manifest_and_only_existing_files() -> None:
    listed: set[Path] = set()
    for kustomization in kustomizations():
        (spec,) = documents(kustomization)
        assert spec["kind"] == "Kustomization"
        for entry in spec["resources"]:
            target = (kustomization.parent / entry).resolve()
            assert target.exists(), f"{kustomization}: {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{kustomization}: {entry}"
            else:
                listed.add(target)
    unlisted = [
        path for path in manifest_files() if path not in listed and ".example." not in path.name
    ]
    assert not unlisted, (
        f"not in any kustomization (name it *.example.yaml if on purpose): {unlisted}"
    )
    for pattern in ("native-sidecar", "deployment"):
        (spec,) = documents(KUBERNETES / pattern / "kustomization.yaml")
        assert "../base" in spec["resources"], pattern


@pytest.mark.parametrize(
    ("pattern", "workload"),
    [("native-sidecar", "StatefulSet/mongo"), ("deployment", "Deployment/cdc-sidecar")],
)
def test_each_pattern_builds_with_kustomize_into_valid_resources(
    pattern: str, workload: str
) -> None:
    """What `kubectl apply -k` would send, rendered by kubectl's own kustomize."""
    done = run(tool("kubectl"), "kustomize", KUBERNETES / pattern)
    assert done.returncode == 0, done.stderr
    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    names = {f"{doc['kind']}/{doc['metadata']['name']}" for doc in built}
    shared = {
        "ConfigMap/cdc-sidecar-config",
        "Service/cdc-sidecar",
        "ServiceMonitor/cdc-sidecar",
        "PrometheusRule/cdc-sidecar",
        "ConfigMap/cdc-sidecar-grafana-dashboard",
    }
    assert shared | {workload} <= names
    assert not any(doc["kind"] == "Secret" for doc in built), "the Secret is created by hand"
    for resource in built:
        if not resource["apiVersion"].startswith(OPERATOR_GROUP):
            for version in VERSIONS:
                _validate(resource, version)


def _settings() -> dict[str, Any]:
    """The sidecar's settings ConfigMap (base/ also holds the Grafana dashboard's)."""
    (configmap,) = [
        c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "cdc-sidecar-config"
    ]
    return configmap


def test_the_configmap_holds_only_settings_the_service_knows() -> None:
    """The service refuses an unknown CDC_* variable at start (exit 2): a typo here
    would crash-loop every pod."""
    configmap = _settings()
    unknown = sorted(set(configmap["data"]) - known_variables())
    assert not unknown, f"not settings (see sidecar/settings.py): {unknown}"
    assert all(isinstance(value, str) for value in configmap["data"].values())
    for workload in workloads():
        for container in sidecar_containers(workload):
            for variable in container.get("env", []):
                name = variable["name"]
                assert not name.startswith("CDC_") or name in known_variables(), name


def test_each_secret_setting_names_a_file_of_the_mounted_secret() -> None:
    configmap = _settings()
    files = {name: value for name, value in configmap["data"].items() if name.endswith("_FILE")}
    assert set(files) == {f"CDC_{field.upper()}_FILE" for field in SECRETS}
    for name in files:
        assert name.removesuffix("_FILE") not in configmap["data"], f"{name}: both forms set"
    secrets = {doc["metadata"]["name"]: doc for doc in of_kind("Secret")}
    for workload in workloads():
        spec = pod_spec(workload)
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        (container,) = sidecar_containers(workload)
        for name, path in files.items():
            mounts = [
                mount
                for mount in container["volumeMounts"]
                if path.startswith(mount["mountPath"].rstrip("/") + "/")
            ]
            assert len(mounts) == 1, f"{name}={path}: no mount in {workload['metadata']['name']}"
            (mount,) = mounts
            assert mount.get("readOnly") is True
            secret = volumes[mount["name"]]["secret"]
            key_path = path.removeprefix(mount["mountPath"].rstrip("/") + "/")
            (item,) = [item for item in secret["items"] if item["path"] == key_path]
            example = secrets[secret["secretName"]]
            assert item["key"] in example["stringData"], f"{item['key']} not in the example"


def _probe(container: dict[str, Any], kind: str) -> tuple[str, Any]:
    probe = container[kind]["httpGet"]
    return probe["path"], probe["port"]


def test_the_sidecar_containers_have_the_probes_resources_and_security_promised() -> None:
    found = workloads()
    assert {workload["kind"] for workload in found} == {"StatefulSet", "Deployment"}
    for workload in found:
        (container,) = sidecar_containers(workload)
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": 8000}, where
        assert container["envFrom"] == [{"configMapRef": {"name": "cdc-sidecar-config"}}]

        assert _probe(container, "startupProbe") == ("/healthz", "http"), where
        assert _probe(container, "livenessProbe") == ("/healthz", "http"), where
        assert _probe(container, "readinessProbe") == ("/readyz", "http"), where
        startup = container["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= 90, f"{where}: {budget} s is too little for the model load (~30 s)"

        assert container["resources"] == {
            "requests": {"cpu": "1", "memory": "1280Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }, where

        security = container["securityContext"]
        pod_security = pod_spec(workload).get("securityContext", {})
        assert (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")) is True
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"] == {"drop": ["ALL"]}, where

        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        for writable in ("/tmp", "/app/data"):
            assert "emptyDir" in volumes[mounts[writable]], f"{where}: {writable}"


def test_the_native_sidecar_pattern() -> None:
    (statefulset,) = of_kind("StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    (sidecar,) = sidecar_containers(statefulset)
    assert sidecar in pod_spec(statefulset)["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    (mongod,) = pod_spec(statefulset)["containers"]
    assert "--replSet" in mongod["args"]

    (headless,) = [
        service
        for service in of_kind("Service")
        if service["metadata"]["name"] == spec["serviceName"]
    ]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def test_the_deployment_pattern() -> None:
    (deployment,) = of_kind("Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = sidecar_containers(deployment)
    assert container in pod_spec(deployment)["containers"]


def test_the_metrics_service_and_the_servicemonitor_reach_every_sidecar() -> None:
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "cdc-sidecar"]
    selector = service["spec"]["selector"]
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 8000, 8000)

    (monitor,) = of_kind("ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
