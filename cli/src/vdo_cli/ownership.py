"""One owner per data directory: whatever starts the embedded servers of a `VDO_HOME` (a stack,
or a command run against a stopped one) holds an exclusive lock on `<VDO_HOME>/stack.lock` for
as long as it does. A second owner is refused, before it touches anything, with who holds it.

The lock is the kernel's (`flock`): it goes with the process that holds it, however that process
ends, so a stack killed hard leaves nothing to clean up by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "stack.lock"


class DataDirectoryInUseError(RuntimeError):
    """Another process owns the data directory; the message says which and what to do."""


class DataDirectoryLock:
    def __init__(self, home: Path, *, purpose: str = "the stack") -> None:
        self.path = home / LOCK_FILE
        self.purpose = purpose
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock, or raise DataDirectoryInUseError naming its holder."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        lock_file = os.fdopen(descriptor, "r+", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(lock_file))
            lock_file.close()
            raise DataDirectoryInUseError(
                f"{self.path.parent} is in use by {holder}: one stack (or command) at a time "
                "owns a data directory. Stop that one first (Ctrl-C in its terminal), or give "
                "this one another VDO_HOME"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "purpose": self.purpose,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
        )
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a
        # second still waits on the old one.
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> DataDirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read(lock_file: IO[str]) -> dict[str, Any]:
    try:
        lock_file.seek(0)
        found = json.loads(lock_file.read() or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it is starting)"
    return (
        f"{holder.get('purpose', 'another process')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
    )
