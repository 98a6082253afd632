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

from vdo_sandbox.backend import Backend, SandboxUnavailableError
from vdo_sandbox.choose import bubblewrap_unavailable
from vdo_sandbox.docker_backend import DockerBackend


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
