"""`vdo submit --model` and `vdo show` against a real gateway (served on a free port, on a real
PostgreSQL and NATS): routes chosen at submission, bad ones refused clearly, and a job's cost and
model calls shown, the scripted model labelled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import uvicorn
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN
from typer.testing import CliRunner, Result

from vdo_cli.embedded import free_port
from vdo_cli.main import EXIT_FAILED, app
from vdo_gateway.app import create_app
from vdo_kernel.bootstrap import TOKEN_FILE, write_secret
from vdo_kernel.domain import Outcome, Step
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection


@pytest.fixture
def gateway_url(
    database_url: str, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The gateway app served by uvicorn in a thread, as `vdo up` serves it."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("VDO_API_URL", "VDO_TOKEN", "VDO_PORT", "VDO_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDO_HOME", str(tmp_path / "home"))
    port = free_port()
    # The CLI finds the first admin's token where `vdo up` keeps it (VDO_HOME/admin-token).
    monkeypatch.delenv("VDO_ADMIN_TOKEN", raising=False)
    write_secret(tmp_path / "home" / TOKEN_FILE, ADMIN_TOKEN + "\n")
    settings = Settings(
        database_url=database_url,
        nats_url=nats_url,
        home=tmp_path / "gw",
        admin_token=SecretStr(ADMIN_TOKEN),
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the gateway did not start"
            assert time.monotonic() < deadline, "the gateway did not start in time"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


# What the store holds before any command: the first admin and its token, which the gateway makes
# when it starts with VDO_ADMIN_TOKEN.
FIRST_ADMIN_EVENTS = 2


def vdo(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--api", url])


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_submit_sends_the_chosen_models(gateway_url: str, store: JobStore) -> None:
    result = vdo(
        gateway_url,
        "submit",
        "routed",
        "a todo API",
        "--model",
        "planner=anthropic:claude-sonnet-4-5,openai:gpt-4.1",
        "-m",
        "reviewer=gemini:gemini-2.5-pro",
        "--budget",
        "2.5",
        "--max-attempts",
        "2",
    )

    assert result.exit_code == 0, result.output
    job = store.get(UUID(result.output.strip()))
    assert job.routes == {
        "planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"],
        "reviewer": ["google:gemini-2.5-pro"],
    }
    assert (job.budget_usd, job.max_attempts) == (2.5, 2)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("planner", "is not PHASE=provider:model"),
        ("sandbox=openai:gpt-4.1", "'sandbox' is not a phase with a model"),
        ("planner=gpt-4.1", "planner: 'gpt-4.1' is not provider:model"),
    ],
)
def test_a_model_option_that_cannot_be_a_route_is_a_usage_error(
    gateway_url: str, store: JobStore, option: str, message: str
) -> None:
    result = vdo(gateway_url, "submit", "bad", "bad models", "--model", option)

    assert result.exit_code == 2
    # The message comes in a box, wrapped.
    output = one_line(result.output.replace("│", " "))
    assert "Invalid value for '--model'" in output
    assert message in output
    assert store.max_position() == FIRST_ADMIN_EVENTS


def test_a_route_the_gateway_refuses_is_shown_clearly(gateway_url: str, store: JobStore) -> None:
    result = vdo(gateway_url, "submit", "bad", "bad models", "--model", "tester=mistral:large")

    assert result.exit_code == EXIT_FAILED
    output = one_line(result.output)
    assert output.startswith("error: field 'routes.tester.0': the provider must be one of")
    assert "Traceback" not in result.output
    assert store.max_position() == FIRST_ADMIN_EVENTS


def test_show_gives_the_cost_and_the_model_calls(
    gateway_url: str, store: JobStore, projection: Projection
) -> None:
    submitted = vdo(gateway_url, "submit", "shown", "a todo API", "-m", "builder=scripted:demo")
    assert submitted.exit_code == 0, submitted.output
    job_id = UUID(submitted.output.strip())
    job = store.get(job_id)
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
    job.finish_step(
        due,
        outcome=Outcome.OK,
        summary="wrote 2 file(s)",
        causation_id="test",
        details={"model": "scripted (built-in; no AI model configured)"},
    )
    store.save(job)

    for source in ("store", "read models"):
        if source == "read models":
            projection.catch_up()
        result = vdo(gateway_url, "show", str(job_id))

        assert result.exit_code == 0, result.output
        lines = [one_line(line) for line in result.output.splitlines()]
        assert "cost $0.0125 of $1.00 budget (2 model call(s), 1 failed)" in lines, source
        assert "models builder: scripted:demo" in lines, source
        assert any(
            line.startswith("1 building build ok") and "[scripted model]" in line for line in lines
        ), source
        assert "model calls" in lines, source
        assert (
            "planning/plan 1 1 1 anthropic:claude-sonnet-4-5 error 0 0 0 $0.00 90 ms "
            "429 rate limited" in lines
        ), source
        assert "planning/plan 1 1 2 openai:gpt-4.1 ok 1,500 400 1,000 $0.0125 2.3 s" in lines
        assert any("ModelCallFinished" in line for line in lines), source
