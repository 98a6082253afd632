"""The sandbox's two steps: running the tests, and starting the approved result.

Both write the job's files into a fresh workspace, resolve the project's dependencies outside
the sandbox (binary wheels only, cached), run one command on the service's sandbox backend
(`Sandbox`, bound to the steps by the service), stream its output to the job's live log, keep
the output as a blob, and remove the workspace. At most `sandbox_concurrency` runs go at once in
a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from vdo_kernel import logs
from vdo_kernel.domain import Outcome, Step
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_sandbox.backend import Backend, ReadyCheck, RunResult, RunSpec, SandboxUnavailableError
from vdo_sandbox.choose import choose_backend, limits_from_settings
from vdo_sandbox.deps import DependencyCache, Resolved, parse_requirements, requirement_names
from vdo_sandbox.results import TestCounts, failure_excerpt, parse_counts

log = logs.get(__name__)

TEST_COMMAND = ("python3", "-m", "unittest", "discover", "-v")
# A started program gets this long (at most the settings' wall time) to pass its ready check;
# a stays_up check gets its own seconds and this much more.
START_WALL_SECONDS = 60.0
STAYS_UP_MARGIN_SECONDS = 30.0
SUMMARY_LINES = 60  # of failing output in a failed step's summary (the builder's feedback)
STREAM = "sandbox"

# ---- what the service holds --------------------------------------------------------------


class Sandbox:
    """What the sandbox service holds for its life, bound to its steps as the AI services bind
    their models: the backend generated code runs on (chosen on first use unless given), the
    limit of `sandbox_concurrency` runs at once, and the cache of resolved dependencies."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self._backend = backend
        self.limiter = asyncio.Semaphore(settings.sandbox_concurrency)
        self.dependencies = DependencyCache(settings.wheels_dir)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            try:
                self._backend = choose_backend(self.settings)
            except SandboxUnavailableError as error:
                raise StepFailure(f"no sandbox to run generated code in: {error}") from error
            log.info(
                "sandbox backend chosen",
                backend=self._backend.name,
                runs_on=self._backend.describe(),
            )
        return self._backend


# ---- files --------------------------------------------------------------------------------


def safe_relative_path(raw: str) -> PurePosixPath:
    path = PurePosixPath(raw)
    if (
        not raw
        or path.is_absolute()
        or ".." in path.parts
        or "\\" in raw
        or "\x00" in raw
        or path == PurePosixPath(".")
    ):
        raise StepFailure(f"refused a file path that leaves the workspace: {raw!r}")
    return path


def write_files(workspace: Path, files: dict[str, bytes]) -> list[str]:
    """Write `files` (relative path -> content) under `workspace` as regular files; refuses a
    path that leaves it, and never writes through a link (one already there is refused)."""
    root = workspace.resolve()
    written: list[str] = []
    for raw, content in files.items():
        relative = safe_relative_path(raw)
        directory = root
        for part in relative.parts[:-1]:
            directory = directory / part
            try:
                info = directory.lstat()
            except FileNotFoundError:
                directory.mkdir()
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise StepFailure(f"refused {raw!r}: {part!r} on its way is not a directory")
        target = directory / relative.name
        try:
            info = target.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(info.st_mode):
                raise StepFailure(f"refused {raw!r}: something that is not a file is there")
            target.unlink()  # a later manifest (the tests) replaces an earlier file
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except OSError as error:
            raise StepFailure(
                f"refused {raw!r}: it cannot be written ({error.strerror})"
            ) from error
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        if not os.path.realpath(target).startswith(str(root) + os.sep):
            target.unlink()
            raise StepFailure(f"refused a file path that leaves the workspace: {raw!r}")
        written.append(str(relative))
    return written


