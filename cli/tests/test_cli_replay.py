"""`vdo replay [--verify]` against a real database: equal, or the exact rows that differ, and the
exit codes that say which."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from vdo_cli.main import app
from vdo_kernel.domain import Job, Outcome
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, checksums


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI with a home of its own and no configuration from the machine it runs on."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("VDO_API_URL", "VDO_DATABASE_URL", "VDO_NATS_URL", "VDO_TOKEN", "VDO_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDO_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.fixture
def projected(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store with a few jobs (one retried), projected; the CLI pointed at it."""
    store = JobStore(database_url, pool_size=1)
    projection = Projection(database_url, store)
    try:
        for title in ("todo api", "blog", "cli tool"):
            job = Job.submit(title=title, description="something useful", max_attempts=2)
            job.admit(by="scheduler", causation_id="test")
            for outcome in (Outcome.OK, Outcome.OK, Outcome.OK, Outcome.FAILED, Outcome.OK):
                due = job.due()
                assert due is not None
                job.start_step(due, worker="test-worker", causation_id="test")
                job.finish_step(due, outcome=outcome, summary="done", causation_id="test")
            store.save(job)
        projection.catch_up()
    finally:
        projection.close()
        store.close()
    monkeypatch.setenv("VDO_DATABASE_URL", database_url)
    return database_url


def one_line(text: str) -> str:
    return " ".join(text.split())


def execute(database_url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def test_verify_of_consistent_read_models_says_equal_with_the_checksums(
    runner: CliRunner, projected: str
) -> None:
    result = runner.invoke(app, ["replay", "--verify"])

    assert result.exit_code == 0, result.output
    assert "equal at position" in result.output
    for table, checksum in checksums(projected).items():
        assert f"{table}" in result.output
        assert checksum in result.output


def test_verify_names_the_tampered_row_and_column(runner: CliRunner, projected: str) -> None:
    ((job_id,),) = execute(projected, "SELECT id FROM vdo_read.jobs WHERE title = 'blog'")
    execute(projected, f"UPDATE vdo_read.jobs SET title = 'x' WHERE id = '{job_id}'")

    result = runner.invoke(app, ["replay", "--verify"])

    assert result.exit_code == 1
    output = one_line(result.output)
    assert "different: the read models do not match the log" in output
    assert "jobs different: 1 row(s) differ, 0 missing, 0 extra" in output
    assert f'different id={job_id}: title: live "x", from the log "blog"' in output
    assert "steps equal" in output


def test_verify_reports_a_missing_and_an_extra_row(runner: CliRunner, projected: str) -> None:
    ((job_id,),) = execute(projected, "SELECT id FROM vdo_read.jobs WHERE title = 'todo api'")
    execute(
        projected,
        f"DELETE FROM vdo_read.steps WHERE job_id = '{job_id}' AND step = 'build' AND attempt = 2",
    )
    execute(
        projected,
        "INSERT INTO vdo_read.jobs SELECT gen_random_uuid(), title, description, status, phase, "
        "step, attempt, max_attempts, budget_usd, cost_usd, routes, submitted_by, created_at, "
        "updated_at, started_at, finished_at, finished_reason, version, last_position, "
        "priority, queued_position "
        f"FROM vdo_read.jobs WHERE id = '{job_id}'",
    )

    result = runner.invoke(app, ["replay", "--verify", "--json"])

    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["equal"] is False
    tables = {t["table"]: t for t in report["tables"]}
    (missing,) = tables["steps"]["rows"]
    assert missing["kind"] == "missing"
    assert missing["key"] == {"job_id": str(job_id), "step": "build", "attempt": 2}
    (extra,) = tables["jobs"]["rows"]
    assert extra["kind"] == "extra"
    assert extra["key"]["id"] != str(job_id)
    assert tables["timeline"]["rows"] == []


def test_replay_without_verify_rebuilds_the_read_models(runner: CliRunner, projected: str) -> None:
    execute(projected, "UPDATE vdo_read.jobs SET title = 'x'")

    result = runner.invoke(app, ["replay"])

    assert result.exit_code == 0, result.output
    assert "replayed 39 events" in result.output
    assert runner.invoke(app, ["replay", "--verify"]).exit_code == 0


def test_verify_without_read_models_fails(
    runner: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VDO_DATABASE_URL", database_url)

    result = runner.invoke(app, ["replay", "--verify"])

    assert result.exit_code == 1
    assert "the projector has not run" in one_line(result.output)


def test_verify_without_a_database_says_to_start_the_stack(runner: CliRunner) -> None:
    result = runner.invoke(app, ["replay", "--verify"])

    assert result.exit_code == 1
    assert "VDO_DATABASE_URL is not set" in one_line(result.output)
