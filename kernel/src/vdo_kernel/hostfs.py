"""Permissions on the host's disk for processes that run as another user (the embedded
PostgreSQL's own user, the sandbox's unprivileged user)."""

from __future__ import annotations

import stat
from pathlib import Path


def allow_traverse(directory: Path) -> None:
    """Let any user pass through `directory` and every directory above it: the execute bit for
    others is added where it is missing; read permission (listing) is never given."""
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
