"""The sandbox's two steps: running the tests, and starting the approved result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_sandbox import bubblewrap

TEST_COMMAND = ["python3", "-m", "unittest", "-v"]


def safe_relative_path(raw: str) -> PurePosixPath:
    path = PurePosixPath(raw)
    if not raw or path.is_absolute() or ".." in path.parts or "\\" in raw or "\x00" in raw:
        raise StepFailure(f"refused a file path that leaves the workspace: {raw!r}")
    return path


def materialise(ctx: StepContext, workspace: Path, manifests: list[str]) -> list[str]:
    """Write the files named by the given artifact manifests into a fresh workspace."""
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    written: list[str] = []
    for digest in manifests:
        manifest = json.loads(ctx.blobs.get(digest))
        for raw_path, file_digest in manifest.items():
            relative = safe_relative_path(raw_path)
            target = workspace / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ctx.blobs.get(file_digest))
            written.append(str(relative))
    return written


def _workspace(ctx: StepContext) -> Path:
    return ctx.settings.workspaces_dir / str(ctx.job.id) / f"{ctx.due.attempt}-{ctx.due.step}"


def _artifact(ctx: StepContext, step: Step, name: str) -> str:
    digest = ctx.job.record(step, ctx.due.attempt).artifacts.get(name)
    if not digest:
        raise StepFailure(f"nothing to run: the {step.value} step left no {name}")
    return digest


async def run_tests(ctx: StepContext) -> StepResult:
    code = _artifact(ctx, Step.BUILD, "files")
    tests = _artifact(ctx, Step.WRITE_TESTS, "tests")
    command = ctx.job.record(Step.WRITE_TESTS, ctx.due.attempt).details.get("command", TEST_COMMAND)
    workspace = _workspace(ctx)
    materialise(ctx, workspace, [code, tests])
    try:
        result = await bubblewrap.run(workspace, list(command), bubblewrap.RunLimits())
    except bubblewrap.SandboxUnavailableError as error:
        raise StepFailure(str(error)) from error
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    passed = result.exit_code == 0
    report = ctx.blobs.put_text(result.output)
    tail = "\n".join(result.output.strip().splitlines()[-15:])
    return StepResult(
        outcome=Outcome.PASSED if passed else Outcome.FAILED,
        summary=(
            "tests passed"
            if passed
            else f"tests failed (exit {result.exit_code}"
            f"{', timed out' if result.timed_out else ''}):\n{tail}"
        ),
        artifacts={"output": report},
        details={
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "truncated": result.truncated,
            "duration_seconds": round(result.duration_seconds, 3),
            "runner": "bubblewrap",
        },
    )


async def sandbox_run(ctx: StepContext) -> StepResult:
    plan = json.loads(ctx.blobs.get(_artifact_plan(ctx)))
    command = list(plan.get("run_command") or [])
    if not command:
        raise StepFailure("the plan has no run command")
    check = plan.get("ready_check") or {}
    ready_text = str(check.get("text", "")) or None
    workspace = _workspace(ctx)
    materialise(ctx, workspace, [_artifact(ctx, Step.BUILD, "files")])
    try:
        result = await bubblewrap.run(
            workspace,
            command,
            bubblewrap.RunLimits(wall_seconds=30.0),
            stop_when_output_contains=ready_text,
        )
    except bubblewrap.SandboxUnavailableError as error:
        raise StepFailure(str(error)) from error
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    up = ready_text is not None and ready_text in result.output
    report = ctx.blobs.put_text(result.output)
    return StepResult(
        outcome=Outcome.UP if up else Outcome.DOWN,
        summary=(
            f"started and reported {ready_text!r}"
            if up
            else f"did not report {ready_text!r} (exit {result.exit_code}):\n"
            + "\n".join(result.output.strip().splitlines()[-15:])
        ),
        artifacts={"output": report},
        details={
            "command": command,
            "exit_code": result.exit_code,
            "duration_seconds": round(result.duration_seconds, 3),
            "runner": "bubblewrap",
        },
    )


def _artifact_plan(ctx: StepContext) -> str:
    digest = ctx.job.record(Step.PLAN).artifacts.get("plan")
    if not digest:
        raise StepFailure("no plan: nothing says how to start the result")
    return digest
