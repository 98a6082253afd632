"""`vdo audit JOB`: a job's whole history from the event log, in plain text off a terminal, and
clear errors for an id that is malformed or unknown."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner

from vdo_cli.audit import rich_layout
from vdo_cli.main import app
from vdo_kernel.audit import audit
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.store import JobStore

PLAN = "ab" * 32
FILES_1, FILES_2 = "c1" * 32, "c2" * 32


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> CliRunner:
    """A CLI with a home of its own, pointed at the test's database."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("VDO_API_URL", "VDO_NATS_URL", "VDO_TOKEN", "VDO_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VDO_DATABASE_URL", database_url)
    return CliRunner()


def one_line(text: str) -> str:
    return " ".join(text.split())


def run_step(
    store: JobStore,
    job_id: UUID,
    outcome: Outcome,
    summary: str,
    artifacts: dict[str, str] | None = None,
    details: dict[str, object] | None = None,
) -> None:
    """One step as its service does it: started (one save), then finished (another)."""
    job = store.get(job_id)
    due = job.due()
    assert due is not None
    job.start_step(due, worker=f"{due.step.value}@host:42", causation_id="test")
    store.save(job)
    job = store.get(job_id)
    job.finish_step(
        due,
        outcome=outcome,
        summary=summary,
        causation_id="test",
        artifacts=artifacts,
        details=details,
    )
    store.save(job)


@pytest.fixture
def retried(database_url: str) -> str:
    """A job that completes on its second attempt, with a resumed step on the way."""
    store = JobStore(database_url, pool_size=1)
    try:
        job = Job.submit(
            title="todo api",
            description="a FastAPI todo API with SQLite and tests",
            max_attempts=2,
            submitted_by="ciso@example.com",
        )
        job.admit(by="scheduler", causation_id="test")
        store.save(job)
        run_step(store, job.id, Outcome.OK, "three endpoints", artifacts={"plan": PLAN})
        run_step(store, job.id, Outcome.OK, "wrote app.py", artifacts={"files": FILES_1})
        run_step(store, job.id, Outcome.OK, "wrote tests")
        run_step(store, job.id, Outcome.FAILED, "2 of 5 tests failed: test_delete")
        # The build of attempt 2 is started twice (its first worker died): resumed.
        again = store.get(job.id)
        due = again.due()
        assert due is not None
        again.start_step(due, worker="build@lost:1", causation_id="test")
        store.save(again)
        run_step(store, job.id, Outcome.OK, "fixed delete", artifacts={"files": FILES_2})
        run_step(store, job.id, Outcome.OK, "wrote tests")
        run_step(store, job.id, Outcome.PASSED, "5 of 5 passed", details={"exit_code": 0})
        run_step(store, job.id, Outcome.APPROVED, "looks right")
        run_step(store, job.id, Outcome.UP, "answers on /health")
        return str(job.id)
    finally:
        store.close()


def test_audit_tells_the_whole_history_of_a_retried_job(runner: CliRunner, retried: str) -> None:
    result = runner.invoke(app, ["audit", retried])

    assert result.exit_code == 0, result.output
    output = one_line(result.output)
    assert f"job {retried}" in output
    assert "title todo api" in output
    assert "submitted by ciso@example.com at" in output
    assert "a FastAPI todo API with SQLite and tests" in output
    assert "status completed after 2 attempt(s)" in output
    for line in (
        "attempt 1 planning/plan ok by plan@host:42",
        "attempt 1 building/build ok by build@host:42",
        "attempt 1 testing/write_tests ok",
        "attempt 1 testing/run_tests failed by run_tests@host:42",
        "attempt 2 building/build ok, resumed 1x by build@lost:1, build@host:42",
        "attempt 2 testing/run_tests passed",
        "attempt 2 reviewing/review approved",
        "attempt 2 sandboxing/sandbox_run up",
    ):
        assert line in output
    assert "2 of 5 tests failed: test_delete" in output
    assert 'details: {"exit_code": 0}' in output
    assert "attempt 2 started (run_tests failed); feedback: 2 of 5 tests failed" in output
    assert "build (attempt 2) resumed by build@host:42: started before" in output
    assert "JobCompleted: job completed after 2 attempt(s)" in output
    for name, digest in (("plan", PLAN), ("files", FILES_1), ("files", FILES_2)):
        assert f"{name} sha256:{digest}" in output


