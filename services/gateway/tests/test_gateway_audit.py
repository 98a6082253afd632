"""A job's audit through the API (`GET /api/jobs/{id}/audit`) on a real PostgreSQL, from
histories written straight into the store: the plain text `vdo audit` prints (who submitted it,
every step, every model call with its cost), the same as JSON when asked, and 404 for a job that
does not exist or that the caller may not see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi import FastAPI
from services.gateway.tests.apps import Attempt, RanJob, add_user, client, run_job, running_app

from vdo_kernel.accounts import Role
from vdo_kernel.audit import audit, plain_text
from vdo_kernel.blobs import BlobStore
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

FIRST = Attempt(
    files={"wc.py": b"def count(text):\n    return 0\n"},
    tests={"tests/test_wc.py": b"import wc\n"},
    output="F\nFAILED (failures=1)\n",
    tests_pass=False,
    reply="a first try",
)
SECOND = Attempt(
    files={"wc.py": b"def count(text):\n    return len(text.split())\n"},
    tests={"tests/test_wc.py": b"import wc\n"},
    reply="fixed",
)


@pytest.fixture
def settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, nats_url=nats_url, home=tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as running:
        yield running


@pytest.fixture
def ada_job(store: JobStore, settings: Settings) -> RanJob:
    """A member's job whose first attempt's tests fail and whose second's pass."""
    return run_job(store, BlobStore(settings.blobs_dir), [FIRST, SECOND], submitted_by="ada")


async def test_the_audit_tells_the_whole_history_as_text(
    app: FastAPI, store: JobStore, ada_job: RanJob
) -> None:
    add_user(store, "ada", Role.MEMBER)
    async with client(app) as admin:
        response = await admin.get(f"/api/jobs/{ada_job.id}/audit")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    text = response.text
    # Exactly what `vdo audit` prints off a terminal.
    assert text == plain_text(audit(store.job_events(ada_job.id)))
    lines = text.splitlines()
    assert lines[0] == f"job          {ada_job.id}"
    assert any(line.startswith("submitted    by ada at ") for line in lines)
    assert any(line.startswith("status       completed after 2 attempt(s)") for line in lines)
    # Every step of both attempts, with its result and worker.
    for step, result in (
        ("planning/plan", "ok"),
        ("building/build", "ok"),
        ("testing/write_tests", "ok"),
        ("testing/run_tests", "failed"),
        ("testing/run_tests", "passed"),
        ("reviewing/review", "approved"),
        ("sandboxing/sandbox_run", "up"),
    ):
        assert any(f"{step}  {result}  by test-worker" in line for line in lines), step
    # Both model calls, with their costs, and what they came to together.
    assert "model calls: $0.002 of $" in text
    calls = [line for line in lines if "builder try 1 on scripted:demo" in line]
    assert len(calls) == 2, calls
    assert all("10 in / 20 out / 0 cached tokens, $0.001, 12 ms" in line for line in calls)
    # Every event, in order, from the submission to the end.
    history = [line for line in lines if line.startswith("  #")]
    assert len(history) == len(store.job_events(ada_job.id))
    assert "JobSubmitted: submitted by ada: 'word count'" in history[0]
    assert "JobCompleted: job completed after 2 attempt(s)" in history[-1]


async def test_the_audit_as_json_when_asked(app: FastAPI, store: JobStore, ada_job: RanJob) -> None:
    async with client(app) as admin:
        by_query = await admin.get(f"/api/jobs/{ada_job.id}/audit", params={"format": "json"})
        by_accept = await admin.get(
            f"/api/jobs/{ada_job.id}/audit", headers={"Accept": "application/json"}
        )
        text_first = await admin.get(
            f"/api/jobs/{ada_job.id}/audit",
            headers={"Accept": "text/plain, application/json;q=0.5"},
        )
        text_asked = await admin.get(
            f"/api/jobs/{ada_job.id}/audit",
            params={"format": "text"},
            headers={"Accept": "application/json"},
        )
    assert by_query.status_code == by_accept.status_code == 200, by_query.text
    assert by_query.headers["content-type"] == "application/json"
    body = by_query.json()
    assert by_accept.json() == body
    assert text_first.headers["content-type"].startswith("text/plain")
    assert text_asked.headers["content-type"].startswith("text/plain")
    events = store.job_events(ada_job.id)
    assert (body["job_id"], body["submitted_by"], body["title"]) == (
        str(ada_job.id),
        "ada",
        "word count",
    )
    assert body["status"] == "completed after 2 attempt(s)"
    assert (body["first_position"], body["last_position"]) == (
        events[0].position,
        events[-1].position,
    )
    assert [(s["step"], s["attempt"], s["result"]) for s in body["steps"]] == [
        ("plan", 1, "ok"),
        ("build", 1, "ok"),
        ("write_tests", 1, "ok"),
        ("run_tests", 1, "failed"),
        ("build", 2, "ok"),
        ("write_tests", 2, "ok"),
        ("run_tests", 2, "passed"),
        ("review", 2, "approved"),
        ("sandbox_run", 2, "up"),
    ]
    assert [(c["step"], c["attempt"], c["route"], c["cost_usd"]) for c in body["model_calls"]] == [
        ("build", 1, "scripted:demo", 0.001),
        ("build", 2, "scripted:demo", 0.001),
    ]
    assert body["cost_usd"] == pytest.approx(0.002)
    assert [e["position"] for e in body["history"]] == [e.position for e in events]
    assert [e["type"] for e in body["history"]] == [e.type for e in events]
    assert body["history"][0]["data"]["submitted_by"] == "ada"
    manifests = {(a["attempt"], a["name"]): a["sha256"] for a in body["artifacts"]}
    assert manifests[(1, "files")] == ada_job.manifests[0]["files"]
    assert manifests[(2, "tests")] == ada_job.manifests[1]["tests"]


async def test_the_audit_is_seen_as_the_job_is(
    app: FastAPI, store: JobStore, ada_job: RanJob
) -> None:
    ada = add_user(store, "ada", Role.MEMBER)
    bob = add_user(store, "bob", Role.MEMBER)
    vic = add_user(store, "vic", Role.VIEWER)
    unknown = uuid4()
    async with client(app, ada) as as_ada, client(app, bob) as as_bob, client(app, vic) as as_vic:
        assert (await as_ada.get(f"/api/jobs/{ada_job.id}/audit")).status_code == 200
        assert (await as_vic.get(f"/api/jobs/{ada_job.id}/audit?format=json")).status_code == 200
        for api, job_id in ((as_bob, ada_job.id), (as_ada, unknown)):
            for output in ("text", "json"):
                response = await api.get(f"/api/jobs/{job_id}/audit", params={"format": output})
                assert response.status_code == 404, response.text
                assert response.json() == {"detail": f"job {job_id} not found"}
        bad = await as_ada.get(f"/api/jobs/{ada_job.id}/audit", params={"format": "xml"})
        assert bad.status_code == 422
        assert "format" in bad.text
        assert (await as_ada.get("/api/jobs/not-a-job/audit")).status_code == 422
