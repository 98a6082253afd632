"""What every sandbox backend offers: run one command over a workspace, isolated and limited.

Two backends implement it, `bubblewrap` (namespaces, no daemon) and `docker` (a Docker engine
through its SDK). Every limit below is enforced by both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

MIB = 1024 * 1024


class SandboxUnavailableError(RuntimeError):
    """The backend cannot run anything on this host (not installed, engine not answering)."""


@dataclass(frozen=True)
class Limits:
    cpus: float = 1.0
    memory_bytes: int = 512 * MIB
    pids: int = 128
    workspace_bytes: int = 200 * MIB
    tmpfs_bytes: int = 64 * MIB
    wall_seconds: float = 300.0
    output_bytes: int = 10 * MIB
    network: bool = False


@dataclass(frozen=True)
class ReadyCheck:
    """How a started program shows it is up (see the plan's ``ready_check``)."""

    kind: str  # port | command | stays_up | output
    port: int | None = None
    command: tuple[str, ...] = ()
    seconds: float = 0.0
    text: str = ""


@dataclass(frozen=True)
class RunSpec:
    workspace: Path  # the only writable place; mounted at /workspace
    command: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)  # added to a minimal clean environment
    # Read-only mounts (host path -> sandbox path): the resolved dependencies, say.
    mounts: dict[Path, str] = field(default_factory=dict)
    # For a program that should stay running: stop it once this check passes (or fails).
    ready: ReadyCheck | None = None


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when the run was stopped (time limit, ready check, killed)
    output: str  # at most limits.output_bytes, plus a note of anything cut
    duration_seconds: float
    timed_out: bool = False
    truncated: bool = False
    output_bytes_total: int = 0
    ready: bool | None = None  # the ready check's verdict, when there was one
    ready_detail: str = ""
    killed_reason: str = ""  # memory limit, process limit, ... when the backend can tell
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    first_output_seconds: float | None = None  # start to first output


# Called with each line of output as it is produced (for the job's live log).
LineSink = Callable[[str], None]


class Backend(Protocol):
    name: str  # "bubblewrap" | "docker"

    async def run(self, spec: RunSpec, on_line: LineSink | None = None) -> RunResult: ...

    def describe(self) -> str:
        """One line saying what this backend runs on (for the start-up log and `vdo doctor`)."""
        ...