def materialise(ctx: StepContext, workspace: Path, manifests: list[str]) -> list[str]:
    """Write the files named by the given artifact manifests ({path: blob digest}) into a fresh
    workspace."""
    if workspace.exists() or workspace.is_symlink():
        _remove(workspace)
    workspace.mkdir(parents=True)
    files: dict[str, bytes] = {}
    for digest in manifests:
        try:
            manifest = json.loads(ctx.blobs.get(digest))
        except ValueError as error:
            raise StepFailure(f"the file list {digest[:12]} cannot be read: {error}") from error
        if not isinstance(manifest, dict):
            raise StepFailure(f"the file list {digest[:12]} is not a {{path: digest}} map")
        for raw_path, file_digest in manifest.items():
            safe_relative_path(str(raw_path))
            files[str(raw_path)] = ctx.blobs.get(str(file_digest))
    return write_files(workspace, files)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _workspace(ctx: StepContext) -> Path:
    return ctx.settings.workspaces_dir / str(ctx.job.id) / f"{ctx.due.attempt}-{ctx.due.step}"


def _artifact(ctx: StepContext, step: Step, name: str) -> str:
    digest = ctx.job.record(step, ctx.due.attempt).artifacts.get(name)
    if not digest:
        raise StepFailure(f"nothing to run: the {step.value} step left no {name}")
    return digest


def _plan(ctx: StepContext) -> dict[str, Any]:
    digest = ctx.job.record(Step.PLAN).artifacts.get("plan")
    if not digest:
        raise StepFailure("no plan: nothing says how to run the result")
    plan = json.loads(ctx.blobs.get(digest))
    if not isinstance(plan, dict):
        raise StepFailure("the plan cannot be read")
    return plan


