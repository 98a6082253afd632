"""A liveness signal for the services that have no HTTP port: while the service's event loop
runs, a file's modification time is renewed every few seconds. A probe that finds the file
older than it should be knows the loop is stuck (a hung handler, a deadlock), which a check of
the process alone cannot see; a service waiting for NATS or PostgreSQL keeps beating, so an
outage of theirs restarts nothing.

Set `VDO_HEARTBEAT_PATH` to use it (the images do: /tmp/vdo-heartbeat, read by
`deploy/docker/probe.py alive`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from vdo_kernel import logs

log = logs.get(__name__)

BEAT_SECONDS = 5.0


def beat_once(path: Path) -> None:
    """Renew the file (made if missing): its content is the time, its mtime the signal."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{time.time():.3f}\n")
    os.replace(temporary, path)


# The running heartbeats: a task is kept by a reference, or it may be collected.
_BEATING: set[asyncio.Task[None]] = set()


def start_heartbeat(path: Path | None, *, every: float = BEAT_SECONDS) -> None:
    """Beat on `path` (nothing when None) for as long as the running event loop runs: when
    `asyncio.run` ends, it cancels the task, which removes the file (a stopped service is not
    alive)."""
    if path is None:
        return
    task = asyncio.get_running_loop().create_task(_keep_beating(path, every))
    _BEATING.add(task)
    task.add_done_callback(_BEATING.discard)


async def _keep_beating(path: Path, every: float) -> None:
    warned = False
    try:
        while True:
            try:
                beat_once(path)
                warned = False
            except OSError as error:
                if not warned:
                    log.warning("cannot write the heartbeat file", path=str(path), error=str(error))
                    warned = True
            await asyncio.sleep(every)
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
