"""`vdo templates ...` and `vdo submit --template` without a gateway: usage errors said before
anything is sent, an unreachable gateway said clearly, and how templates are shown. (The real
stack drives them in tests/test_results_api.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from vdo_cli.embedded import free_port
from vdo_cli.main import EXIT_UNREACHABLE, app
from vdo_cli.templates import template_detail, templates_table


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in ("VDO_API_URL", "VDO_DATABASE_URL", "VDO_NATS_URL", "VDO_TOKEN", "VDO_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VDO_HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.mark.parametrize("args", [[], ["only a title"]])
def test_a_job_needs_a_title_and_a_description_or_a_template(
    runner: CliRunner, args: list[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["submit", *args, "--api", url])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())
    assert "Usage: vdo submit [OPTIONS] [TITLE] [DESCRIPTION]" in said
    assert "give a TITLE and a DESCRIPTION, or a --template that gives them" in said


@pytest.mark.parametrize(
    "command",
    [
        ["templates", "list"],
        ["templates", "show", "todo-api"],
        ["templates", "create", "--name", "x", "--from-template", "todo-api"],
        ["templates", "delete", "x"],
        ["submit", "--template", "todo-api"],
    ],
)
def test_an_unreachable_gateway_is_said(runner: CliRunner, command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, [*command, "--api", url])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "the gateway is not reachable" in " ".join(result.output.split())


def test_templates_are_shown_with_their_kind_and_defaults() -> None:
    console = Console(width=200, record=True)
    builtin = {
        "name": "todo-api",
        "title": "FastAPI todo API",
        "builtin": True,
        "scripted": True,
        "summary": "Demo job",
    }
    mine = {
        "name": "mine",
        "id": "0f0e0d0c-0000-4000-8000-000000000000",
        "title": "[b]not markup[/b]",
        "builtin": False,
        "created_by": "ada",
        "routes": {"planner": ["openai:gpt-4.1"]},
        "budget_usd": 0.5,
        "from_template": "todo-api",
    }
    console.print(templates_table([builtin, mine]))
    console.print(template_detail(mine))
    text = console.export_text()
    assert "built-in (scripted demo)" in text
    assert "[b]not markup[/b]" in text
    assert "planner: openai:gpt-4.1" in text
    assert "$0.5" in text
    assert "max attempts  the deployment's default" in text
    assert "made from     todo-api" in text
