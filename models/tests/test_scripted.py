"""The built-in scripted model: its replies match the phase schemas, and its demo projects work.

The demo projects are written to a temporary directory and their tests run for real with this
interpreter (``python3`` in a command becomes `sys.executable`); the todo API is started with
uvicorn on a free port and asked for its todos.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from vdo_models.interface import Message, ModelClient, ModelRequest, ProviderError
from vdo_models.phases import SCHEMAS
from vdo_models.scripted import MODEL, ScriptedModelClient, find_demo

TASKS = {
    "todo": "FastAPI todo API with SQLite and tests",
    "wordcount": "command-line word-count tool",
    "csvsummary": "CSV summary script",
}
DEMOS = sorted(TASKS)
LABEL = "VDO's built-in scripted model"


@dataclass(frozen=True)
class Project:
    directory: Path
    plan: dict[str, Any]
    build: dict[str, Any]
    tests: dict[str, Any]

    def file(self, path: str) -> str:
        for file in self.build["files"]:
            if file["path"] == path:
                return str(file["content"])
        raise KeyError(path)


def request(phase: str, task: str, attempt: int = 1) -> ModelRequest:
    return ModelRequest(
        phase=phase,
        system=f"You are the {phase} of a software pipeline. Answer with JSON.",
        messages=(Message("user", f"The job: {task}"),),
        json_schema=SCHEMAS[phase],
        task=task,
        attempt=attempt,
    )


async def ask(phase: str, task: str, attempt: int = 1) -> dict[str, Any]:
    """One phase's reply, checked against the phase's schema."""
    reply = await ScriptedModelClient().complete(MODEL, request(phase, task, attempt))
    document: dict[str, Any] = json.loads(reply.text)
    Draft202012Validator(SCHEMAS[phase]).validate(document)
    return document


async def project(task: str, attempt: int, directory: Path) -> Project:
    """The plan, the build and the tests of one attempt, written out under `directory`."""
    plan = await ask("planner", task, attempt)
    build = await ask("builder", task, attempt)
    tests = await ask("tester", task, attempt)
    built = {file["path"] for file in build["files"]}
    tested = {file["path"] for file in tests["files"]}
    assert not built & tested, "the tester's files must not replace the builder's"
    assert all(path.startswith("tests/") for path in tested)
    for file in build["files"] + tests["files"]:
        target = directory / file["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file["content"], encoding="utf-8")
    return Project(directory, plan, build, tests)


def local(command: list[str]) -> list[str]:
    return [sys.executable if part == "python3" else part for part in command]


def environment() -> dict[str, str]:
    """This environment, without the outer test run's pytest settings or plugins."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def run_tests(built: Project) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        local(built.tests["command"]),
        cwd=built.directory,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def passed(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- every phase, every demo -------------------------------------------------------------------


@pytest.mark.parametrize("demo", DEMOS)
async def test_every_reply_matches_its_phase_schema(demo: str) -> None:
    for extra in ("", " (repair loop)", " (review loop)", " (repair loop, then review loop)"):
        for attempt in (1, 2, 3):
            for phase in SCHEMAS:
                await ask(phase, TASKS[demo] + extra, attempt)


@pytest.mark.parametrize("demo", DEMOS)
async def test_the_demo_builds_and_its_tests_pass(demo: str, tmp_path: Path) -> None:
    built = await project(TASKS[demo], 1, tmp_path)
    result = run_tests(built)
    assert passed(result), output(result)
    assert built.plan["runtime"] == "python3"
    assert built.plan["summary"].startswith("[scripted model]")
    assert built.plan["files"] == [file["path"] for file in built.build["files"]]
    review = await ask("reviewer", TASKS[demo])
    assert review["verdict"] == "approve"
    assert "scripted model" in review["summary"]


@pytest.mark.parametrize("demo", DEMOS)
async def test_code_files_say_who_wrote_them(demo: str) -> None:
    for task in (TASKS[demo], f"{TASKS[demo]}: repair loop, then review loop"):
        for attempt in (1, 2, 3):
            build = await ask("builder", task, attempt)
            tests = await ask("tester", task, attempt)
            for file in build["files"] + tests["files"]:
                if file["path"].endswith(".py"):
                    head = "\n".join(file["content"].splitlines()[:3])
                    assert LABEL in head, file["path"]
                    compile(file["content"], file["path"], "exec")
            assert "scripted model" in build["notes"]
            assert "scripted model" in tests["notes"]


async def test_the_todo_plan_runs_uvicorn_on_port_8000() -> None:
    plan = await ask("planner", TASKS["todo"])
    assert plan["run_command"] == [
        *("python3", "-m", "uvicorn", "app:app"),
        *("--host", "127.0.0.1", "--port", "8000"),
    ]
    assert plan["ready_check"] == {"kind": "port", "port": 8000}
    assert {"fastapi", "httpx", "pytest", "uvicorn"} <= {
        dependency.split(">=")[0] for dependency in plan["dependencies"]
    }
    build = await ask("builder", TASKS["todo"])
    requirements = next(f["content"] for f in build["files"] if f["path"] == "requirements.txt")
    assert requirements.split() == plan["dependencies"]


async def test_the_todo_api_starts_and_answers(tmp_path: Path) -> None:
    built = await project(TASKS["todo"], 1, tmp_path)
    port = free_port()
    command = [str(port) if part == "8000" else part for part in local(built.plan["run_command"])]
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=environment(), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}/todos"
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                try:
                    response = httpx.get(url, timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the todo API did not answer in 30 s"
                    time.sleep(0.1)
            assert response.status_code == 200
            assert response.json() == []
            created = httpx.post(url, json={"title": "try the demo"}, timeout=5)
            assert created.status_code == 201
            assert httpx.get(url, timeout=5).json() == [created.json()]
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    # The database's default place is the working directory.
    assert (tmp_path / "todos.db").is_file()


@pytest.mark.parametrize("demo", ["wordcount", "csvsummary"])
async def test_the_command_line_demos_run_and_pass_their_ready_check(
    demo: str, tmp_path: Path
) -> None:
    built = await project(TASKS[demo], 1, tmp_path)
    check = built.plan["ready_check"]
    assert check["kind"] == "output"
    result = subprocess.run(
        local(built.plan["run_command"]),
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, output(result)
    assert check["text"] in result.stdout


# --- the demo loops ----------------------------------------------------------------------------


@pytest.mark.parametrize("demo", DEMOS)
async def test_repair_loop_first_attempt_fails_its_tests_second_passes(
    demo: str, tmp_path: Path
) -> None:
    task = f"{TASKS[demo]}, to show the repair loop"
    first = await project(task, 1, tmp_path / "1")
    failed = run_tests(first)
    assert not passed(failed), "attempt 1 of the repair-loop demo should fail its tests"
    assert "FAIL" in output(failed).upper()
    assert "deliberate bug" in first.build["notes"]

    second = await project(task, 2, tmp_path / "2")
    result = run_tests(second)
    assert passed(result), output(result)
    assert second.build["files"] != first.build["files"]
    assert second.tests == first.tests  # the tests stay; the code is what was wrong
    assert (await ask("reviewer", task, 2))["verdict"] == "approve"


REVIEW_CHANGES = {
    "todo": ("app.py", "title must not be empty", "empty titles"),
    "wordcount": ("wordcount.py", "except OSError", "error message"),
    "csvsummary": ("csvsummary.py", "there is no header row", "error message"),
}


@pytest.mark.parametrize("demo", DEMOS)
async def test_review_loop_asks_for_a_change_and_the_next_build_applies_it(
    demo: str, tmp_path: Path
) -> None:
    task = f"{TASKS[demo]} (review loop demo)"
    path, change, topic = REVIEW_CHANGES[demo]
    first = await project(task, 1, tmp_path / "1")
    result = run_tests(first)
    assert passed(result), output(result)
    review = await ask("reviewer", task, 1)
    assert review["verdict"] == "request_changes"
    assert [comment["path"] for comment in review["comments"]] == [path]
    assert topic in review["comments"][0]["comment"].lower()
    assert change not in first.file(path)

    second = await project(task, 2, tmp_path / "2")
    assert change in second.file(path)
    assert "applies the review's comment" in second.build["notes"]
    result = run_tests(second)
    assert passed(result), output(result)
    # The tester checks the change too.
    tests = "".join(file["content"] for file in second.tests["files"])
    assert tests.count("def test_") > "".join(
        file["content"] for file in first.tests["files"]
    ).count("def test_")
    assert (await ask("reviewer", task, 2))["verdict"] == "approve"


async def test_repair_loop_then_review_loop(tmp_path: Path) -> None:
    task = "word count tool: show the repair loop and the review loop"
    verdicts = []
    for attempt in (1, 2, 3):
        built = await project(task, attempt, tmp_path / str(attempt))
        verdicts.append(
            (passed(run_tests(built)), (await ask("reviewer", task, attempt))["verdict"])
        )
    assert verdicts[1:] == [(True, "request_changes"), (True, "approve")]
    assert verdicts[0][0] is False


# --- recognising the demos, refusing the rest ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "demo"),
    [
        ("FastAPI todo API with SQLite and tests", "todo"),
        ("A TODO REST API", "todo"),
        ("to-do list api in fastapi", "todo"),
        ("word count", "wordcount"),
        ("a wordcount CLI", "wordcount"),
        ("Word-Count tool for text files", "wordcount"),
        ("write a wc clone", "wordcount"),
        ("CSV summary script", "csvsummary"),
        ("summarise a csv file", "csvsummary"),
        ("csv statistics", "csvsummary"),
        ("stats for a CSV", "csvsummary"),
        ("a todo app for the terminal", None),
        ("an API for invoices", None),
        ("awc", None),
        ("parse a csv file", None),
        ("hello world", None),
        ("", None),
    ],
)
def test_which_demo_a_job_asks_for(text: str, demo: str | None) -> None:
    found = find_demo(text)
    assert (found.name if found else None) == demo


@pytest.mark.parametrize("phase", sorted(SCHEMAS))
@pytest.mark.parametrize("task", ["a greeting program", "show the repair loop", ""])
async def test_other_jobs_are_refused(phase: str, task: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await ScriptedModelClient().complete(MODEL, request(phase, task))
    error = caught.value
    assert error.kind == "no_model"
    assert error.retryable is False
    message = str(error)
    assert message.startswith("no model configured: the built-in scripted model only handles")
    for name in ("todo", "word-count", "CSV summary", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        assert name in message


async def test_an_unknown_phase_is_refused() -> None:
    task_request = ModelRequest(phase="deployer", system="", messages=(), task=TASKS["todo"])
    with pytest.raises(ProviderError) as caught:
        await ScriptedModelClient().complete(MODEL, task_request)
    assert caught.value.retryable is False


# --- the client itself -------------------------------------------------------------------------


async def test_replies_are_streamed_in_pieces() -> None:
    pieces: list[str] = []

    async def sink(text: str) -> None:
        pieces.append(text)

    reply = await ScriptedModelClient().complete(MODEL, request("builder", TASKS["todo"]), sink)
    assert len(pieces) > 1
    assert "".join(pieces) == reply.text


async def test_reply_labels_and_usage() -> None:
    client: ModelClient = ScriptedModelClient()
    assert client.provider == "scripted"
    asked = request("planner", TASKS["csvsummary"])
    reply = await client.complete(MODEL, asked)
    assert reply.model == "scripted-demo-1"
    assert reply.usage.output_tokens == math.ceil(len(reply.text) / 4)
    assert reply.usage.input_tokens == math.ceil(len(asked.prompt_text()) / 4)
    assert reply.usage.cached_input_tokens == 0
    assert reply.extra["scripted"] is True
    assert "built-in scripted model" in await client.check()
    await client.close()


async def test_no_delay_unless_asked() -> None:
    started = time.monotonic()
    await ScriptedModelClient().complete(MODEL, request("tester", TASKS["wordcount"]))
    quick = time.monotonic() - started
    started = time.monotonic()
    slow = ScriptedModelClient(delay_seconds=1.0)
    await slow.complete(MODEL, request("tester", TASKS["wordcount"]))
    assert time.monotonic() - started >= 1.0 > quick
