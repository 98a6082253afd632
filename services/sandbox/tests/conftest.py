"""Sandbox fixtures: a real Docker engine with the sandbox image, real bubblewrap, and
`backend`, which runs a test once on each.

Nothing here skips: a host without Docker or bubblewrap fails with what to install (.ci/run
installs both, starts the engine and builds the image).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vdo_kernel.settings import Settings
from vdo_sandbox.backend import Backend, SandboxUnavailableError
from vdo_sandbox.choose import bubblewrap_unavailable
from vdo_sandbox.docker_backend import DockerBackend, connect
from vdo_sandbox.image import ImageBuildError, build_image, image_exists

SANDBOX_IMAGE: str = Settings.model_fields["sandbox_image_python"].default
SETUP_HINT = "install docker.io and start dockerd (.ci/run does this)"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local Docker engine (closed at the end of the session)."""
    try:
        client = connect(timeout=120)
    except SandboxUnavailableError as error:
        pytest.fail(f"{error}; {SETUP_HINT}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The sandbox image's tag; built (a few minutes, once) when the engine lacks it."""
    if not image_exists(docker_client, SANDBOX_IMAGE):
        try:
            build_image(SANDBOX_IMAGE)
        except ImageBuildError as error:
            pytest.fail(f"could not build {SANDBOX_IMAGE}: {error}", pytrace=False)
    return SANDBOX_IMAGE


@pytest.fixture(scope="session")
def docker_backend(docker_client: Any, docker_image: str) -> DockerBackend:
    return DockerBackend(docker_image, client=docker_client)


@pytest.fixture(scope="session")
def bwrap_backend() -> Iterator[Backend]:
    problem = bubblewrap_unavailable()
    if problem:
        pytest.fail(f"{problem} (.ci/run installs it)", pytrace=False)
    from vdo_sandbox.bubblewrap import BubblewrapBackend

    try:
        backend = BubblewrapBackend()
    except SandboxUnavailableError as error:
        pytest.fail(f"bubblewrap cannot sandbox here: {error}", pytrace=False)
    yield backend
    close = getattr(backend, "close", None)
    if callable(close):
        close()


@pytest.fixture(params=["bubblewrap", "docker"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn: a test using this runs once on bubblewrap and once on Docker."""
    name = "bwrap_backend" if request.param == "bubblewrap" else "docker_backend"
    found: Backend = request.getfixturevalue(name)
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty directory to run in (the sandbox's /workspace)."""
    path = tmp_path / "workspace"
    path.mkdir()
    return path
