"""The `vdo` command driving the whole stack as a user would: submit and watch a job, list it,
show it, and the clear errors for unknown jobs and bad input."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner, Result

from vdo_cli.main import EXIT_FAILED, app

pytestmark = pytest.mark.e2e

PHASES = ("planning", "building", "testing", "reviewing", "sandboxing")
STEPS = ("plan", "build", "write_tests", "run_tests", "review", "sandbox_run")
# One of the built-in scripted model's demo jobs, asking for its repair loop.
REPAIR_LOOP = "a command-line word-count tool, to show the repair loop"


class Stack(Protocol):
    """What these tests need of the `running_stack` fixture."""

    @property
    def gateway_url(self) -> str: ...

    @property
    def token(self) -> str: ...


def vdo(stack: Stack, *args: str, **env: Any) -> Result:
    """`vdo ARGS --api <the stack's>`, as the stack's first admin unless `env` says otherwise."""
    return CliRunner().invoke(
        app, [*args, "--api", stack.gateway_url], env={"VDO_TOKEN": stack.token, **env}
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def watched(running_stack: Stack) -> tuple[str, Result]:
    """One job submitted and followed to its end, shared by the tests that look at it."""
    result = vdo(running_stack, "submit", "cli todo api", "a todo API with tests", "--watch")
    job_id = result.output.splitlines()[0].strip() if result.output else ""
    return job_id, result


def test_submit_with_watch_follows_every_phase_to_completion(
    watched: tuple[str, Result],
) -> None:
    job_id, result = watched

    assert result.exit_code == 0, result.output
    uuid.UUID(job_id)  # the first line is the job's id alone
    lines = result.output.splitlines()
    for phase in PHASES:
        assert any(f"{phase}:" in line and "started" in line for line in lines), phase
        assert any(phase in line and "✓ done" in line for line in lines), phase
    assert f"job {job_id} completed after" in result.output
    assert "on scripted:demo [scripted model] started" in result.output
    assert "; cost $0.00 of $1.00 (" in result.output


def test_watch_shows_a_second_attempt_after_failing_tests(running_stack: Stack) -> None:
    # The built-in scripted model writes a bug in the first attempt of a "repair loop" job.
    result = vdo(running_stack, "submit", "repair", REPAIR_LOOP, "--watch")

    assert result.exit_code == 0, result.output
    assert "testing: run_tests failed (attempt 1)" in result.output
    assert "attempt 2 started: run_tests failed" in result.output
    assert "building: build started (attempt 2)" in result.output
    assert "completed after 2 attempt(s)" in result.output


def test_watch_of_a_job_that_fails_exits_non_zero(running_stack: Stack) -> None:
    result = vdo(running_stack, "submit", "no retry", REPAIR_LOOP, "--max-attempts=1", "--watch")

    assert result.exit_code == EXIT_FAILED, result.output
    assert any("testing" in line and "✗ failed" in line for line in result.output.splitlines())
    assert "job failed: run_tests failed on the last attempt (1 of 1)" in one_line(result.output)


def test_submit_prints_the_job_id_alone(running_stack: Stack) -> None:
    result = vdo(running_stack, "submit", "quiet", "a job nobody watches")

    assert result.exit_code == 0, result.output
    assert str(uuid.UUID(result.output.strip())) == result.output.strip()


def eventually(check: Callable[[], Result | None], timeout: float = 15.0) -> Result:
    """The list and the detail come from read models, which follow the log a moment behind
    the events the watch ends on: retry until ``check`` returns a result."""
    deadline = time.monotonic() + timeout
    while (result := check()) is None:
        assert time.monotonic() < deadline, "the read models never caught up"
        time.sleep(0.2)
    return result


def row_of(output: str, job_id: str) -> str | None:
    return next((line for line in output.splitlines() if job_id in line), None)


def test_jobs_lists_the_job(running_stack: Stack, watched: tuple[str, Result]) -> None:
    job_id, _ = watched

    def listed() -> Result | None:
        result = vdo(running_stack, "jobs")
        assert result.exit_code == 0, result.output
        row = row_of(result.output, job_id)
        return result if row and "completed" in row else None

    row = row_of(eventually(listed).output, job_id)

    assert row is not None
    assert "cli todo api" in row


def test_jobs_filters_by_status(running_stack: Stack, watched: tuple[str, Result]) -> None:
    job_id, _ = watched

    def completed() -> Result | None:
        result = vdo(running_stack, "jobs", "--status", "completed", "--limit", "100")
        assert result.exit_code == 0, result.output
        return result if job_id in result.output else None

    eventually(completed)
    cancelled = vdo(running_stack, "jobs", "--status", "cancelled")

    assert cancelled.exit_code == 0, cancelled.output
    assert job_id not in cancelled.output


def test_show_gives_the_steps_and_the_history(
    running_stack: Stack, watched: tuple[str, Result]
) -> None:
    job_id, _ = watched

    result = vdo(running_stack, "show", job_id)

    assert result.exit_code == 0, result.output
    assert job_id in result.output
    assert "completed" in result.output
    for step in STEPS:
        assert step in result.output, step
    assert "approved" in result.output
    assert "JobSubmitted" in result.output
    assert "JobCompleted" in result.output
    # No model is configured: the built-in scripted model made the AI steps, and says so.
    lines = [one_line(line) for line in result.output.splitlines()]
    assert any(line.startswith("cost $0.00 of $1.00 budget (") for line in lines)
    assert "model calls" in lines
    assert any(
        line.startswith("planning/plan 1 1 1 scripted:demo [scripted model] ok") for line in lines
    )
    assert any(
        line.startswith("1 planning plan ok") and "[scripted model]" in line for line in lines
    )
    assert "ModelCallFinished" in result.output


def test_an_unknown_job_is_a_clear_error(running_stack: Stack) -> None:
    result = vdo(running_stack, "show", str(uuid.uuid4()))

    assert result.exit_code == EXIT_FAILED
    assert "error:" in result.output
    assert "not found" in result.output.lower()
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("option", "field"),
    [("--max-attempts=-1", "max_attempts"), ("--budget=0", "budget_usd")],
)
def test_values_the_gateway_refuses_are_shown_clearly(
    running_stack: Stack, option: str, field: str
) -> None:
    result = vdo(running_stack, "submit", "bad", "bad input", option)

    assert result.exit_code == EXIT_FAILED
    output = one_line(result.output)
    assert output.startswith("error:")
    assert field in output
    assert "Traceback" not in result.output


def test_a_wrong_token_is_a_clear_error_that_says_where_it_came_from(
    running_stack: Stack,
) -> None:
    result = vdo(running_stack, "jobs", VDO_TOKEN="vdo_" + "x" * 43)

    assert result.exit_code == EXIT_FAILED, result.output
    output = one_line(result.output)
    assert "authentication required" in output
    assert "token sent: VDO_TOKEN" in output
    assert "x" * 43 not in result.output
    assert "Traceback" not in result.output


def test_without_a_token_the_error_says_where_one_is_looked_for(
    running_stack: Stack, tmp_path: Path
) -> None:
    result = vdo(running_stack, "jobs", VDO_TOKEN="", VDO_HOME=str(tmp_path))

    assert result.exit_code == EXIT_FAILED, result.output
    output = one_line(result.output)
    assert "authentication required" in output
    assert "VDO_TOKEN is not set" in output
    assert "admin-token" in output
