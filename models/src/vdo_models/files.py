"""Checking the files a model wants to write, before anything is written.

A reply's files are untrusted: every path must be a plain relative path inside the workspace
(no ``..``, nothing absolute, no drive letters or backslashes, no control characters, nothing
under ``.git``), no path twice, and within the count and size limits. One bad file refuses the
whole reply; nothing of it is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vdo_kernel.blobs import BlobStore
from vdo_kernel.paths import path_problem


class UnsafeFilesError(ValueError):
    """The reply's files cannot be written; the message says which and why."""


@dataclass(frozen=True)
class FileLimits:
    max_files: int
    max_file_bytes: int
    max_total_bytes: int


def check_path(raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise UnsafeFilesError("a file has no path")
    problem = path_problem(raw)
    if problem is not None:
        shown = repr(raw[:80]) + ("..." if len(raw) > 80 else "")
        raise UnsafeFilesError(f"path {shown} {problem}")
    return raw


def check_files(files: Sequence[Mapping[str, Any]], limits: FileLimits) -> dict[str, str]:
    """The files as {path: content}, or UnsafeFilesError naming the first problem."""
    if len(files) > limits.max_files:
        raise UnsafeFilesError(f"{len(files)} files is more than the limit of {limits.max_files}")
    checked: dict[str, str] = {}
    total = 0
    lowered: set[str] = set()
    for item in files:
        path = check_path(item.get("path"))
        content = item.get("content")
        if not isinstance(content, str):
            raise UnsafeFilesError(f"file {path!r} has no text content")
        size = len(content.encode("utf-8", errors="surrogatepass"))
        if size > limits.max_file_bytes:
            raise UnsafeFilesError(
                f"file {path!r} is {size} bytes, more than the limit of {limits.max_file_bytes}"
            )
        total += size
        if total > limits.max_total_bytes:
            raise UnsafeFilesError(f"the files are more than {limits.max_total_bytes} bytes")
        if path.lower() in lowered:
            raise UnsafeFilesError(f"file {path!r} appears twice")
        # A file and a directory of the same name cannot both exist.
        prefix = path.lower() + "/"
        if any(
            other.startswith(prefix) or path.lower().startswith(other + "/") for other in lowered
        ):
            raise UnsafeFilesError(f"file {path!r} is both a file and a directory")
        lowered.add(path.lower())
        checked[path] = content
    return checked


def store_files(blobs: BlobStore, files: Mapping[str, str]) -> str:
    """Store each file as a blob and the {path: digest} manifest as one more; the manifest's
    digest names the whole set."""
    manifest = {path: blobs.put_text(content) for path, content in sorted(files.items())}
    return blobs.put(json.dumps(manifest, sort_keys=True).encode())


def load_files(blobs: BlobStore, manifest_digest: str) -> dict[str, str]:
    manifest = json.loads(blobs.get(manifest_digest))
    return {
        path: blobs.get(digest).decode("utf-8", errors="replace")
        for path, digest in manifest.items()
    }
