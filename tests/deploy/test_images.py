"""Every service's image builds from its Dockerfile, runs as a non-root user, starts its service's
module, and holds only that service's dependencies (the model SDKs in the AI phases alone).

No registry is reached: the base is built locally from the host's apt sources
(tests/deploy/baseimage.py) and given as PYTHON_IMAGE; the dependencies come from the package
index. The gateway's images take the dashboard built on the host (DASHBOARD=prebuilt), and one
more is built the default way, its Node stage building the dashboard itself on a Node base made
the same way (Debian's Node.js 18 and npm).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from tests.deploy.baseimage import ensure_base_image, ensure_node_image
from tests.deploy.layout import AI, REPO, SERVICES

pytestmark = pytest.mark.timeout(1500)
TAG = "vdo-deploy-test-{}:latest"
ENGINE_HINT = (
    "the Docker engine does not answer: start it (dockerd, or `systemctl start docker`; "
    "`bash .ci/run` starts it), or install it: apt-get install docker.io"
)
MODEL_SDKS = ("anthropic", "openai", "google.genai")
WEB = REPO / "web"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    try:
        engine = docker.from_env(timeout=900)
        engine.ping()
    except (docker.errors.DockerException, OSError) as error:
        pytest.fail(f"{ENGINE_HINT} ({error})")
    yield engine
    engine.close()


def _build(client: Any, dockerfile: str, tag: str, **args: str) -> None:
    target = args.pop("target", None)
    started = time.monotonic()
    log: list[str] = []
    for chunk in client.api.build(
        path=str(REPO),
        dockerfile=dockerfile,
        tag=tag,
        buildargs=args,
        target=target,
        rm=True,
        forcerm=True,
        network_mode="host",  # builds reach the package index even when the engine has no bridge
        decode=True,
    ):
        if "stream" in chunk:
            log.append(chunk["stream"])
        if "error" in chunk:
            tail = "".join(log[-30:])
            pytest.fail(f"building {tag} from {dockerfile} failed: {chunk['error']}\n{tail}")
    print(f"built {tag} in {time.monotonic() - started:.0f}s")


def _build_dashboard() -> None:
    """web/dist, as `make web` builds it (`make test` has, before the tests); built here with
    npm when it is missing."""
    if (WEB / "dist" / "index.html").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the dashboard is not built and npm is missing: apt-get install nodejs npm")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=600
        )
    subprocess.run([npm, "run", "build"], cwd=WEB, check=True, timeout=600)
    assert (WEB / "dist" / "index.html").is_file(), "npm run build made no web/dist/index.html"


@pytest.fixture(scope="module")
def images(client: Any) -> dict[str, str]:
    base = ensure_base_image(client)
    built: dict[str, str] = {}
    for service in SERVICES:
        tag = TAG.format(service)
        if service == "gateway":
            _build_dashboard()
            _build(
                client,
                "deploy/docker/gateway.Dockerfile",
                tag,
                PYTHON_IMAGE=base,
                NODE_IMAGE=base,
                DASHBOARD="prebuilt",
            )
        elif service == "sandbox":
            _build(client, "deploy/docker/sandbox.Dockerfile", tag, PYTHON_IMAGE=base)
        else:
            _build(
                client, "deploy/docker/service.Dockerfile", tag, PYTHON_IMAGE=base, SERVICE=service
            )
        built[service] = tag
    for service, tag in built.items():
        size = client.images.get(tag).attrs["Size"] / 1e6
        print(f"{service:<10} {size:6.0f} MB  {tag}")
    return built


def _run(client: Any, image: str, *command: str, **options: Any) -> str:
    output = client.containers.run(
        image, entrypoint=list(command), remove=True, network_mode="none", **options
    )
    return bytes(output).decode().strip()


PROBE = f"""
import importlib.util, json, os, sys
module = open("/opt/vdo/service-module").read().strip()
importlib.import_module(module.rsplit(".", 1)[0] if module.endswith(".relay") else module)
print(json.dumps({{
    "uid": os.getuid(),
    "module": module,
    "sdks": [
        m for m in {MODEL_SDKS!r}
        if importlib.util.find_spec(m.split(".")[0]) and importlib.util.find_spec(m)
    ],
    "writable_root": os.access("/", os.W_OK),
}}))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_its_service_as_non_root_with_only_its_dependencies(
    client: Any, images: dict[str, str], service: str
) -> None:
    image = client.images.get(images[service])
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Entrypoint"] == ["/opt/vdo/bin/vdo-service"]
    facts = json.loads(_run(client, images[service], "python", "-c", PROBE).splitlines()[-1])
    expected = "vdo_kernel.relay" if service == "relay" else f"vdo_{service}"
    assert facts["module"] == expected
    assert facts["uid"] == 10001
    assert facts["writable_root"] is False
    if service in AI:
        assert facts["sdks"] == list(MODEL_SDKS)
    else:
        assert facts["sdks"] == [], f"{service} holds model SDKs"
    # No compiler in a final image.
    assert _run(client, images[service], "sh", "-c", "command -v gcc cc || echo none") == "none"


