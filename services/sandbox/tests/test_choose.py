"""Choosing the sandbox backend: Docker when it can, bubblewrap otherwise, never nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vdo_kernel.settings import Settings
from vdo_sandbox.backend import MIB, Backend, Limits, SandboxUnavailableError
from vdo_sandbox.choose import choose, choose_backend, limits_from_settings
from vdo_sandbox.docker_backend import DockerBackend

NO_ENGINE = "unix:///nonexistent/docker.sock"


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path / "home", **values)


@pytest.fixture
def chosen() -> Iterator[list[Backend]]:
    """Backends a test chose, closed after it."""
    made: list[Backend] = []
    yield made
    for backend in made:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


def test_auto_prefers_docker_when_the_engine_answers(
    docker_image: str, tmp_path: Path, chosen: list[Backend]
) -> None:
    choice = choose(settings(tmp_path, sandbox_image_python=docker_image))
    chosen.append(choice.backend)
    assert isinstance(choice.backend, DockerBackend)
    assert choice.backend.name == "docker"
    assert choice.backend.image == docker_image
    assert "auto" in choice.reason


def test_choose_backend_logs_its_choice(
    docker_image: str,
    tmp_path: Path,
    chosen: list[Backend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="vdo_sandbox.choose")
    backend = choose_backend(settings(tmp_path, sandbox_image_python=docker_image))
    chosen.append(backend)
    assert backend.name == "docker"
    assert "sandbox backend: docker (engine" in caplog.text


def test_bubblewrap_when_forced(docker_image: str, tmp_path: Path, chosen: list[Backend]) -> None:
    choice = choose(settings(tmp_path, sandbox_backend="bubblewrap"))
    chosen.append(choice.backend)
    assert choice.backend.name == "bubblewrap"
    assert choice.reason == "requested"


def test_auto_falls_back_to_bubblewrap_without_an_image(
    docker_client: Any, tmp_path: Path, chosen: list[Backend]
) -> None:
    choice = choose(settings(tmp_path, sandbox_image_python="vdo-sandbox-missing:nope"))
    chosen.append(choice.backend)
    assert choice.backend.name == "bubblewrap"
    assert "vdo sandbox build-image" in choice.reason


def test_auto_falls_back_to_bubblewrap_without_an_engine(
    tmp_path: Path, chosen: list[Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    choice = choose(settings(tmp_path))
    chosen.append(choice.backend)
    assert choice.backend.name == "bubblewrap"
    assert "does not answer" in choice.reason


def test_docker_forced_with_a_missing_image_is_a_clear_error(
    docker_client: Any, tmp_path: Path
) -> None:
    with pytest.raises(SandboxUnavailableError, match="vdo sandbox build-image") as caught:
        choose(
            settings(tmp_path, sandbox_backend="docker", sandbox_image_python="vdo-missing:nope")
        )
    assert "vdo-missing:nope" in str(caught.value)


def test_docker_forced_without_an_engine_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    with pytest.raises(SandboxUnavailableError, match="start it") as caught:
        choose(settings(tmp_path, sandbox_backend="docker"))
    assert "apt-get install docker.io" in str(caught.value)


def test_nothing_to_sandbox_with_is_an_error_never_an_unsandboxed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailableError) as caught:
        choose(settings(tmp_path))
    message = str(caught.value)
    assert "docker.io" in message
    assert "bubblewrap" in message
    assert "never run unsandboxed" in message


def test_limits_from_settings(tmp_path: Path) -> None:
    limits = limits_from_settings(
        settings(
            tmp_path,
            sandbox_cpus=1.5,
            sandbox_memory_mib=256,
            sandbox_pids=64,
            sandbox_workspace_mib=100,
            sandbox_tmpfs_mib=32,
            sandbox_wall_seconds=90,
            sandbox_output_mib=0.5,
        )
    )
    assert limits == Limits(
        cpus=1.5,
        memory_bytes=256 * MIB,
        pids=64,
        workspace_bytes=100 * MIB,
        tmpfs_bytes=32 * MIB,
        wall_seconds=90,
        output_bytes=MIB // 2,
        network=False,
    )
    assert limits_from_settings(settings(tmp_path)) == Limits()
