"""The compose files: they parse, and every service, image, volume, secret, network, setting and
module they name exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.deploy.layout import (
    AI,
    DEPLOY,
    PROVIDER_KEYS,
    REPO,
    SERVICES,
    interpolated,
    known_settings,
    load_yaml,
    unknown_settings,
)

COMPOSE = DEPLOY / "compose.yml"
CLOUD = DEPLOY / "compose.cloud.yml"
BUBBLEWRAP = DEPLOY / "compose.bubblewrap.yml"


def _services(path: Path) -> dict[str, dict[str, Any]]:
    services = load_yaml(path)["services"]
    assert isinstance(services, dict)
    return services


@pytest.mark.parametrize("path", [COMPOSE, CLOUD], ids=["local", "cloud"])
def test_every_service_is_there_with_its_image(path: Path) -> None:
    services = _services(path)
    assert set(SERVICES) <= set(services), f"missing: {set(SERVICES) - set(services)}"
    for name in SERVICES:
        service = services[name]
        build = service["build"]
        assert (REPO / build["dockerfile"]).is_file(), build["dockerfile"]
        assert (path.parent / build["context"]).resolve() == REPO
        dockerfile = Path(build["dockerfile"]).name
        if dockerfile == "service.Dockerfile":
            assert build["args"]["SERVICE"] == name
        else:
            assert dockerfile == f"{name}.Dockerfile"
        assert f"-{name}:" in service["image"]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["healthcheck"]["test"][:3] == ["CMD", "python", "/opt/vdo/probe.py"]


def test_local_stack_has_nats_with_jetstream_and_postgres() -> None:
    services = _services(COMPOSE)
    nats = services["nats"]
    config = nats["volumes"][0].split(":")[0]
    text = (DEPLOY / config).read_text()
    assert "sync_interval: always" in text
    assert "jetstream" in text
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "healthcheck" in services["postgres"]
    for name in SERVICES:
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert conditions["nats"] == "service_healthy"
        assert conditions["postgres"] == "service_healthy"
        assert conditions["data-dir"] == "service_completed_successfully"


def test_cloud_stack_runs_no_database_or_message_server() -> None:
    services = _services(CLOUD)
    assert set(services) == set(SERVICES)
    for service in services.values():
        env = service["environment"]
        assert env["VDO_NATS_URL"].startswith("${VDO_NATS_URL:?")
        assert env["VDO_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert "depends_on" not in service


@pytest.mark.parametrize("path", [COMPOSE, CLOUD, BUBBLEWRAP], ids=["local", "cloud", "bwrap"])
def test_references_resolve(path: Path) -> None:
    document = load_yaml(path)
    base = document if path != BUBBLEWRAP else load_yaml(COMPOSE)
    services = {**base["services"], **document["services"]}
    volumes = set(base.get("volumes") or {})
    secrets = set(base.get("secrets") or {})
    networks = set(base.get("networks") or {})
    for name, service in document["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for network in service.get("networks", []):
            assert network in networks, f"{name}: unknown network {network}"
        for secret in service.get("secrets", []):
            assert secret in secrets, f"{name}: unknown secret {secret}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(("./", "/", "${")):
                if source.startswith("./"):
                    assert (path.parent / source).exists(), f"{name}: no {source}"
                continue
            assert source in volumes, f"{name}: unknown volume {source}"
    for secret in (document.get("secrets") or {}).values():
        assert not Path(secret["file"]).is_absolute()


@pytest.mark.parametrize("path", [COMPOSE, CLOUD, BUBBLEWRAP], ids=["local", "cloud", "bwrap"])
def test_settings_named_exist(path: Path) -> None:
    document = load_yaml(path)
    variables: list[str] = []
    for service in document["services"].values():
        variables += list((service.get("environment") or {}).keys())
    # (The compose files' own variables, ${VDO_DATA_DIR} say, are not settings: only what
    # reaches a service's environment is.)
    assert unknown_settings(variables) == []


@pytest.mark.parametrize("path", [COMPOSE, CLOUD], ids=["local", "cloud"])
def test_model_keys_reach_the_ai_services_only(path: Path) -> None:
    for name, service in _services(path).items():
        env_files = [e["path"] for e in service.get("env_file", [])]
        environment = service.get("environment") or {}
        if name in AI:
            assert env_files == ["providers.env"]
        else:
            assert env_files == [], f"{name} gets the providers' keys"
        assert not set(environment) & set(PROVIDER_KEYS)
    example = (DEPLOY / "providers.env.example").read_text()
    assert all(key in example for key in PROVIDER_KEYS)


@pytest.mark.parametrize("path", [COMPOSE, CLOUD], ids=["local", "cloud"])
def test_only_the_sandbox_has_the_container_runtime(path: Path) -> None:
    for name, service in _services(path).items():
        mounts = " ".join(service.get("volumes", []))
        assert ("docker.sock" in mounts) == (name == "sandbox"), name
        # The data directory is at the same path inside as outside (the engine mounts
        # workspaces by their host path).
        if name in SERVICES:
            data = "${VDO_DATA_DIR:-/var/lib/vdo}"
            assert f"{data}:{data}" in service["volumes"]
            assert service["environment"]["VDO_HOME"] == data


def test_gateway_publishes_its_port_and_gets_the_admin_token() -> None:
    gateway = _services(COMPOSE)["gateway"]
    assert gateway["ports"] == ["${VDO_PUBLISH:-127.0.0.1:8000}:8000"]
    assert gateway["environment"]["VDO_PORT"] == "8000"
    assert gateway["environment"]["VDO_ADMIN_TOKEN_FILE"] == "/run/secrets/admin_token"
    assert gateway["healthcheck"]["test"][-1] == "http"
    for name, service in _services(COMPOSE).items():
        if name != "gateway":
            assert "ports" not in service, name
            assert "VDO_ADMIN_TOKEN_FILE" not in (service.get("environment") or {})


def test_bubblewrap_variant_drops_the_socket() -> None:
    sandbox = load_yaml(BUBBLEWRAP)["services"]["sandbox"]
    assert sandbox["environment"]["VDO_SANDBOX_BACKEND"] == "bubblewrap"
    assert not any("docker.sock" in v for v in sandbox["volumes"])
    assert set(sandbox["security_opt"]) == {
        "no-new-privileges:true",
        "seccomp=unconfined",
        "apparmor=unconfined",
        "systempaths=unconfined",
    }


def test_ignored_secrets_and_examples() -> None:
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {".env", "providers.env", "secrets/"} <= set(ignored)
    example = (DEPLOY / "env.example").read_text()
    for name in interpolated(COMPOSE.read_text()):
        assert f"{name}=" in example, f"{name} is not in deploy/env.example"


def test_no_setting_is_named_like_a_secret_file() -> None:
    # The images' entrypoint reads NAME from the file NAME_FILE names: a setting whose own name
    # ends in _FILE would be taken for one and never reach its service.
    assert [name for name in known_settings() if name.endswith("_FILE")] == []