def _command(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise StepFailure(f"{what} is not a command (a list of words)")
    if not all(isinstance(word, str) and word and "\x00" not in word for word in value):
        raise StepFailure(f"{what} is not a command (a list of words)")
    words = tuple(value)
    if words[0] in ("pytest", "py.test"):
        # Console scripts name the interpreter by a host path; the module always works.
        words = ("python3", "-m", "pytest", *words[1:])
    return words


def _uses_pytest(command: tuple[str, ...]) -> bool:
    return command[:3] in (("python3", "-m", "pytest"), ("python", "-m", "pytest"))


# ---- dependencies -------------------------------------------------------------------------


async def _dependencies(
    ctx: StepContext,
    sandbox: Sandbox,
    workspace: Path,
    plan: dict[str, Any],
    command: tuple[str, ...],
) -> Resolved:
    declared = plan.get("dependencies") or []
    if not isinstance(declared, list) or not all(isinstance(d, str) for d in declared):
        raise StepFailure("the plan's dependencies are not a list of requirements")
    requirements = parse_requirements(declared, "the plan's dependencies")
    listed = workspace / "requirements.txt"
    if listed.is_file() and not listed.is_symlink():
        text = await asyncio.to_thread(listed.read_text, "utf-8", "replace")
        requirements += parse_requirements(text.splitlines(), "requirements.txt")
    if _uses_pytest(command) and "pytest" not in requirement_names(requirements):
        ctx.emit(STREAM, "[sandbox] the tests run with pytest: adding it to the dependencies")
        requirements.append("pytest")
    if not requirements:
        return Resolved()
    shown = ", ".join(sorted(set(requirements)))
    ctx.emit(STREAM, f"[sandbox] dependencies: {shown}")
    resolved = await sandbox.dependencies.resolve(
        requirements, on_line=lambda line: ctx.emit(STREAM, f"[sandbox] {line}")
    )
    ctx.emit(
        STREAM,
        "[sandbox] dependencies: "
        + ("reused (resolved before)" if resolved.reused else "resolved (binary wheels only)"),
    )
    return resolved


# ---- running ------------------------------------------------------------------------------


async def _run(ctx: StepContext, sandbox: Sandbox, spec: RunSpec) -> tuple[RunResult, str]:
    backend = sandbox.backend
    async with sandbox.limiter:
        ctx.emit(STREAM, f"[sandbox] $ {shlex.join(spec.command)}  ({backend.name})")
        try:
            result = await backend.run(spec, on_line=lambda line: ctx.emit(STREAM, line))
        except SandboxUnavailableError as error:
            raise StepFailure(f"the sandbox ({backend.name}) cannot run: {error}") from error
        except ValueError as error:
            raise StepFailure(f"the sandbox refused the run: {error}") from error
    return result, backend.name


def _limit_broken(result: RunResult) -> bool:
    """The run broke a limit that fails it whatever its exit status (not the process limit:
    refused forks may be handled by the program)."""
    reason = result.killed_reason.lower()
    return any(word in reason for word in ("memory", "workspace", "output"))


def _notes(result: RunResult) -> list[str]:
    notes = []
    if result.timed_out:
        notes.append(f"stopped at the wall time after {result.duration_seconds:.0f}s")
    if result.killed_reason:
        notes.append(f"killed: {result.killed_reason}")
    if result.truncated:
        notes.append(f"output cut ({result.output_bytes_total} bytes printed)")
    return notes


async def run_tests(ctx: StepContext, sandbox: Sandbox) -> StepResult:
    code = _artifact(ctx, Step.BUILD, "files")
    tests = _artifact(ctx, Step.WRITE_TESTS, "tests")
    written = ctx.job.record(Step.WRITE_TESTS, ctx.due.attempt).details.get("command")
    command = _command(written or list(TEST_COMMAND), "the tests' command")
    plan = _plan(ctx)
    workspace = _workspace(ctx)
    try:
        await asyncio.to_thread(materialise, ctx, workspace, [code, tests])
        resolved = await _dependencies(ctx, sandbox, workspace, plan, command)
        spec = RunSpec(
            workspace=workspace,
            command=command,
            limits=limits_from_settings(ctx.settings),
            env=resolved.env(),
            mounts=resolved.mounts(),
        )
        result, backend = await _run(ctx, sandbox, spec)
    finally:
        await asyncio.to_thread(_remove, workspace)
    counts = parse_counts(result.output)
    # Only a run that says what it ran passes: a command that prints "all tests passed" and
    # exits 0 has shown no test at all.
    passed = (
        result.exit_code == 0
        and not result.timed_out
        and not _limit_broken(result)
        and counts is not None
        and counts.failed == 0
        and counts.errors == 0
        and counts.passed > 0
    )
    return StepResult(
        outcome=Outcome.PASSED if passed else Outcome.FAILED,
        summary=_tests_summary(passed, result, counts, command),
        artifacts={"output": ctx.blobs.put_text(result.output)},
        details={
            **(counts.as_details() if counts else dict.fromkeys(_COUNTS)),
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "truncated": result.truncated,
            "output_bytes_total": result.output_bytes_total,
            "killed_reason": result.killed_reason,
            "duration_seconds": round(result.duration_seconds, 3),
            "backend": backend,
            "command": list(command),
        },
    )


_COUNTS = ("passed", "failed", "errors", "total")


def _tests_summary(
    passed: bool, result: RunResult, counts: TestCounts | None, command: tuple[str, ...]
) -> str:
    took = f"{result.duration_seconds:.1f}s"
    if passed:
        return f"tests passed: {counts.describe() if counts else 'exit 0'} in {took}"
    if counts is not None and counts.passed == 0 and result.exit_code in (0, 5):
        headline = f"tests failed: no test ran and passed ({counts.describe()})"
    elif counts is not None:
        headline = f"tests failed: {counts.describe()} (exit {result.exit_code})"
    elif result.exit_code == 0:
        headline = (
            "tests failed: the test command exited 0 but printed no pytest or unittest summary, "
            "so no test can be counted as run; the tests must run under pytest or unittest "
            f"(command: {' '.join(command)})"
        )
    else:
        headline = f"tests failed (exit {result.exit_code}; no test summary in the output)"
    notes = _notes(result)
    if notes:
        headline += f"; {'; '.join(notes)}"
    return f"{headline}\n{failure_excerpt(result.output, SUMMARY_LINES)}"


def ready_check_from(plan_check: object) -> ReadyCheck:
    """The plan's ready check as the backend takes it (older plans said `output_contains`)."""
    if plan_check is None:
        return ReadyCheck(kind="stays_up", seconds=3.0)
    if not isinstance(plan_check, dict):
        raise StepFailure("the plan's ready check cannot be read")
    kind = plan_check.get("kind")
    if kind in ("output", "output_contains"):
        text = plan_check.get("text")
        if not isinstance(text, str) or not text:
            raise StepFailure("the plan's output ready check names no text")
        return ReadyCheck(kind="output", text=text)
    if kind == "port":
        port = plan_check.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise StepFailure(f"the plan's port ready check names no valid port: {port!r}")
        return ReadyCheck(kind="port", port=port)
    if kind == "command":
        return ReadyCheck(
            kind="command", command=_command(plan_check.get("command"), "the ready check")
        )
    if kind == "stays_up":
        seconds = plan_check.get("seconds")
        if not isinstance(seconds, int | float) or not 0 < seconds <= 600:
            raise StepFailure(f"the plan's stays_up ready check has no valid seconds: {seconds!r}")
        return ReadyCheck(kind="stays_up", seconds=float(seconds))
    raise StepFailure(f"the plan's ready check is of an unknown kind: {kind!r}")


def _ready_check_details(check: ReadyCheck) -> dict[str, Any]:
    if check.kind == "port":
        return {"kind": "port", "port": check.port}
    if check.kind == "command":
        return {"kind": "command", "command": list(check.command)}
    if check.kind == "stays_up":
        return {"kind": "stays_up", "seconds": check.seconds}
    return {"kind": "output", "text": check.text}


async def sandbox_run(ctx: StepContext, sandbox: Sandbox) -> StepResult:
    plan = _plan(ctx)
    command = _command(plan.get("run_command"), "the plan's run command")
    check = ready_check_from(plan.get("ready_check"))
    wall = START_WALL_SECONDS
    if check.kind == "stays_up":
        wall = check.seconds + STAYS_UP_MARGIN_SECONDS
    limits = limits_from_settings(ctx.settings)
    limits = replace(limits, wall_seconds=min(limits.wall_seconds, wall))
    workspace = _workspace(ctx)
    try:
        await asyncio.to_thread(materialise, ctx, workspace, [_artifact(ctx, Step.BUILD, "files")])
        resolved = await _dependencies(ctx, sandbox, workspace, plan, command)
        spec = RunSpec(
            workspace=workspace,
            command=command,
            limits=limits,
            env=resolved.env(),
            mounts=resolved.mounts(),
            ready=check,
        )
        result, backend = await _run(ctx, sandbox, spec)
    finally:
        await asyncio.to_thread(_remove, workspace)
    up = result.ready is True
    took = f"{result.duration_seconds:.1f}s"
    if up:
        summary = f"started and up: {result.ready_detail} ({took})"
    else:
        notes = _notes(result)
        tail = "\n".join(result.output.strip().splitlines()[-SUMMARY_LINES // 2 :])
        summary = (
            f"did not come up: {result.ready_detail or 'no verdict'}"
            + (f"; {'; '.join(notes)}" if notes else "")
            + (f"\n{tail}" if tail else "")
        )
    return StepResult(
        outcome=Outcome.UP if up else Outcome.DOWN,
        summary=summary,
        artifacts={"output": ctx.blobs.put_text(result.output)},
        details={
            "up": up,
            "ready_check": _ready_check_details(check),
            "ready_detail": result.ready_detail,
            "exit_code": result.exit_code,
            "duration_seconds": round(result.duration_seconds, 3),
            "peak_memory_bytes": result.peak_memory_bytes,
            "cpu_seconds": result.cpu_seconds,
            "backend": backend,
            "command": list(command),
        },
    )
