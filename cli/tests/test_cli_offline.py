"""The `vdo` command when no gateway is there: clear messages and exit codes, and the read
models rebuilt straight from the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vdo_cli.client import STACK_FILE
from vdo_cli.embedded import free_port
from vdo_cli.main import EXIT_UNREACHABLE, app


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI with a home of its own and no configuration from the machine it runs on."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("VDO_API_URL", "VDO_DATABASE_URL", "VDO_NATS_URL", "VDO_TOKEN", "VDO_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDO_HOME", str(tmp_path / "home"))
    return CliRunner()


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    "command",
    [
        ["jobs"],
        ["show", "9b2e8a4e-0000-4000-8000-000000000000"],
        ["submit", "title", "description"],
        ["submit", "title", "description", "--watch"],
        ["watch", "9b2e8a4e-0000-4000-8000-000000000000"],
    ],
)
def test_a_gateway_that_is_not_running_is_reported_as_not_reachable(
    runner: CliRunner, command: list[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    result = runner.invoke(app, [*command, "--api", url])

    assert result.exit_code == EXIT_UNREACHABLE
    output = one_line(result.output)
    assert f"the gateway is not reachable at {url}" in output
    assert "vdo up" in output
    assert "Traceback" not in result.output


def test_the_gateway_url_comes_from_the_environment(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("VDO_API_URL", url)

    result = runner.invoke(app, ["jobs"])

    assert result.exit_code == EXIT_UNREACHABLE
    assert f"not reachable at {url}" in one_line(result.output)


def test_a_stale_stack_file_is_named_when_its_gateway_does_not_answer(
    runner: CliRunner, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = f"http://127.0.0.1:{free_port()}"
    (home / STACK_FILE).write_text(json.dumps({"gateway_url": url}), encoding="utf-8")

    result = runner.invoke(app, ["jobs"])

    assert result.exit_code == EXIT_UNREACHABLE
    assert f"not reachable at {url} (address from {home / STACK_FILE})" in one_line(result.output)


def test_a_gateway_url_that_is_not_http_is_refused_clearly(runner: CliRunner) -> None:
    result = runner.invoke(app, ["jobs", "--api", "ftp://127.0.0.1:21"])

    assert result.exit_code == 1
    assert "is not an http:// or https:// URL" in one_line(result.output)


def test_bad_configuration_is_named(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VDO_PORT", "not-a-port")

    result = runner.invoke(app, ["jobs"])

    assert result.exit_code == 1
    assert "invalid configuration: VDO_PORT" in one_line(result.output)


def test_rebuild_without_a_database_says_to_start_the_stack(runner: CliRunner) -> None:
    result = runner.invoke(app, ["projections", "rebuild"])

    assert result.exit_code == 1
    output = one_line(result.output)
    assert "VDO_DATABASE_URL is not set and no running stack was found" in output
    assert "is the stack running? start it with `vdo up`" in output


def test_rebuild_replays_the_log_of_the_configured_database(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("VDO_DATABASE_URL", database_url)

    result = runner.invoke(app, ["projections", "rebuild"])

    assert result.exit_code == 0, result.output
    assert "events_applied" in result.output
    assert "position" in result.output


def test_rebuild_finds_the_database_of_the_running_stack(
    runner: CliRunner, tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / STACK_FILE).write_text(json.dumps({"database_url": database_url}), encoding="utf-8")

    result = runner.invoke(app, ["projections", "rebuild"])

    assert result.exit_code == 0, result.output
    assert "events_applied" in result.output


def test_rebuild_of_a_database_that_is_not_there_fails_clearly(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VDO_DATABASE_URL", f"postgresql://vdo:s3cret@127.0.0.1:{free_port()}/vdo")

    result = runner.invoke(app, ["projections", "rebuild"])

    assert result.exit_code == 1
    assert "rebuilding the read models failed" in one_line(result.output)
    assert "s3cret" not in result.output
