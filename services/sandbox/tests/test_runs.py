"""The sandbox's two steps on real jobs: a job aggregate driven to the step, real blobs, real
dependency resolution and a real backend (each in turn)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vdo_kernel.blobs import BlobStore
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_sandbox import runs
from vdo_sandbox.backend import Backend, RunResult, RunSpec
from vdo_sandbox.backend import LineSink as Sink

APP = "def add(a, b):\n    return a + b\n"
UNITTESTS = """import unittest
from app import add


class AddTest(unittest.TestCase):
    def test_small(self):
        self.assertEqual(add(1, 2), 3)

    def test_negative(self):
        self.assertEqual(add(-1, -1), {expected})
"""
PYTESTS = """from app import add


def test_small():
    assert add(1, 2) == 3


def test_large():
    assert add(10**6, 1) == 1000001
"""
SERVER = """import http.server
print("starting", flush=True)
http.server.HTTPServer(("127.0.0.1", 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
UNITTEST_COMMAND = ["python3", "-m", "unittest", "discover", "-s", "tests", "-v"]


@dataclass
class RecordingContext(StepContext):
    """A step context whose live log is a list."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def emit(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        home=tmp_path / "home",
        wheel_cache_dir=tmp_path.parent / "wheels",  # shared by the module's tests
        sandbox_memory_mib=256,
        sandbox_wall_seconds=60,
        **overrides,
    )


@pytest.fixture
def step_backend(backend: Backend) -> Backend:
    return backend


async def run_tests(ctx: StepContext, backend: Backend) -> StepResult:
    return await runs.run_tests(ctx, sandbox=runs.Sandbox(ctx.settings, backend))


async def sandbox_run(ctx: StepContext, backend: Backend) -> StepResult:
    return await runs.sandbox_run(ctx, sandbox=runs.Sandbox(ctx.settings, backend))


def manifest(blobs: BlobStore, files: dict[str, str]) -> str:
    return blobs.put(
        json.dumps({path: blobs.put_text(text) for path, text in files.items()}).encode()
    )


def job_at(
    step: Step,
    blobs: BlobStore,
    *,
    plan: dict[str, Any],
    code: dict[str, str],
    tests: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Job:
    """A job whose due step is `step` (run_tests or sandbox_run), with the earlier steps' work."""
    job = Job.submit(title="add numbers", description="a function that adds")
    job.admit(by="test", causation_id="test")  # the queue lets it run
    done = {
        Step.PLAN: (Outcome.OK, {"plan": blobs.put(json.dumps(plan).encode())}, {}),
        Step.BUILD: (Outcome.OK, {"files": manifest(blobs, code)}, {}),
        Step.WRITE_TESTS: (
            Outcome.OK,
            {"tests": manifest(blobs, tests or {"tests/test_none.py": ""})},
            {"command": command or UNITTEST_COMMAND},
        ),
        Step.RUN_TESTS: (Outcome.PASSED, {}, {}),
        Step.REVIEW: (Outcome.APPROVED, {}, {}),
    }
    while (due := job.due()) is not None and due.step is not step:
        outcome, artifacts, details = done[due.step]
        job.start_step(due, worker="test", causation_id="test")
        job.finish_step(
            due,
            outcome=outcome,
            summary="done",
            causation_id="test",
            artifacts=artifacts,
            details=details,
        )
    due = job.due()
    assert due is not None
    assert due.step is step
    job.start_step(due, worker="test", causation_id="test")
    return job


def context(job: Job, blobs: BlobStore, settings: Settings) -> RecordingContext:
    due = job.due()
    assert due is not None
    return RecordingContext(job=job, due=due, blobs=blobs, settings=settings)


def plan(**overrides: Any) -> dict[str, Any]:
    return {
        "summary": "adds",
        "runtime": "python3",
        "files": ["app.py"],
        "dependencies": [],
        "steps": ["write add"],
        "test_strategy": "unit tests",
        "run_command": ["python3", "app.py"],
        "ready_check": {"kind": "stays_up", "seconds": 1},
        **overrides,
    }


def no_workspaces_left(settings: Settings) -> bool:
    root = settings.workspaces_dir
    return not root.exists() or all(not any(job.iterdir()) for job in root.iterdir())


async def test_passing_tests_are_counted(step_backend: Backend, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS,
        blobs,
        plan=plan(),
        code={"app.py": APP},
        tests={"tests/test_app.py": UNITTESTS.format(expected=-2), "tests/__init__.py": ""},
    )
    ctx = context(job, blobs, settings)
    result = await run_tests(ctx, step_backend)
    assert result.outcome is Outcome.PASSED, result.summary
    assert result.summary.startswith("tests passed: 2 passed, 0 failed, 0 errors of 2 (unittest)")
    details = result.details
    assert (details["passed"], details["failed"], details["errors"], details["total"]) == (
        2,
        0,
        0,
        2,
    )
    assert details["exit_code"] == 0
    assert details["timed_out"] is False
    assert details["truncated"] is False
    assert details["killed_reason"] == ""
    assert details["backend"] == step_backend.name
    assert details["output_bytes_total"] > 0
    output = blobs.get(result.artifacts["output"]).decode()
    assert "Ran 2 tests" in output
    streamed = [text for stream, text in ctx.lines if stream == "sandbox"]
    assert any("test_small" in line for line in streamed)
    assert no_workspaces_left(settings)


async def test_failing_tests_give_the_builder_the_failures(
    step_backend: Backend, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS,
        blobs,
        plan=plan(),
        code={"app.py": APP},
        tests={"tests/test_app.py": UNITTESTS.format(expected=-3), "tests/__init__.py": ""},
    )
    result = await run_tests(context(job, blobs, settings), step_backend)
    assert result.outcome is Outcome.FAILED
    assert result.details["passed"] == 1
    assert result.details["failed"] == 1
    assert result.details["total"] == 2
    assert result.details["exit_code"] == 1
    headline, _, excerpt = result.summary.partition("\n")
    assert headline == "tests failed: 1 passed, 1 failed, 0 errors of 2 (unittest) (exit 1)"
    assert "FAIL: test_negative" in excerpt
    assert "AssertionError: -2 != -3" in excerpt
    assert len(excerpt.splitlines()) <= runs.SUMMARY_LINES
    assert no_workspaces_left(settings)


@pytest.mark.parametrize(
    ("command", "tests", "reason"),
    [
        (
            ["python3", "-c", "print('all tests passed')"],
            {"tests/test_app.py": PYTESTS},
            "the test command exited 0 but printed no pytest or unittest summary",
        ),
        (
            UNITTEST_COMMAND,
            {"tests/__init__.py": "", "tests/test_app.py": "import app\n"},
            "no test ran and passed",
        ),
    ],
    ids=["a command that prints success", "a test file with no test in it"],
)
async def test_a_test_run_that_runs_no_test_does_not_pass(
    step_backend: Backend, tmp_path: Path, command: list[str], tests: dict[str, str], reason: str
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS, blobs, plan=plan(), code={"app.py": APP}, tests=tests, command=command
    )
    result = await run_tests(context(job, blobs, settings), step_backend)
    assert result.outcome is Outcome.FAILED, result.summary
    assert result.details["exit_code"] in (0, 5)
    headline = result.summary.partition("\n")[0]
    assert headline.startswith("tests failed:"), headline
    assert reason in headline


async def test_pytest_runs_with_resolved_dependencies(
    step_backend: Backend, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS,
        blobs,
        plan=plan(dependencies=["six"]),
        code={"app.py": "import six\n" + APP, "requirements.txt": "six\npytest>=8\n"},
        tests={"tests/test_app.py": PYTESTS},
        command=["pytest", "-q", "-p", "no:cacheprovider", "tests"],
    )
    ctx = context(job, blobs, settings)
    result = await run_tests(ctx, step_backend)
    assert result.outcome is Outcome.PASSED, result.summary
    assert result.details["passed"] == 2
    assert result.details["total"] == 2
    assert result.details["command"][:3] == ["python3", "-m", "pytest"]
    streamed = [text for _, text in ctx.lines]
    assert any(line.startswith("[sandbox] dependencies: pytest>=8, six") for line in streamed)


async def test_a_missing_dependency_fails_the_step_with_the_reason(
    step_backend: Backend, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS,
        blobs,
        plan=plan(dependencies=["vdo-no-such-package-zz>=1"]),
        code={"app.py": APP},
    )
    with pytest.raises(StepFailure) as failure:
        await run_tests(context(job, blobs, settings), step_backend)
    assert str(failure.value).startswith(
        "dependency vdo-no-such-package-zz>=1 cannot be installed: "
    )
    assert no_workspaces_left(settings)


async def test_a_hostile_requirements_file_fails_the_step(
    step_backend: Backend, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.RUN_TESTS,
        blobs,
        plan=plan(),
        code={"app.py": APP, "requirements.txt": "--extra-index-url https://evil.example\n"},
    )
    with pytest.raises(StepFailure, match="refused the requirement"):
        await run_tests(context(job, blobs, settings), step_backend)


@dataclass
class Counting:
    """A backend that counts the runs going on at once."""

    inner: Backend
    name: str = ""
    active: int = 0
    peak: int = 0

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def describe(self) -> str:
        return self.inner.describe()

    async def run(self, spec: RunSpec, on_line: Sink | None = None) -> RunResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await self.inner.run(spec, on_line)
        finally:
            self.active -= 1


async def test_at_most_the_configured_number_of_runs_go_at_once(
    backend: Backend, tmp_path: Path
) -> None:
    counting = Counting(backend)
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path, sandbox_concurrency=3)
    slow = "import time\ntime.sleep(0.5)\n" + UNITTESTS.format(expected=-2)
    contexts = [
        context(
            job_at(
                Step.RUN_TESTS,
                blobs,
                plan=plan(),
                code={"app.py": APP},
                tests={"tests/test_app.py": slow, "tests/__init__.py": ""},
            ),
            blobs,
            settings,
        )
        for _ in range(10)
    ]
    sandbox = runs.Sandbox(settings, counting)
    results = await asyncio.gather(*(runs.run_tests(ctx, sandbox) for ctx in contexts))
    assert [r.outcome for r in results] == [Outcome.PASSED] * 10
    assert counting.peak == 3
    assert counting.active == 0


async def test_a_server_with_a_port_check_is_up(step_backend: Backend, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.SANDBOX_RUN,
        blobs,
        plan=plan(run_command=["python3", "app.py"], ready_check={"kind": "port", "port": 8000}),
        code={"app.py": SERVER},
    )
    ctx = context(job, blobs, settings)
    result = await sandbox_run(ctx, step_backend)
    assert result.outcome is Outcome.UP, result.summary
    details = result.details
    assert details["up"] is True
    assert details["ready_check"] == {"kind": "port", "port": 8000}
    assert details["ready_detail"] == "port 8000 answered"
    assert details["exit_code"] is None
    assert details["backend"] == step_backend.name
    assert details["command"] == ["python3", "app.py"]
    assert details["duration_seconds"] < 30
    assert result.summary.startswith("started and up: port 8000 answered")
    assert ("sandbox", "starting") in ctx.lines
    assert no_workspaces_left(settings)


async def test_an_older_plans_output_check_and_a_crash(
    step_backend: Backend, tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    settings = settings_for(tmp_path)
    job = job_at(
        Step.SANDBOX_RUN,
        blobs,
        plan=plan(ready_check={"kind": "output_contains", "text": "report ready"}),
        code={"app.py": "print('the report ready at last')\n"},
    )
    result = await sandbox_run(context(job, blobs, settings), step_backend)
    assert result.outcome is Outcome.UP, result.summary
    assert result.details["ready_check"] == {"kind": "output", "text": "report ready"}
    crashed = job_at(
        Step.SANDBOX_RUN,
        blobs,
        plan=plan(ready_check={"kind": "port", "port": 8000}),
        code={"app.py": "raise RuntimeError('no config file')\n"},
    )
    down = await sandbox_run(context(crashed, blobs, settings), step_backend)
    assert down.outcome is Outcome.DOWN
    assert down.details["up"] is False
    assert "exited with code 1" in down.details["ready_detail"]
    assert "RuntimeError: no config file" in down.summary
