"""Templates, results and logs on the real stack, as a user drives them: a demo job submitted
from a built-in template runs to the end; its file tree, one file and the zip hold the program
and its tests; a "repair loop" demo job's two attempts differ where the bug was fixed; the log
reads back by phase; and the CLI makes, lists and submits templates."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

import pytest
from tests.harness import RunningStack
from typer.testing import CliRunner, Result

from vdo_cli.main import app

pytestmark = pytest.mark.e2e


def get(stack: RunningStack, path: str, **params: Any) -> Any:
    with stack.api() as api:
        response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def submit_from(stack: RunningStack, template: str) -> str:
    with stack.api() as api:
        response = api.post("/api/jobs", json={"template": template})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def completed(stack: RunningStack, job_id: str) -> list[dict[str, Any]]:
    events = stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobCompleted", [e["type"] for e in events]
    return events


def test_a_demo_job_from_a_built_in_template_and_its_results(
    running_stack: RunningStack,
) -> None:
    job_id = submit_from(running_stack, "word-count")
    completed(running_stack, job_id)
    job = running_stack.job(job_id)
    assert job["title"] == get(running_stack, "/api/templates/word-count")["title"]

    tree = get(running_stack, f"/api/jobs/{job_id}/artifacts")
    assert (tree["attempt"], tree["steps"]) == (1, ["build", "write_tests"])
    steps = {f["path"]: f["step"] for f in tree["items"]}
    assert steps["wordcount.py"] == "build"
    assert steps["tests/test_wordcount.py"] == "write_tests"

    with running_stack.api() as api:
        program = api.get(f"/api/jobs/{job_id}/artifacts/file", params={"path": "wordcount.py"})
        assert program.status_code == 200
        assert program.headers["content-type"].startswith("text/plain")
        assert "def count" in program.text
        hostile = api.get(f"/api/jobs/{job_id}/artifacts/file", params={"path": "../../etc/passwd"})
        assert hostile.status_code == 400
        archive = api.get(f"/api/jobs/{job_id}/artifacts.zip")
        assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert zipped.namelist() == [f["path"] for f in tree["items"]]
        assert zipped.read("wordcount.py") == program.content
        assert b"unittest" in zipped.read("tests/test_wordcount.py")

    testing = get(running_stack, f"/api/jobs/{job_id}/logs", phase="testing")
    assert {line["phase"] for line in testing["items"]} == {"testing"}
    assert any(line["stream"] == "sandbox" for line in testing["items"])
    assert any(line["text"].startswith("run_tests passed") for line in testing["items"])
    replies = get(running_stack, f"/api/jobs/{job_id}/logs", phase="planning", include="replies")
    assert any(line["stream"] == "model" and line["line"] for line in replies["items"])


def test_the_repair_loop_demo_differs_between_attempts_where_the_bug_was(
    running_stack: RunningStack,
) -> None:
    job_id = submit_from(running_stack, "repair-loop-demo")
    completed(running_stack, job_id)
    diff = get(running_stack, f"/api/jobs/{job_id}/diff")
    assert (diff["from_attempt"], diff["to_attempt"]) == (1, 2)
    by_path = {item["path"]: item for item in diff["items"]}
    fix = by_path["wordcount.py"]
    assert fix["change"] == "modified"
    lines = fix["diff"].splitlines()
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert any('words=len(text.split(" "))' in line for line in removed), fix["diff"]
    assert any("words=len(text.split())" in line for line in added), fix["diff"]

    first = get(running_stack, f"/api/jobs/{job_id}/logs", phase="testing", attempt=1)
    output = [line["text"] for line in first["items"] if line["stream"] == "sandbox"]
    assert any("FAIL" in text for text in output), output
    with running_stack.api() as api:
        unknown = api.get(f"/api/jobs/{job_id}/artifacts", params={"attempt": 3})
    assert unknown.status_code == 404
    assert "has no attempt 3" in unknown.json()["detail"]


def vdo(stack: RunningStack, *args: str) -> Result:
    return CliRunner().invoke(
        app, [*args, "--api", stack.gateway_url], env={"VDO_TOKEN": stack.token}
    )


def test_templates_through_the_cli(running_stack: RunningStack) -> None:
    listed = vdo(running_stack, "templates", "list", "--builtin")
    assert listed.exit_code == 0, listed.output
    assert "repair-loop-demo" in listed.output
    shown = vdo(running_stack, "templates", "show", "csv-summary")
    assert shown.exit_code == 0, shown.output
    assert "CSV summary script" in shown.output

    job_id = submit_from(running_stack, "word-count")
    made = vdo(
        running_stack,
        "templates",
        "create",
        "--from-job",
        job_id,
        "--name",
        "my-wc",
        "--budget",
        "0.5",
    )
    assert made.exit_code == 0, made.output
    template_id = made.output.strip()
    uuid.UUID(template_id)
    mine = vdo(running_stack, "templates", "list", "--mine")
    assert "my-wc" in mine.output

    submitted = vdo(running_stack, "submit", "--template", "my-wc")
    assert submitted.exit_code == 0, submitted.output
    new_job = submitted.output.strip()
    assert running_stack.job(new_job)["budget_usd"] == 0.5

    refused = vdo(running_stack, "templates", "delete", "word-count")
    assert refused.exit_code == 1
    assert "built in" in refused.output
    unknown = vdo(running_stack, "submit", "--template", "no-such")
    assert unknown.exit_code == 1
    assert "no template named 'no-such'" in unknown.output
    assert vdo(running_stack, "templates", "delete", "my-wc").exit_code == 0
    gone = vdo(running_stack, "templates", "show", template_id)
    assert gone.exit_code == 1
    running_stack.wait_for(job_id, timeout=120)
    running_stack.wait_for(new_job, timeout=120)
