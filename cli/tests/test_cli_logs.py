"""`vdo logs`: the job's live log on a real stack, model replies streaming in and sandbox output
line by line, until the job ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database, drop_database
from tests.harness import WORD_COUNT, RunningStack, start_stack
from typer.testing import CliRunner, Result

from vdo_cli.main import app

pytestmark = pytest.mark.e2e

NOWHERE = "nats://127.0.0.1:9"


@pytest.fixture(scope="module")
def slow_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[RunningStack]:
    # The scripted model takes a second per step, so a watcher is there before the work is.
    url = create_database(postgres_server)
    running = start_stack(tmp_path_factory.mktemp("logs"), url, scripted_delay_seconds=1.0)
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


def test_the_live_log_shows_model_replies_and_sandbox_output(
    slow_stack: RunningStack, tmp_path: Path
) -> None:
    job_id = slow_stack.submit("wc logs", WORD_COUNT)
    results: list[Result] = []
    # As from another machine: only the API's address and a token; no NATS the CLI could reach
    # (the log comes through the gateway).
    env = {"VDO_HOME": str(tmp_path), "VDO_TOKEN": slow_stack.token, "VDO_NATS_URL": NOWHERE}
    watcher = threading.Thread(
        target=lambda: results.append(
            CliRunner().invoke(app, ["logs", job_id, "--api", slow_stack.gateway_url], env=env)
        )
    )
    watcher.start()
    slow_stack.wait_for(job_id, timeout=90)
    watcher.join(timeout=30)
    [result] = results
    assert result.exit_code == 0, result.output
    text = result.output
    assert "[builder] calling scripted:demo" in text
    assert '"path": "wordcount.py"' in text  # the builder's reply, as it streamed
    assert '"verdict": "approve"' in text  # the reviewer's
    assert "[run_tests sandbox]" in text  # test output, line by line
    assert "OK" in text
    assert f"job {job_id} has ended; its history: vdo show {job_id}" in text


def test_logs_of_an_ended_job_point_to_its_history(
    slow_stack: RunningStack, tmp_path: Path
) -> None:
    job_id = slow_stack.submit("wc ended", WORD_COUNT)
    slow_stack.wait_for(job_id, timeout=90)
    result = CliRunner().invoke(
        app,
        ["logs", job_id, "--api", slow_stack.gateway_url],
        env={"VDO_HOME": str(slow_stack.stack.home), "VDO_TOKEN": slow_stack.token},
    )
    assert result.exit_code == 0
    assert f"vdo show {job_id}" in result.output


def test_logs_without_a_stack_say_what_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["logs", "--api", "http://127.0.0.1:9"],
        env={"VDO_HOME": str(tmp_path), "VDO_NATS_URL": ""},
    )
    assert result.exit_code != 0
    assert "no NATS" in result.output


def test_a_member_cannot_follow_the_log_of_a_job_that_is_not_theirs(
    slow_stack: RunningStack, tmp_path: Path
) -> None:
    job_id = slow_stack.submit("wc not yours", WORD_COUNT)
    with slow_stack.api() as api:
        assert api.post("/api/users", json={"name": "lea", "role": "member"}).status_code == 201
        token = api.post("/api/tokens", json={"user": "lea", "name": "cli"}).json()["token"]
    result = CliRunner().invoke(
        app,
        ["logs", job_id, "--api", slow_stack.gateway_url, "--for", "5"],
        env={"VDO_HOME": str(tmp_path), "VDO_TOKEN": token, "VDO_NATS_URL": NOWHERE},
    )
    assert result.exit_code != 0
    assert "not found" in result.output.lower()
    assert "[run_tests sandbox]" not in result.output


def test_the_live_log_stops_after_the_time_given(slow_stack: RunningStack, tmp_path: Path) -> None:
    job_id = slow_stack.submit("wc for a while", WORD_COUNT)
    result = CliRunner().invoke(
        app,
        ["logs", job_id, "--api", slow_stack.gateway_url, "--for", "2"],
        env={"VDO_HOME": str(tmp_path), "VDO_TOKEN": slow_stack.token, "VDO_NATS_URL": NOWHERE},
    )
    assert result.exit_code == 0, result.output
    # Stopped while the job went on (each step takes the scripted model a second).
    assert slow_stack.job(job_id)["status"] not in ("completed", "failed", "cancelled")
    slow_stack.wait_for(job_id, timeout=90)
