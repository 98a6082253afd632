"""Which sandbox backend runs generated code on this host, and with which limits.

`VDO_SANDBOX_BACKEND` is `auto` (Docker when its engine answers and the sandbox image is
there, else bubblewrap when it works), `docker` or `bubblewrap`. When nothing can sandbox the
code, the answer is an error: generated code is never run unsandboxed.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass

import docker.errors
import requests.exceptions

from vdo_kernel.settings import Settings
from vdo_sandbox.backend import MIB, Backend, Limits, SandboxUnavailableError
from vdo_sandbox.docker_backend import ENGINE_HINT, DockerBackend, connect

log = logging.getLogger(__name__)

PING_SECONDS = 3.0
BUILD_HINT = "build it with `vdo sandbox build-image`"


@dataclass(frozen=True)
class Choice:
    backend: Backend
    reason: str


def limits_from_settings(settings: Settings) -> Limits:
    return Limits(
        cpus=settings.sandbox_cpus,
        memory_bytes=settings.sandbox_memory_mib * MIB,
        pids=settings.sandbox_pids,
        workspace_bytes=settings.sandbox_workspace_mib * MIB,
        tmpfs_bytes=settings.sandbox_tmpfs_mib * MIB,
        wall_seconds=settings.sandbox_wall_seconds,
        output_bytes=int(settings.sandbox_output_mib * MIB),
        network=False,
    )


def choose_backend(settings: Settings) -> Backend:
    """The backend to run generated code with; logs which one and why."""
    choice = choose(settings)
    log.info("sandbox backend: %s (%s)", choice.backend.describe(), choice.reason)
    return choice.backend


def choose(settings: Settings) -> Choice:
    wanted = settings.sandbox_backend
    image = settings.sandbox_image_python
    docker_problem = ""
    if wanted in ("auto", "docker"):
        docker_problem = docker_unavailable(image)
        if not docker_problem:
            how = "requested" if wanted == "docker" else "auto: the Docker engine answers"
            return Choice(DockerBackend(image), f"{how}, image {image}")
        if wanted == "docker":
            raise SandboxUnavailableError(f"VDO_SANDBOX_BACKEND=docker, but {docker_problem}")
    bwrap_problem = bubblewrap_unavailable()
    if not bwrap_problem:
        from vdo_sandbox.bubblewrap import BubblewrapBackend

        try:
            backend: Backend = BubblewrapBackend()
        except SandboxUnavailableError as error:
            bwrap_problem = str(error)
        else:
            why = (
                "requested"
                if wanted == "bubblewrap"
                else f"auto: Docker is not usable ({docker_problem})"
            )
            return Choice(backend, why)
    if wanted == "bubblewrap":
        raise SandboxUnavailableError(f"VDO_SANDBOX_BACKEND=bubblewrap, but {bwrap_problem}")
    raise SandboxUnavailableError(
        f"no sandbox on this host: {docker_problem}; and {bwrap_problem}. Install docker.io "
        "(then `vdo sandbox build-image`) or bubblewrap; generated code is never run unsandboxed"
    )


def docker_unavailable(image: str) -> str:
    """Why Docker cannot run the sandbox here ("" when it can)."""
    try:
        client = connect(timeout=PING_SECONDS)
    except SandboxUnavailableError as error:
        return str(error)
    try:
        client.ping()
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"the sandbox image {image} is not on the Docker engine; {BUILD_HINT}"
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        return f"the Docker engine does not answer ({error}); {ENGINE_HINT}"
    finally:
        client.close()
    return ""


def bubblewrap_unavailable() -> str:
    """Why bubblewrap cannot run the sandbox here ("" when a trivial isolated run works)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    try:
        completed = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap does not work here ({error})"
    if completed.returncode != 0:
        return f"bubblewrap does not work here: {completed.stderr.strip() or completed.returncode}"
    return ""