def test_entrypoint_reads_settings_from_files(client: Any, images: dict[str, str]) -> None:
    # The service refuses to start without URLs, and says so: the entrypoint ran it.
    container = client.containers.run(
        images["relay"],
        environment={"VDO_DATABASE_URL_FILE": "/nonexistent"},
        network_mode="none",
        detach=True,
    )
    try:
        assert container.wait(timeout=60)["StatusCode"] == 2
        assert b"VDO_DATABASE_URL_FILE names /nonexistent" in container.logs()
    finally:
        container.remove(force=True)
    shown = _run(
        client,
        images["relay"],
        "sh",
        "-c",
        "echo secret-url > /tmp/url; export VDO_DATABASE_URL_FILE=/tmp/url; "
        "sed 's|^exec .*|env|' /opt/vdo/bin/vdo-service > /tmp/e; sh /tmp/e",
        tmpfs={"/tmp": ""},
    )
    assert "VDO_DATABASE_URL=secret-url" in shown
    assert "VDO_DATABASE_URL_FILE" not in shown


def test_sandbox_image_has_its_tools(client: Any, images: dict[str, str]) -> None:
    found = _run(
        client,
        images["sandbox"],
        "sh",
        "-c",
        "for tool in bwrap setpriv uv; do command -v $tool; done; /usr/bin/python3 --version",
    )
    assert found.splitlines() == [
        "/usr/bin/bwrap",
        "/usr/bin/setpriv",
        "/opt/vdo/bin/uv",
        found.splitlines()[-1],
    ]
    assert found.splitlines()[-1].startswith("Python 3.11")


def test_sandbox_runs_bubblewrap_with_the_compose_options(
    client: Any, images: dict[str, str]
) -> None:
    """The security options of deploy/compose.bubblewrap.yml are enough for bubblewrap (as the
    service checks at its start), and the defaults are not."""
    # (systempaths=unconfined exists in the docker command only, not in the engine's API.)
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        pytest.fail("the docker command is not installed: apt-get install docker.io")
    check = "from vdo_sandbox.choose import bubblewrap_unavailable as u; print(u() or 'works')"
    options = [
        "--security-opt=no-new-privileges:true",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--security-opt=systempaths=unconfined",
    ]

    def run(*extra: str) -> str:
        done = subprocess.run(
            [
                docker_cli,
                "run",
                "--rm",
                "--network=none",
                "--cap-drop=ALL",
                *extra,
                "--entrypoint=python",
                images["sandbox"],
                "-c",
                check,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return (done.stdout + done.stderr).strip()

    assert run(*options) == "works"
    assert run() != "works"


def test_gateway_image_serves_the_dashboard(client: Any, images: dict[str, str]) -> None:
    assert (WEB / "package.json").is_file(), "no web/ in this tree: the dashboard is missing"
    config = client.images.get(images["gateway"]).attrs["Config"]
    assert "VDO_DASHBOARD_DIR=/opt/vdo/dashboard" in config["Env"]
    assert _run(client, images["gateway"], "ls", "/opt/vdo/dashboard/index.html")


def test_gateway_image_builds_the_dashboard_in_its_node_stage(client: Any) -> None:
    """The default path (DASHBOARD=build): the Node stage installs web/'s packages from the lock
    and builds the dashboard against the schema of the gateway built beside it. Its base is a
    local stand-in for the Node image: Debian's Node.js 18 and npm (the oldest the dashboard
    supports)."""
    python = ensure_base_image(client)
    node = ensure_node_image(client)
    tag = TAG.format("gateway-node-stage")
    _build(
        client,
        "deploy/docker/gateway.Dockerfile",
        tag,
        PYTHON_IMAGE=python,
        NODE_IMAGE=node,
        DASHBOARD="build",
    )
    try:
        listing = _run(client, tag, "ls", "/opt/vdo/dashboard", "/opt/vdo/dashboard/assets")
        assert "index.html" in listing.split()
        assert any(name.endswith(".js") for name in listing.split()), listing
        page = _run(client, tag, "cat", "/opt/vdo/dashboard/index.html")
        assert '<div id="root">' in page, page[:500]
    finally:
        client.images.remove(tag, force=True)
