"""A local stand-in for the images' Python base, built with no registry.

The Dockerfiles take their base from a build argument (`PYTHON_IMAGE`, by default
`python:3.11-slim-bookworm` from a registry). Where no registry can be reached, this builds an
equivalent from the host's apt sources: `debootstrap --variant=minbase` lays out Debian bookworm
with python3 (3.11), python3-venv and ca-certificates, and the root filesystem is imported into
the Docker engine as `vdo-build-base:bookworm`. The host's CA bundle replaces the image's, so the
builds made on it trust what the host trusts (a proxy's CA, say). It is built once per machine.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import docker.errors

from vdo_sandbox.image import host_mirror

BASE_TAG = "vdo-build-base:bookworm"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# A stand-in for the gateway's Node base (`NODE_IMAGE`, by default node:22-bookworm-slim):
# the Python base with Debian's Node.js 18 and npm.
NODE_TAG = "vdo-build-node:bookworm"
NODE_DOCKERFILE = """
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm \\
    && rm -rf /var/lib/apt/lists/*
CMD ["node"]
"""
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt")


def ensure_base_image(client: Any, *, tag: str = BASE_TAG) -> str:
    """Build the base image as `tag` unless the engine has it; returns the tag."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        build_base_image(client, tag=tag)
    return tag


def ensure_node_image(client: Any) -> str:
    """The Node stand-in (NODE_TAG), built on the Python base unless the engine has it."""
    try:
        client.images.get(NODE_TAG)
    except docker.errors.ImageNotFound:
        started = time.monotonic()
        client.images.build(
            fileobj=io.BytesIO(NODE_DOCKERFILE.encode()),
            tag=NODE_TAG,
            buildargs={"BASE": ensure_base_image(client)},
            network_mode="host",  # apt reaches the mirror even when the engine has no bridge
            rm=True,
            forcerm=True,
        )
        print(f"built {NODE_TAG} in {time.monotonic() - started:.0f}s")
    return NODE_TAG


def build_base_image(client: Any, *, tag: str = BASE_TAG) -> None:
    debootstrap = shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if debootstrap is None:
        raise RuntimeError("debootstrap is not installed: apt-get install debootstrap")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vdo-base-") as scratch:
        root = Path(scratch) / "root"
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                host_mirror(SUITE),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=1200,
        )
        for relative in PRUNE:
            shutil.rmtree(root / relative, ignore_errors=True)
        lists = root / "var/lib/apt/lists"
        for entry in lists.glob("*"):
            if entry.is_file():
                entry.unlink()
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        archive = Path(scratch) / "root.tar"
        with tarfile.open(archive, mode="w") as tar:
            tar.add(str(root), arcname=".")
        repository, _, version = tag.partition(":")
        response = client.api.import_image_from_file(
            str(archive),
            repository=repository,
            tag=version or "latest",
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
            ],
        )
        if "error" in str(response).lower():
            raise RuntimeError(f"importing {tag} failed: {response}")
    print(f"built {tag} in {time.monotonic() - started:.0f}s")
