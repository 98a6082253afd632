"""The built-in scripted model's demo jobs, end to end on the real stack, on each sandbox
backend: planned, built, their tests run and passed in the sandbox (dependencies resolved as
wheels, no network inside), reviewed, and the result started and found up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import create_database, drop_database
from tests.harness import RunningStack, start_stack

pytestmark = pytest.mark.e2e

DEMOS = {
    "todo": "a FastAPI todo API with SQLite and tests",
    "wordcount": "a command-line word-count tool",
    "csv": "a CSV summary script",
}


@pytest.fixture(scope="module", params=["bubblewrap", "docker"])
def demo_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[RunningStack]:
    backend = request.param
    if backend == "docker":
        request.getfixturevalue("docker_image")  # built locally when missing
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp(f"demo-{backend}"),
        url,
        sandbox_backend=backend,
        wheel_cache_dir=tmp_path_factory.getbasetemp() / "wheels",
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


def finished(events: list[dict[str, Any]], step: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        e["data"] for e in events if e["type"] == "StepFinished" and e["data"]["step"] == step
    ]
    return found[-1]


@pytest.mark.parametrize("demo", list(DEMOS))
def test_a_demo_job_completes_with_its_tests_passing_in_the_sandbox(
    demo_stack: RunningStack, demo: str
) -> None:
    backend = demo_stack.stack.settings.sandbox_backend
    job_id = demo_stack.submit(demo, DEMOS[demo])
    events = demo_stack.wait_for(job_id, timeout=170)
    assert events[-1]["type"] == "JobCompleted", [
        (e["type"], e["data"].get("reason") or e["data"].get("summary")) for e in events[-3:]
    ]
    tests = finished(events, "run_tests")
    assert tests["outcome"] == "passed"
    assert tests["details"]["passed"] >= 3
    assert tests["details"]["failed"] == 0
    assert tests["details"]["backend"] == backend
    started = finished(events, "sandbox_run")
    assert started["outcome"] == "up"
    assert started["details"]["backend"] == backend
    plan = finished(events, "plan")
    assert plan["summary"].startswith("[scripted model]")


def test_a_job_that_is_not_a_demo_fails_clearly_without_a_model(demo_stack: RunningStack) -> None:
    job_id = demo_stack.submit("game", "a 3D space shooter with multiplayer")
    events = demo_stack.wait_for(job_id, timeout=60)
    assert events[-1]["type"] == "JobFailed"
    assert "no model configured" in events[-1]["data"]["reason"]


def test_the_api_says_every_phase_runs_on_the_scripted_model(demo_stack: RunningStack) -> None:
    with demo_stack.api() as api:
        body = api.get("/api/admin/providers").json()
    assert body["scripted"]
    assert not any(p["configured"] for p in body["providers"])
    assert {p["phase"] for p in body["phases"]} == {"planner", "builder", "tester", "reviewer"}
    assert all(p["scripted"] and p["reported_at"] for p in body["phases"])
