"""Running untrusted code under bubblewrap: no network, nothing of the host writable but the
workspace, no host environment, a wall-time limit and an output cap.

This is the simplest isolating runner; every process it starts dies with the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
NOBODY = 65534


class SandboxUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunLimits:
    wall_seconds: float = 60.0
    output_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    output: str
    timed_out: bool
    truncated: bool
    duration_seconds: float
    stopped_early: bool = False


def bwrap_binary() -> str:
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailableError(
            "bubblewrap is not installed (apt-get install bubblewrap); "
            "generated code is never run unsandboxed"
        )
    return found


def bwrap_command(workspace: Path, command: list[str]) -> list[str]:
    args = [
        bwrap_binary(),
        "--unshare-all",  # no network, own pid/ipc/uts/user namespaces
        "--die-with-parent",
        "--new-session",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        SANDBOX_PATH,
        "--setenv",
        "HOME",
        "/workspace",
        "--setenv",
        "PYTHONDONTWRITEBYTECODE",
        "1",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc/alternatives",
        "/etc/alternatives",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",  # noqa: S108 - a private tmpfs inside the sandbox, not the host's /tmp
        "--bind",
        str(workspace),
        "/workspace",
        "--chdir",
        "/workspace",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.exists():
            args += ["--ro-bind", str(target), f"/{link}"]
    return [*args, "--", *command]


async def run(
    workspace: Path,
    command: list[str],
    limits: RunLimits,
    *,
    stop_when_output_contains: str | None = None,
) -> RunResult:
    """Run `command` in the sandbox with `workspace` as its only writable directory."""
    started = time.monotonic()
    await asyncio.to_thread(_hand_over, workspace)
    process = await asyncio.create_subprocess_exec(
        *bwrap_command(workspace, command),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={"PATH": SANDBOX_PATH},
    )
    assert process.stdout is not None
    chunks: list[bytes] = []
    size = 0
    truncated = timed_out = stopped_early = False
    deadline = started + limits.wall_seconds
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            try:
                chunk = await asyncio.wait_for(process.stdout.read(65536), timeout=remaining)
            except TimeoutError:
                timed_out = True
                break
            if not chunk:
                break
            if size < limits.output_bytes:
                chunks.append(chunk[: limits.output_bytes - size])
            size += len(chunk)
            if size > limits.output_bytes:
                truncated = True
            if stop_when_output_contains is not None and stop_when_output_contains.encode() in (
                b"".join(chunks)
            ):
                stopped_early = True
                break
        if not (timed_out or stopped_early):
            # Output ended: let the run report its own exit status before anything is killed
            # (killing first would turn a passing run into a killed one).
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                await asyncio.wait_for(process.wait(), timeout=remaining)
            except TimeoutError:
                timed_out = True
    finally:
        # Whatever the run left behind (background processes included) dies with it.
        _kill_group(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    output = b"".join(chunks).decode("utf-8", errors="replace")
    if truncated:
        output += f"\n[output cut at {limits.output_bytes} bytes]\n"
    if timed_out:
        output += f"\n[stopped: wall time of {limits.wall_seconds:g}s reached]\n"
    exit_code = None if (timed_out or stopped_early) else process.returncode
    return RunResult(
        exit_code=exit_code,
        output=output,
        timed_out=timed_out,
        truncated=truncated,
        duration_seconds=time.monotonic() - started,
        stopped_early=stopped_early,
    )


def _hand_over(workspace: Path) -> None:
    """The workspace belongs to the sandbox's unprivileged user for the run."""
    for path in [workspace, *workspace.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(path, NOBODY, NOBODY)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