def test_audit_of_a_failed_and_a_cancelled_job(runner: CliRunner, database_url: str) -> None:
    store = JobStore(database_url, pool_size=1)
    try:
        failed = Job.submit(title="failing", description="x")
        failed.admit(by="scheduler", causation_id="test")
        due = failed.due()
        assert due is not None
        failed.start_step(due, worker="planner", causation_id="test")
        failed.fail_step(due, reason="the model is unreachable", causation_id="test")
        cancelled = Job.submit(title="cancelled", description="x")
        cancelled.cancel(reason="not needed", by="someone", causation_id="test")
        store.save(failed)
        store.save(cancelled)
    finally:
        store.close()

    output = one_line(runner.invoke(app, ["audit", str(failed.id)]).output)
    assert "status failed: planning failed: the model is unreachable" in output
    assert "planning/plan could not be done" in output
    output = one_line(runner.invoke(app, ["audit", str(cancelled.id)]).output)
    assert "status cancelled by someone: not needed" in output


def test_the_terminal_layout_has_every_step(database_url: str, retried: str) -> None:
    from rich.console import Console

    store = JobStore(database_url, pool_size=1)
    try:
        report = audit(store.job_events(UUID(retried)))
    finally:
        store.close()
    console = Console(width=200, record=True, force_terminal=True)
    console.print(rich_layout(report))
    text = console.export_text()
    assert "ciso@example.com" in text
    assert text.count("sandbox_run") >= 2  # the steps table and the history
    assert "resumed 1x" in text
    assert FILES_2 in text


def test_a_malformed_id_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "not-a-job"])

    assert result.exit_code == 1
    assert "'not-a-job' is not a job id" in one_line(result.output)


def test_an_unknown_job_is_a_clear_error(runner: CliRunner) -> None:
    job_id = "9b2e8a4e-0000-4000-8000-000000000000"

    result = runner.invoke(app, ["audit", job_id])

    assert result.exit_code == 1
    assert f"there is no job {job_id} in the event log" in one_line(result.output)


@pytest.fixture
def fallen_back(database_url: str) -> str:
    """A job whose plan was rate limited on its main route and answered by the fallback, whose
    build was made by the scripted model after a refusal and an interrupted try, and whose
    tests have a call left open."""
    store = JobStore(database_url, pool_size=1)
    try:
        job = Job.submit(
            title="routed",
            description="a job with chosen models",
            budget_usd=2.5,
            routes={"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"]},
        )
        job.admit(by="scheduler", causation_id="test")
        due = job.is_due(Step.PLAN)
        assert due is not None
        job.start_step(due, worker="planner@host:1", causation_id="test")
        first = job.start_model_call(
            due,
            call=1,
            try_number=1,
            provider="anthropic",
            model="claude-sonnet-4-5",
            reserved_usd=0.05,
            causation_id="test",
        )
        job.finish_model_call(
            first, outcome="error", error="429 rate limited", latency_ms=90, causation_id="test"
        )
        second = job.start_model_call(
            due,
            call=1,
            try_number=2,
            provider="openai",
            model="gpt-4.1",
            reserved_usd=0.05,
            note="fallback after a 429",
            causation_id="test",
        )
        job.finish_model_call(
            second,
            outcome="ok",
            input_tokens=1500,
            output_tokens=400,
            cached_tokens=1000,
            cost_usd=0.0125,
            latency_ms=2300,
            reply=PLAN,
            causation_id="test",
        )
        job.finish_step(
            due,
            outcome=Outcome.OK,
            summary="three endpoints",
            causation_id="test",
            details={"model": "openai:gpt-4.1"},
        )
        due = job.is_due(Step.BUILD)
        assert due is not None
        job.start_step(due, worker="builder@host:1", causation_id="test")
        tries = [("refused", "content policy"), ("interrupted", "the stream was cut"), ("ok", "")]
        for number, (outcome, error) in enumerate(tries, start=1):
            key = job.start_model_call(
                due,
                call=1,
                try_number=number,
                provider="scripted",
                model="demo",
                reserved_usd=0.0,
                causation_id="test",
            )
            job.finish_model_call(key, outcome=outcome, error=error, causation_id="test")
        job.finish_step(
            due,
            outcome=Outcome.OK,
            summary="[scripted model] wrote 2 file(s)",
            causation_id="test",
            details={"model": "scripted (built-in; no AI model configured)"},
        )
        due = job.is_due(Step.WRITE_TESTS)
        assert due is not None
        job.start_step(due, worker="tester@host:1", causation_id="test")
        job.start_model_call(
            due,
            call=1,
            try_number=1,
            provider="openai",
            model="gpt-4.1",
            reserved_usd=0.2,
            causation_id="test",
        )
        store.save(job)
        return str(job.id)
    finally:
        store.close()


