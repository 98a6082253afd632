"""A job submitted through the API goes through every phase, in order, on the real stack."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
from tests.harness import WORD_COUNT, RunningStack

STEPS = ["plan", "build", "write_tests", "run_tests", "review", "sandbox_run"]
AI_STEPS = {"plan", "build", "write_tests", "review"}
PHASES = ["planning", "building", "testing", "testing", "reviewing", "sandboxing"]


def step_trail(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["data"].get("step")) for e in events]


def assert_one_event_per_step(events: list[dict[str, Any]], attempts: int = 1) -> None:
    counts = Counter(step_trail(events))
    for step in STEPS:
        expected = 1 if step == "plan" else attempts
        assert counts[("StepStarted", step)] == expected, (step, counts)
        assert counts[("StepFinished", step)] == expected, (step, counts)
    assert counts[("JobCompleted", None)] == 1


def test_a_job_reaches_completed_with_every_phase_in_order(running_stack: RunningStack) -> None:
    job_id = running_stack.submit("hello", WORD_COUNT)
    events = running_stack.wait_for(job_id)
    # Queued, then admitted by the scheduler (which names the step it makes due).
    expected: list[tuple[str, str | None]] = [("JobSubmitted", None), ("JobAdmitted", "plan")]
    for step in STEPS:
        expected.append(("StepStarted", step))
        if step in AI_STEPS:  # one model call each, bracketed
            expected += [("ModelCallStarted", step), ("ModelCallFinished", step)]
        expected.append(("StepFinished", step))
    expected.append(("JobCompleted", None))
    assert step_trail(events) == expected
    assert [e["data"]["phase"] for e in events if e["type"] == "StepStarted"] == PHASES
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["correlation_id"] == job_id for e in events)

    job = running_stack.job(job_id)
    assert job["status"] == "completed"
    assert job["status_label"] == "ready for review"
    assert job["attempt"] == 1


def test_twenty_jobs_at_once_all_complete_with_one_event_per_step(
    running_stack: RunningStack,
) -> None:
    async def submit_all() -> list[str]:
        async with httpx.AsyncClient(
            base_url=running_stack.gateway_url,
            timeout=30,
            headers={"Authorization": f"Bearer {running_stack.token}"},
        ) as api:
            responses = await asyncio.gather(
                *(
                    api.post("/api/jobs", json={"title": f"job {i}", "description": WORD_COUNT})
                    for i in range(20)
                )
            )
        assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
        return [r.json()["id"] for r in responses]

    job_ids = asyncio.run(submit_all())
    assert len(set(job_ids)) == 20
    for job_id in job_ids:
        events = running_stack.wait_for(job_id, timeout=120)
        assert_one_event_per_step(events)


def test_failing_tests_send_the_job_back_to_the_builder_with_feedback(
    running_stack: RunningStack,
) -> None:
    # The scripted builder's first attempt has a bug when asked to show the repair loop.
    job_id = running_stack.submit("repair", WORD_COUNT + ", to show the repair loop")
    events = running_stack.wait_for(job_id)
    finished = Counter(e["data"]["step"] for e in events if e["type"] == "StepFinished")
    assert finished == {
        "plan": 1,
        "build": 2,
        "write_tests": 2,
        "run_tests": 2,
        "review": 1,
        "sandbox_run": 1,
    }
    attempt = _first(events, "AttemptStarted")
    assert attempt["data"]["attempt"] == 2
    assert "FAIL" in attempt["data"]["feedback"] or "tests failed" in attempt["data"]["feedback"]
    first_tests = [
        e for e in events if e["type"] == "StepFinished" and e["data"]["step"] == "run_tests"
    ]
    assert [e["data"]["outcome"] for e in first_tests] == ["failed", "passed"]
    assert running_stack.job(job_id)["status"] == "completed"


def _first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def test_read_models_rebuilt_from_the_log_equal_the_live_ones(running_stack: RunningStack) -> None:
    import psycopg

    from vdo_kernel import readmodels
    from vdo_kernel.store import JobStore
    from vdo_projector.projection import checksums, rebuild

    for job_id in [running_stack.submit(f"rebuild {i}") for i in range(3)]:
        running_stack.wait_for(job_id)
    store = JobStore(running_stack.database_url, pool_size=1)
    try:
        deadline = time.monotonic() + 30
        with psycopg.connect(running_stack.database_url) as conn:
            while readmodels.projector_position(conn) < store.max_position():
                assert time.monotonic() < deadline, "the projector did not catch up"
                time.sleep(0.1)
    finally:
        store.close()
    live = checksums(running_stack.database_url)
    summary = rebuild(running_stack.database_url)
    assert summary.events_applied > 0
    assert summary.checksums == live
    assert checksums(running_stack.database_url) == live
