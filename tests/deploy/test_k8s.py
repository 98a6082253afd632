"""The Kubernetes manifests: valid YAML with the fields Kubernetes needs, selectors that match,
and every ConfigMap, Secret, claim, Deployment, stream and consumer they name exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.deploy.layout import (
    AI,
    K8S,
    PROVIDER_KEYS,
    SERVICES,
    load_all,
    load_yaml,
    unknown_settings,
)

from vdo_kernel.domain import Step
from vdo_kernel.subjects import STREAM, step_consumer

# Which service does which steps (each service's __main__).
STEPS = {
    "planner": [Step.PLAN],
    "builder": [Step.BUILD],
    "tester": [Step.WRITE_TESTS],
    "reviewer": [Step.REVIEW],
    "sandbox": [Step.RUN_TESTS, Step.SANDBOX_RUN],
}


def _kustomized(directory: Path) -> list[dict[str, Any]]:
    kustomization = load_yaml(directory / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.is_file(), f"{directory}/kustomization.yaml names {resource}, not there"
        docs += load_all(path)
    for doc in docs:
        doc["metadata"].setdefault("namespace", kustomization.get("namespace"))
    return docs


BASE = _kustomized(K8S / "base")
NATS = _kustomized(K8S / "nats")
EXTRA = load_all(K8S / "secrets.example.yaml") + load_all(K8S / "ingress" / "ingress.yaml")
ALL = BASE + NATS + EXTRA


def _of(kind: str, docs: list[dict[str, Any]] = ALL) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_document_has_the_basic_fields() -> None:
    for doc in ALL:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"]
    names = [(d["kind"], d["metadata"]["name"]) for d in ALL]
    assert len(names) == len(set(names)), "a kind and name appears twice"


def test_a_deployment_per_service() -> None:
    deployments = _of("Deployment")
    assert set(deployments) == set(SERVICES)
    images = {i["name"] for i in load_yaml(K8S / "base" / "kustomization.yaml")["images"]}
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == f"vdo-{name}"
        assert container["image"] in images
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"} == set(resources["limits"])
        assert "readinessProbe" in container, name
        assert "livenessProbe" in container, name
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert spec["template"]["spec"]["automountServiceAccountToken"] is False


def test_probes() -> None:
    for name, deployment in _of("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if name == "gateway":
            assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
            assert container["livenessProbe"]["httpGet"]["path"] == "/api/health"
        else:
            assert container["readinessProbe"]["exec"]["command"][-1] == "ready"
            # A NATS outage must never restart every service: liveness is not `ready`.
            assert container["livenessProbe"]["exec"]["command"][-1] == "alive"


def test_references_resolve() -> None:
    configmaps, secrets, claims = _of("ConfigMap"), _of("Secret"), _of("PersistentVolumeClaim")
    for name, deployment in _of("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in _of("ServiceAccount")
        volumes = {v["name"]: v for v in pod["volumes"]}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        (container,) = pod["containers"]
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, f"{name}: no volume {mount['name']}"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps
        variables = [e["name"] for e in container["env"]]
        for entry in container["env"]:
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in secrets, f"{name}: no Secret {ref['name']}"
                assert ref["key"] in secrets[ref["name"]]["stringData"]
        variables += list(configmaps["vdo-config"]["data"])
        assert unknown_settings(variables) == [], name
    service = _of("Service")["gateway"]
    gateway = _of("Deployment")["gateway"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= gateway["metadata"]["labels"].items()
    port_names = {p["name"] for p in gateway["spec"]["containers"][0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    backend = _of("Ingress")["gateway"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == "gateway"


def test_model_keys_reach_the_ai_services_only() -> None:
    for name, deployment in _of("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        given = {e["name"] for e in container["env"]}
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert (given >= set(PROVIDER_KEYS)) == (name in AI), name
        assert ("vdo-providers" in refs) == (name in AI), name
        assert ("vdo-admin" in refs) == (name == "gateway"), name


def test_each_phase_scales_on_its_consumers_lag() -> None:
    scaled = _of("ScaledObject")
    assert set(scaled) == set(STEPS)
    nats_service = _of("Service", NATS)["nats"]
    for name, steps in STEPS.items():
        spec = scaled[name]["spec"]
        target = spec["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert target["name"] in _of("Deployment")
        assert spec["minReplicaCount"] >= 1
        consumers = []
        for trigger in spec["triggers"]:
            assert trigger["type"] == "nats-jetstream"
            metadata = trigger["metadata"]
            assert metadata["stream"] == STREAM
            assert metadata["account"] == "$G"
            assert int(metadata["lagThreshold"]) > 0
            host, port = metadata["natsServerMonitoringEndpoint"].rsplit(":", 1)
            assert host.split(".")[:2] == ["nats", nats_service["metadata"]["namespace"]]
            assert int(port) in {p["port"] for p in nats_service["spec"]["ports"]}
            consumers.append(metadata["consumer"])
        assert consumers == [step_consumer(step) for step in steps]
    for name in set(SERVICES) - set(STEPS):
        # The relay and the scheduler lead one at a time; the projector takes turns.
        assert name not in scaled


def test_nats_cluster_is_three_nodes_with_sync_always() -> None:
    statefulset = _of("StatefulSet")["nats"]
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["serviceName"] == "nats"
    config = _of("ConfigMap", NATS)["nats-config"]["data"]["nats.conf"]
    assert "sync_interval: always" in config
    routes = [line.strip() for line in config.splitlines() if "nats-route://" in line]
    assert routes == [f"nats-route://nats-{i}.nats.vdo.svc.cluster.local:6222" for i in range(3)]
    base_config = _of("ConfigMap")["vdo-config"]["data"]
    assert base_config["VDO_STREAM_REPLICAS"] == "3"
    assert base_config["VDO_NATS_URL"].split(",") == [
        f"nats://nats-{i}.nats:4222" for i in range(3)
    ]


def _selects(
    wanted: dict[str, str], expressions: list[dict[str, Any]], labels: dict[str, str]
) -> bool:
    if not wanted.items() <= labels.items():
        return False
    return all(labels.get(e["key"]) in e["values"] for e in expressions)


def test_network_policies_select_pods_that_exist() -> None:
    pod_labels = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in ALL
        if d["kind"] in {"Deployment", "StatefulSet"}
    ]
    for name, policy in _of("NetworkPolicy").items():
        selector = policy["spec"]["podSelector"]
        wanted = selector.get("matchLabels", {})
        expressions = selector.get("matchExpressions", [])

        assert any(_selects(wanted, expressions, labels) for labels in pod_labels), (
            f"{name} selects no pod"
        )


@pytest.mark.parametrize("name", ["sandbox"])
def test_sandbox_runs_bubblewrap_without_a_container_runtime(name: str) -> None:
    pod = _of("Deployment")[name]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "VDO_SANDBOX_BACKEND", "value": "bubblewrap"} in container["env"]
    assert pod["hostUsers"] is False
    assert container["securityContext"]["procMount"] == "Unmasked"
    assert not any("hostPath" in v for v in pod["volumes"])
    for other, deployment in _of("Deployment").items():
        if other != name:
            spec = deployment["spec"]["template"]["spec"]
            assert "hostUsers" not in spec
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