def test_audit_lists_every_model_call_with_its_retries_and_fallbacks(
    runner: CliRunner, fallen_back: str
) -> None:
    result = runner.invoke(app, ["audit", fallen_back])

    assert result.exit_code == 0, result.output
    output = one_line(result.output)
    assert "models planner anthropic:claude-sonnet-4-5 then openai:gpt-4.1" in output
    assert "cost $0.0125 of $2.5 (6 model call(s), 3 failed, 1 without a result)" in output
    assert "attempt 1 building/build ok [scripted model] by builder@host:1" in output
    for line in (
        "model calls: $0.0125 of $2.5",
        "plan (attempt 1) call 1: planner try 1 on anthropic:claude-sonnet-4-5 -> error: 429 "
        "rate limited; 0 in / 0 out / 0 cached tokens, $0.00, 90 ms",
        "plan (attempt 1) call 1: planner try 2 on openai:gpt-4.1 after "
        "anthropic:claude-sonnet-4-5 failed: 429 rate limited -> ok; 1,500 in / 400 out / "
        "1,000 cached tokens, $0.0125, 2.3 s",
        "note: fallback after a 429",
        "build (attempt 1) call 1: builder try 2 on scripted:demo [scripted model] after "
        "scripted:demo refused: content policy -> interrupted: the stream was cut",
        "builder try 3 on scripted:demo [scripted model] after scripted:demo was interrupted: "
        "the stream was cut -> ok",
        # An interrupted try is counted at its worst case, and says so.
        "-> interrupted: the stream was cut; 0 in / 0 out / 0 cached tokens, $0.00 (worst case)",
        "write_tests (attempt 1) call 1: tester try 1 on openai:gpt-4.1 -> no result recorded "
        "(running, or interrupted); held $0.20 of the budget",
    ):
        assert line in output, line
    # The history tells each call too.
    assert (
        "ModelCallFinished: plan (attempt 1) call 1 try 1 on anthropic:claude-sonnet-4-5 error: "
        "429 rate limited" in output
    )
    assert f"reply sha256:{PLAN}" in output
    assert (
        "ModelCallStarted: write_tests (attempt 1) call 1 try 1 on openai:gpt-4.1 started, "
        "holding $0.20 of the budget" in output
    )


def test_the_terminal_layout_has_the_model_calls(database_url: str, fallen_back: str) -> None:
    from rich.console import Console

    store = JobStore(database_url, pool_size=1)
    try:
        report = audit(store.job_events(UUID(fallen_back)))
    finally:
        store.close()
    console = Console(width=250, record=True, force_terminal=True)
    console.print(rich_layout(report))
    text = one_line(console.export_text())
    assert "model calls" in text
    # Cells wrap: the headline of the fallback is there in pieces.
    assert "planner try 2 on openai:gpt-4.1 after" in text
    assert "failed: 429 rate limited" in text
    assert "ok [scripted model]" in text
    assert "held $0.20 of the budget" in text
