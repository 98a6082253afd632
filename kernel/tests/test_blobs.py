"""Content-addressed blobs on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vdo_kernel.blobs import BlobNotFoundError, BlobStore


def test_put_returns_the_sha256_and_get_returns_the_bytes(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert blobs.get(digest) == b"hello"
    assert blobs.put(b"hello") == digest  # stored once


def test_a_corrupted_blob_is_detected(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.put(b"hello")
    path = tmp_path / "sha256" / digest[:2] / digest[2:]
    path.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="corrupt"):
        blobs.get(digest)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "abc", "A" * 64, ""])
def test_only_digests_name_blobs(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        BlobStore(tmp_path).get(bad)


def test_a_missing_blob_says_so(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFoundError):
        BlobStore(tmp_path).get("0" * 64)
