"""Model routes and model calls through the API: routes chosen at submission, a job's calls
(one item per try) and its cost, the same whether the store or the read models answer, and
what every model has cost per day and per model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN

from vdo_gateway.app import create_app
from vdo_gateway.errors import REBUILDING
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection

JOB = {"title": "todo API", "description": "a FastAPI todo API with SQLite and tests"}
ROUTES = {
    "planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"],
    "reviewer": ["google:gemini-2.5-pro"],
}


@pytest.fixture
def settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        home=tmp_path,
        admin_token=SecretStr(ADMIN_TOKEN),
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client,
    ):
        yield client


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


async def submit(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={**JOB, **changes})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def plan_with_a_fallback(store: JobStore, job_id: UUID) -> None:
    """The plan as a service with a router would make it: the main route rate limited, the
    fallback answering; then a repair call left open (running, or interrupted)."""
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
        first, outcome="error", error="429 rate limited", latency_ms=120.0, causation_id="test"
    )
    store.save(job)
    job = store.get(job_id)
    second = job.start_model_call(
        due,
        call=1,
        try_number=2,
        provider="openai",
        model="gpt-4.1",
        reserved_usd=0.05,
        note="fallback after anthropic:claude-sonnet-4-5 failed",
        causation_id="test",
    )
    job.finish_model_call(
        second,
        outcome="ok",
        input_tokens=1500,
        output_tokens=400,
        cached_tokens=1000,
        cache_write_tokens=10,
        cost_usd=0.0125,
        latency_ms=2300.5,
        reply="ab" * 32,
        causation_id="test",
    )
    job.start_model_call(
        due,
        call=2,
        try_number=1,
        provider="openai",
        model="gpt-4.1",
        reserved_usd=0.02,
        note="repair",
        causation_id="test",
    )
    store.save(job)


def finish_plan(store: JobStore, job_id: UUID) -> None:
    job = store.get(job_id)
    due = job.is_due(Step.PLAN)
    assert due is not None
    job.finish_step(
        due,
        outcome=Outcome.OK,
        summary="three endpoints",
        causation_id="test",
        details={"model": "openai:gpt-4.1"},
    )
    store.save(job)


async def test_routes_chosen_at_submission_are_kept_and_shown(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    created = await submit(
        client,
        routes={
            "planner": [" Anthropic:claude-sonnet-4-5 ", "openai:gpt-4.1"],
            "reviewer": ["gemini:gemini-2.5-pro"],
        },
        budget_usd=2.5,
        max_attempts=2,
    )
    # Written the one way: the provider in lower case, gemini as google, no spaces around.
    assert created["routes"] == ROUTES
    assert (created["budget_usd"], created["max_attempts"], created["cost_usd"]) == (2.5, 2, 0)
    assert created["model_calls"]["count"] == 0
    job_id = UUID(created["id"])
    assert store.get(job_id).routes == ROUTES
    (submitted,) = (await client.get(f"/api/jobs/{job_id}/events")).json()["items"]
    assert submitted["data"]["routes"] == ROUTES

    projection.catch_up()
    detail = (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["source"] == "read_model"
    assert detail["routes"] == ROUTES

    plain = await submit(client)
    assert plain["routes"] == {}
    projection.catch_up()
    assert (await client.get(f"/api/jobs/{plain['id']}")).json()["routes"] == {}


async def test_a_jobs_model_calls_and_cost_from_the_store_and_the_read_models(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    job_id = UUID((await submit(client, routes=ROUTES))["id"])
    plan_with_a_fallback(store, job_id)

    # Not projected yet: the store answers, with the same figures.
    early = (await client.get(f"/api/jobs/{job_id}")).json()
    early_calls = (await client.get(f"/api/jobs/{job_id}/calls")).json()
    assert (early["source"], early_calls["source"]) == ("store", "store")

    projection.catch_up()
    detail = (await client.get(f"/api/jobs/{job_id}")).json()
    page = (await client.get(f"/api/jobs/{job_id}/calls")).json()
    assert (detail["source"], page["source"]) == ("read_model", "read_model")

    assert detail["cost_usd"] == early["cost_usd"] == 0.0125
    assert detail["model_calls"] == early["model_calls"]
    assert detail["model_calls"] == {
        "count": 3,
        "open": 1,
        "failed": 1,
        "cost_usd": 0.0125,
        "held_usd": 0.02,
        "input_tokens": 1500,
        "output_tokens": 400,
        "cached_tokens": 1000,
        "cache_write_tokens": 10,
    }
    assert page["items"] == early_calls["items"]
    assert (page["job_id"], page["total"], page["limit"], page["offset"]) == (
        str(job_id),
        3,
        100,
        0,
    )
    rate_limited, answered, running = page["items"]
    assert rate_limited["key"] == f"{job_id}:plan:1:1:1"
    assert (rate_limited["route"], rate_limited["outcome"], rate_limited["error"]) == (
        "anthropic:claude-sonnet-4-5",
        "error",
        "429 rate limited",
    )
    assert (rate_limited["step"], rate_limited["phase"], rate_limited["attempt"]) == (
        "plan",
        "planning",
        1,
    )
    assert (answered["call"], answered["try_number"], answered["route"]) == (1, 2, "openai:gpt-4.1")
    assert answered["note"] == "fallback after anthropic:claude-sonnet-4-5 failed"
    assert (answered["cost_usd"], answered["latency_ms"], answered["reply"]) == (
        0.0125,
        2300.5,
        "ab" * 32,
    )
    assert answered["started_at"] is not None
    assert answered["finished_at"] is not None
    assert (running["call"], running["try_number"], running["note"]) == (2, 1, "repair")
    assert (running["finished_at"], running["outcome"], running["cost_usd"]) == (None, None, None)

    second_page = (await client.get(f"/api/jobs/{job_id}/calls?limit=1&offset=1")).json()
    assert [c["key"] for c in second_page["items"]] == [answered["key"]]
    assert (second_page["total"], second_page["limit"], second_page["offset"]) == (3, 1, 1)

    listed = (await client.get("/api/jobs")).json()["items"]
    assert [(j["id"], j["cost_usd"]) for j in listed] == [(str(job_id), 0.0125)]


async def test_stats_give_the_cost_per_day_and_per_model(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    empty = (await client.get("/api/stats")).json()
    assert (empty["total_cost_usd"], empty["cost_by_day"], empty["cost_by_model"]) == (0, [], [])

    for _ in range(2):
        job_id = UUID((await submit(client))["id"])
        plan_with_a_fallback(store, job_id)
        finish_plan(store, job_id)
    projection.catch_up()

    stats = (await client.get("/api/stats")).json()
    assert stats["total_cost_usd"] == pytest.approx(0.025)
    (today,) = stats["cost_by_day"]
    assert today["day"] == datetime.now(UTC).date().isoformat()
    assert today["calls"] == 4  # finished tries only: the open ones cost nothing yet
    assert today["cost_usd"] == pytest.approx(0.025)
    openai, anthropic = stats["cost_by_model"]
    assert (openai["route"], openai["calls"], openai["failed"]) == ("openai:gpt-4.1", 2, 0)
    assert openai["cost_usd"] == pytest.approx(0.025)
    assert (openai["input_tokens"], openai["output_tokens"], openai["cached_tokens"]) == (
        3000,
        800,
        2000,
    )
    assert (anthropic["provider"], anthropic["model"], anthropic["calls"]) == (
        "anthropic",
        "claude-sonnet-4-5",
        2,
    )
    assert (anthropic["failed"], anthropic["cost_usd"]) == (2, 0)
    for bad in ("0", "367", "many"):
        response = await client.get("/api/stats", params={"days": bad})
        assert response.status_code == 422
        assert "query parameter 'days'" in response.json()["detail"]


async def test_calls_of_unknown_jobs_and_bad_pages(client: httpx.AsyncClient) -> None:
    unknown = uuid4()
    response = await client.get(f"/api/jobs/{unknown}/calls")
    assert (response.status_code, response.json()) == (404, {"detail": f"job {unknown} not found"})
    response = await client.get("/api/jobs/not-a-uuid/calls")
    assert response.status_code == 422
    job_id = (await submit(client))["id"]
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = await client.get(f"/api/jobs/{job_id}/calls", params=params)
        assert response.status_code == 422
        assert "query parameter" in response.json()["detail"]
    page = (await client.get(f"/api/jobs/{job_id}/calls")).json()
    assert (page["items"], page["total"], page["source"]) == ([], 0, "store")


async def test_read_models_of_an_older_version_answer_503_until_rebuilt(
    settings: Settings, database_url: str, store: JobStore, projection: Projection
) -> None:
    job = Job.submit(title="before the upgrade", description="d")
    store.save(job)
    projection.catch_up()
    # The shape version 1 gave them.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE vdo_read.schema_version")
        conn.execute("DROP TABLE vdo_read.model_calls")
        conn.execute("ALTER TABLE vdo_read.jobs DROP COLUMN cost_usd, DROP COLUMN routes")

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client,
    ):
        for path in ("/api/jobs", f"/api/jobs/{job.id}", "/api/stats"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert response.json() == {"detail": REBUILDING}
        # Commands and the history do not need the read models.
        assert (await client.get(f"/api/jobs/{job.id}/events")).status_code == 200
        assert (await client.post("/api/jobs", json=JOB)).status_code == 201

        restarted = Projection(database_url, store)
        try:
            restarted.setup()  # what the projector does when it starts
        finally:
            restarted.close()
        listed = await client.get("/api/jobs")
        assert listed.status_code == 200
        assert listed.json()["total"] == 2
        detail = (await client.get(f"/api/jobs/{job.id}")).json()
        assert (detail["source"], detail["routes"], detail["cost_usd"]) == ("read_model", {}, 0)


async def test_openapi_describes_routes_and_model_calls(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/api/openapi.json")).json()
    models = schema["components"]["schemas"]
    assert {"ModelCallPublic", "ModelCallsPage", "ModelCallsSummary", "ModelCostPublic"} <= set(
        models
    )
    routes = models["JobCreate"]["properties"]["routes"]["anyOf"][0]
    assert routes["propertyNames"]["enum"] == ["planner", "builder", "tester", "reviewer"]
    assert (
        routes["additionalProperties"]["minItems"],
        routes["additionalProperties"]["maxItems"],
    ) == (
        1,
        5,
    )
    assert "provider:model" in routes["additionalProperties"]["items"]["description"]
    assert "cost_usd" in models["JobPublic"]["required"]
    assert {"routes", "model_calls"} <= set(models["JobDetail"]["required"])
    assert {"total_cost_usd", "cost_by_day", "cost_by_model"} <= set(
        models["StatsPublic"]["required"]
    )
    calls = schema["paths"]["/api/jobs/{job_id}/calls"]["get"]
    assert {p["name"] for p in calls["parameters"]} == {"job_id", "limit", "offset"}
