"""Building the default Python sandbox image locally, with no registry.

`debootstrap --variant=minbase` lays out a Debian root filesystem (the host's release and
mirror by default) with python3, an unprivileged `sandbox` user is added, the documentation
and package lists are dropped, and the result is imported into the Docker engine as an image
that runs as that user in /workspace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors

from vdo_sandbox.backend import SandboxUnavailableError

SANDBOX_UID = 10001
SANDBOX_USER = "sandbox"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
PACKAGES = ("python3",)
IMAGE_LABEL = "vdo.sandbox.image"
# Removed from the root filesystem: nothing in the sandbox reads them.
PRUNE = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/common-licenses",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/log",
)

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """The image could not be built (a tool missing, debootstrap or the import failing)."""


def host_suite(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's Debian release name (bookworm, say), from /etc/os-release."""
    try:
        text = os_release.read_text()
    except OSError as error:
        raise ImageBuildError(f"cannot read {os_release}; pass --suite") from error
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise ImageBuildError(f"{os_release} names no VERSION_CODENAME; pass --suite")


def host_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's apt mirror for `suite`: the first `deb` source whose suites include it, else
    the one of the host's own release (the same archive holds the other releases)."""
    sources = list(_apt_sources(apt_dir))
    own = ""
    with contextlib.suppress(ImageBuildError):
        own = host_suite()
    for wanted in (suite, own):
        for uri, suites in sources:
            if wanted in suites:
                return uri
    raise ImageBuildError(f"no apt source for {suite} in {apt_dir}; pass --mirror")


def _apt_sources(apt_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of each `deb` source, one-line (.list) and deb822 (.sources) formats."""
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        for line in _read_lines(path):
            words = line.split("#", 1)[0].split()
            if words and words[0] == "deb":
                words = [w for w in words[1:] if not w.startswith("[")]  # drop [options]
                if len(words) >= 2:
                    yield words[0], [words[1]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(_read_lines(path)):
            enabled = stanza.get("enabled", "yes").lower() != "no"
            if enabled and "deb" in stanza.get("types", "").split():
                for uri in stanza.get("uris", "").split():
                    yield uri, stanza.get("suites", "").split()


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _deb822_stanzas(lines: list[str]) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in [*lines, ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif line[0].isspace() and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def image_exists(client: Any, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def connect() -> Any:
    """A client of the Docker engine, or a clear error saying how to get one."""
    from vdo_sandbox.docker_backend import connect as connect_engine

    try:
        return connect_engine(timeout=600)
    except SandboxUnavailableError as error:
        raise ImageBuildError(str(error)) from error


def build_image(
    tag: str,
    *,
    suite: str | None = None,
    mirror: str | None = None,
    force: bool = False,
    progress: Progress = print,
) -> int:
    """Build the sandbox image as `tag` unless it exists (or `force`); returns its size."""
    client = connect()
    try:
        old = client.images.get(tag).id if image_exists(client, tag) else None
        if old and not force:
            size = int(client.images.get(tag).attrs["Size"])
            progress(f"{tag} already exists ({_mib(size)}); --force rebuilds it")
            return size
        _check_tools()
        suite = suite or host_suite()
        mirror = mirror or host_mirror(suite)
        started = time.monotonic()
        # Not /tmp: that may be a small tmpfs, and the root filesystem needs a few hundred MiB.
        with tempfile.TemporaryDirectory(prefix="vdo-sandbox-image-", dir="/var/tmp") as tmp:
            root = Path(tmp) / "rootfs"
            progress(f"debootstrap {suite} from {mirror} (a few minutes)")
            _debootstrap(suite, mirror, root)
            progress(f"adding the {SANDBOX_USER} user (uid {SANDBOX_UID}) and trimming")
            _customise(root)
            tarball = Path(tmp) / "rootfs.tar"
            _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."])
            progress(f"importing {_mib(tarball.stat().st_size)} as {tag}")
            _import(client, tarball, tag, suite)
        new = client.images.get(tag)
        if old and old != new.id:
            with contextlib.suppress(docker.errors.APIError):  # still used by a container
                client.images.remove(old)
        size = int(new.attrs["Size"])
        progress(f"built {tag}: {_mib(size)} in {time.monotonic() - started:.0f}s")
        return size
    finally:
        client.close()


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building the sandbox image needs root (debootstrap)")
    for tool, package in (("debootstrap", "debootstrap"), ("tar", "tar")):
        if not shutil.which(tool):
            raise ImageBuildError(f"{tool} is not installed: apt-get install {package}")


def _debootstrap(suite: str, mirror: str, root: Path) -> None:
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(root),
            mirror,
        ]
    )


def _customise(root: Path) -> None:
    uid = SANDBOX_UID
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write(f"{SANDBOX_USER}:x:{uid}:{uid}:sandbox:/workspace:/usr/sbin/nologin\n")
    with (root / "etc/group").open("a") as group:
        group.write(f"{SANDBOX_USER}:x:{uid}:\n")
    with (root / "etc/shadow").open("a") as shadow:
        shadow.write(f"{SANDBOX_USER}:*:19000:0:99999:7:::\n")
    workspace = root / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, uid, uid)
    for relative in PRUNE:
        target = root / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    for cache in root.glob("usr/lib/python3*/**/__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def _import(client: Any, tarball: Path, tag: str, suite: str) -> None:
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:  # no tag given, or the colon belongs to a registry port
        repository, version = tag, "latest"
    changes = [
        f"USER {SANDBOX_UID}:{SANDBOX_UID}",
        "WORKDIR /workspace",
        f"ENV PATH={SANDBOX_PATH}",
        "ENV LANG=C.UTF-8",
        "ENV HOME=/workspace",
        f'LABEL {IMAGE_LABEL}="python3 debian-{suite}"',
        'CMD ["python3"]',
    ]
    try:
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version, changes=changes
        )
    except docker.errors.APIError as error:
        raise ImageBuildError(f"docker import failed: {error}") from error


def _run(command: list[str]) -> None:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ImageBuildError(f"{command[0]} could not be started: {error}") from error
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
        raise ImageBuildError(f"{command[0]} failed ({completed.returncode}):\n{tail}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"
