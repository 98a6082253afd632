"""The REST API on a real PostgreSQL and JetStream: the happy path, and bad input of every kind
answered with a clear 4xx that writes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN

from vdo_cli.embedded import EmbeddedNats
from vdo_gateway.app import create_app
from vdo_gateway.binding import UnsafeBindError
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection

MB = 1024 * 1024
JOB = {"title": "todo API", "description": "a FastAPI todo API with SQLite and tests"}


# The gateway makes the first admin with VDO_ADMIN_TOKEN when it starts: its user and its token
# are the store's first two events.
ACCOUNT_EVENTS = 2
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=AUTH
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


async def test_submit_then_read_the_job_and_its_events(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    response = await client.post("/api/jobs", json={**JOB, "max_attempts": 2, "budget_usd": 2.5})
    assert response.status_code == 201
    created = response.json()
    job_id = created["id"]
    assert response.headers["location"] == f"/api/jobs/{job_id}"
    assert created["status"] == "queued"
    assert (created["phase"], created["step"], created["attempt"]) == ("planning", "plan", 1)
    assert (created["max_attempts"], created["budget_usd"]) == (2, 2.5)
    assert created["position"] == store.max_position() == ACCOUNT_EVENTS + 1

    # The projector has not run: the store answers, so a fresh id is never a 404.
    early = await client.get(f"/api/jobs/{job_id}")
    assert early.status_code == 200
    assert early.json()["source"] == "store"
    assert early.json()["title"] == JOB["title"]

    projection.catch_up()
    detail = (await client.get(f"/api/jobs/{job_id}")).json()
    assert detail["source"] == "read_model"
    assert detail["status"] == "queued"
    assert detail["description"] == JOB["description"]
    assert detail["created_at"] == created["created_at"]
    assert detail["steps"] == []
    assert detail["position"] == ACCOUNT_EVENTS + 1

    events = (await client.get(f"/api/jobs/{job_id}/events")).json()
    assert events["job_id"] == job_id
    assert [(e["position"], e["version"], e["type"]) for e in events["items"]] == [
        (ACCOUNT_EVENTS + 1, 1, "JobSubmitted")
    ]
    assert events["items"][0]["data"]["title"] == JOB["title"]
    assert events["items"][0]["data"]["submitted_by"] == "admin"
    later = (
        await client.get(f"/api/jobs/{job_id}/events", params={"after": ACCOUNT_EVENTS + 1})
    ).json()
    assert later["items"] == []

    page = (await client.get("/api/jobs")).json()
    assert page["total"] == 1
    assert [j["id"] for j in page["items"]] == [job_id]

    stats = (await client.get("/api/stats")).json()
    assert stats["by_status"]["queued"] == 1
    assert (stats["total_jobs"], stats["total_events"], stats["projected_position"]) == (
        1,
        ACCOUNT_EVENTS + 1,
        ACCOUNT_EVENTS + 1,
    )
    assert stats["mean_duration_seconds"] is None


async def test_jobs_are_listed_newest_first_a_page_at_a_time(
    client: httpx.AsyncClient, projection: Projection
) -> None:
    ids = [(await submit(client, title=f"job {n}"))["id"] for n in range(5)]
    projection.catch_up()
    first = (await client.get("/api/jobs", params={"limit": 2})).json()
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    last = (await client.get("/api/jobs", params={"limit": 2, "offset": 4})).json()
    assert [j["id"] for j in last["items"]] == ids[:1]
    assert (await client.get("/api/jobs", params={"status": "running"})).json()["total"] == 0
    for params in ({"limit": 0}, {"limit": "many"}, {"offset": -1}, {"status": "sleeping"}):
        response = await client.get("/api/jobs", params=params)
        assert response.status_code == 422
        assert "query parameter" in response.json()["detail"]


async def test_jobs_are_filtered_by_owner_and_text(
    client: httpx.AsyncClient, projection: Projection
) -> None:
    todo = (await submit(client, title="Todo API", description="a FastAPI todo API"))["id"]
    word = (await submit(client, title="wc", description="a Word-Count tool"))["id"]
    projection.catch_up()

    async def ids(**params: str) -> list[str]:
        page = (await client.get("/api/jobs", params=params)).json()
        return [j["id"] for j in page["items"]]

    assert await ids(q="word-count") == [word]
    assert await ids(q="TODO") == [todo]
    assert sorted(await ids(owner="admin")) == sorted([todo, word])
    assert await ids(owner="someone-else") == []
    assert await ids(q="todo", owner="admin", status="queued") == [todo]
    for params in ({"q": ""}, {"q": "x" * 201}, {"q": "a\x00b"}, {"owner": "o" * 201}):
        response = await client.get("/api/jobs", params=params)
        assert response.status_code == 422, params
        assert "query parameter" in response.json()["detail"]


async def test_the_bearer_token_is_kept_nowhere(client: httpx.AsyncClient, store: JobStore) -> None:
    response = await client.post("/api/jobs", json=JOB)
    assert response.status_code == 201
    job_id = response.json()["id"]
    assert (await client.get(f"/api/jobs/{job_id}")).status_code == 200
    assert (await client.get(f"/api/jobs/{job_id}/events")).status_code == 200
    assert (await client.get("/api/jobs")).status_code == 200
    assert ADMIN_TOKEN not in json.dumps([e.to_json() for e in store.read(after=0)])


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    yield b'{"title": "t", "description": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed JSON", {"content": b'{"title": "t",', "json_type": True}, 400, "not valid JSON"),
    ("JSON that is not an object", {"json": ["t", "d"]}, 422, "must be a JSON object"),
    ("no body", {}, 422, "request body is required"),
    ("not sent as JSON", {"content": json.dumps(JOB).encode()}, 422, "must be a JSON object"),
    ("missing title", {"json": {"description": "d"}}, 422, "field 'title' is required"),
    ("missing description", {"json": {"title": "t"}}, 422, "field 'description' is required"),
    ("title of the wrong type", {"json": {**JOB, "title": 123}}, 422, "field 'title'"),
    ("attempts as a string", {"json": {**JOB, "max_attempts": "3"}}, 422, "'max_attempts'"),
    ("attempts as a fraction", {"json": {**JOB, "max_attempts": 2.5}}, 422, "'max_attempts'"),
    ("attempts as a boolean", {"json": {**JOB, "max_attempts": True}}, 422, "'max_attempts'"),
    ("budget as a string", {"json": {**JOB, "budget_usd": "1"}}, 422, "'budget_usd'"),
    ("unknown field", {"json": {**JOB, "colour": 1}}, 422, "unknown field 'colour'"),
    ("empty title", {"json": {**JOB, "title": ""}}, 422, "field 'title'"),
    ("blank title", {"json": {**JOB, "title": "   "}}, 422, "title must not be empty"),
    ("title too long", {"json": {**JOB, "title": "t" * 201}}, 422, "at most 200"),
    ("description too long", {"json": {**JOB, "description": "d" * 20_001}}, 422, "20000"),
    ("NUL in the title", {"json": {**JOB, "title": "a\x00b"}}, 422, "NUL"),
    ("too few attempts", {"json": {**JOB, "max_attempts": 0}}, 422, "'max_attempts'"),
    ("too many attempts", {"json": {**JOB, "max_attempts": 11}}, 422, "'max_attempts'"),
    ("no budget", {"json": {**JOB, "budget_usd": 0}}, 422, "budget_usd must be more than 0"),
    ("huge budget", {"json": {**JOB, "budget_usd": 1e9}}, 422, "at most 10000"),
    ("routes not an object", {"json": {**JOB, "routes": ["openai:gpt-4.1"]}}, 422, "'routes'"),
    (
        "routes of an unknown phase",
        {"json": {**JOB, "routes": {"sandbox": ["openai:gpt-4.1"]}}},
        422,
        "field 'routes' has a key that is not allowed ('sandbox'): Input should be 'planner'",
    ),
    (
        "no route for a phase",
        {"json": {**JOB, "routes": {"planner": []}}},
        422,
        "field 'routes.planner': List should have at least 1 item",
    ),
    (
        "six routes for a phase",
        {"json": {**JOB, "routes": {"tester": ["openai:gpt-4.1"] * 6}}},
        422,
        "field 'routes.tester': List should have at most 5 items",
    ),
    (
        "a route given as a string",
        {"json": {**JOB, "routes": {"planner": "openai:gpt-4.1"}}},
        422,
        "field 'routes.planner': Input should be a valid list",
    ),
    (
        "a route that is not provider:model",
        {"json": {**JOB, "routes": {"planner": ["gpt-4.1"]}}},
        422,
        "field 'routes.planner.0': a route is provider:model",
    ),
    (
        "a route with no model",
        {"json": {**JOB, "routes": {"planner": ["openai: "]}}},
        422,
        "field 'routes.planner.0': a route is provider:model",
    ),
    (
        "a route of an unknown provider",
        {"json": {**JOB, "routes": {"reviewer": ["google:x", "mistral:large"]}}},
        422,
        "field 'routes.reviewer.1': the provider must be one of anthropic, openai, google",
    ),
    (
        "a model name with a space",
        {"json": {**JOB, "routes": {"builder": ["openai:gpt 4"]}}},
        422,
        "must not contain spaces",
    ),
    (
        "a route that is not text",
        {"json": {**JOB, "routes": {"builder": [4]}}},
        422,
        "field 'routes.builder.0'",
    ),
    (
        "a route too long",
        {"json": {**JOB, "routes": {"builder": ["openai:" + "m" * 300]}}},
        422,
        "at most 200 characters",
    ),
    ("10 MB description", {"json": {**JOB, "description": "d" * 10 * MB}}, 413, "limit"),
    ("10 MB body", {"content": b"x" * 10 * MB, "json_type": True}, 413, "limit"),
    ("10 MB body, chunked", {"content": lambda: chunks(10 * MB), "json_type": True}, 413, "limit"),
]


@pytest.mark.parametrize(
    ("request_args", "status", "message"),
    [pytest.param(args, status, message, id=name) for name, args, status, message in BAD_REQUESTS],
)
async def test_bad_input_gets_a_clear_error_and_writes_nothing(
    client: httpx.AsyncClient,
    store: JobStore,
    request_args: dict[str, Any],
    status: int,
    message: str,
) -> None:
    await submit(client)  # something in the store, so "unchanged" is not just "empty"
    before = store.max_position()
    args = dict(request_args)
    if callable(args.get("content")):
        args["content"] = args["content"]()  # a fresh stream for each run
    headers = {"content-type": "application/json"} if args.pop("json_type", False) else {}
    if "content" in args and not headers:
        headers = {"content-type": "text/plain"}
    response = await client.post("/api/jobs", headers=headers, **args)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert message in detail
    assert store.max_position() == before


async def test_unknown_and_malformed_job_ids(client: httpx.AsyncClient) -> None:
    unknown = uuid4()
    for path in (f"/api/jobs/{unknown}", f"/api/jobs/{unknown}/events"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": f"job {unknown} not found"}
    for path in ("/api/jobs/not-a-uuid", "/api/jobs/123/events"):
        response = await client.get(path)
        assert response.status_code == 422
        assert "path parameter 'job_id'" in response.json()["detail"]
    missing = await client.get("/api/nothing-here")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong_method = await client.delete("/api/jobs")
    assert wrong_method.status_code == 405
    assert isinstance(wrong_method.json()["detail"], str)


async def test_an_offset_beyond_what_the_database_holds_is_a_clear_422(
    client: httpx.AsyncClient,
) -> None:
    job = (await client.post("/api/jobs", json={"title": "t", "description": "d"})).json()["id"]
    for path in ("/api/jobs", f"/api/jobs/{job}/calls", "/api/templates"):
        huge = await client.get(path, params={"offset": 2**63})
        assert huge.status_code == 422, (path, huge.text)
        assert "query parameter 'offset'" in huge.json()["detail"]
        largest = await client.get(path, params={"offset": 2**62})
        assert largest.status_code == 200, (path, largest.text)
        assert largest.json()["items"] == []
    after = await client.get(f"/api/jobs/{job}/events", params={"after": 2**64})
    assert after.status_code == 422


async def test_health_reports_each_component_and_the_lags(
    settings: Settings, nats_server: EmbeddedNats, client: httpx.AsyncClient
) -> None:
    await submit(client)
    await submit(client)
    health = await wait_for_health(client, 200)
    assert health["status"] == "ok"
    assert health["position"] == ACCOUNT_EVENTS + 2
    components = health["components"]
    assert components["database"]["status"] == "ok"
    assert components["nats"]["status"] == "ok"
    # Nothing relayed or projected yet: both are every event behind.
    lag = ACCOUNT_EVENTS + 2
    assert (components["relay"]["lag"], components["projector"]["lag"]) == (lag, lag)

    nats_server.stop()
    down = await wait_for_health(client, 503)
    assert down["status"] == "degraded"
    assert down["components"]["nats"]["status"] == "down"
    assert down["components"]["relay"]["status"] == "unknown"
    assert down["components"]["database"]["status"] == "ok"


async def wait_for_health(
    client: httpx.AsyncClient, status: int, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/api/health")
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.1)


async def test_openapi_describes_the_create_and_public_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/api/openapi.json")).json()
    models = schema["components"]["schemas"]
    assert {"JobCreate", "JobPublic", "JobDetail", "JobsPage", "EventPublic"} <= set(models)
    assert models["JobCreate"]["additionalProperties"] is False
    assert "/api/jobs/{job_id}/events" in schema["paths"]


async def test_the_pipeline_is_published_as_the_domain_states_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/pipeline")
    assert response.status_code == 200, response.text
    pipeline = response.json()
    assert [(s["step"], s["phase"], s["role"], s["rejecting"]) for s in pipeline["steps"]] == [
        ("plan", "planning", "planner", None),
        ("build", "building", "builder", None),
        ("write_tests", "testing", "tester", None),
        ("run_tests", "testing", None, "failed"),
        ("review", "reviewing", "reviewer", "changes_requested"),
        ("sandbox_run", "sandboxing", None, "down"),
    ]
    assert pipeline["steps"][4]["outcomes"] == ["approved", "changes_requested"]
    assert pipeline["phases"] == ["planning", "building", "testing", "reviewing", "sandboxing"]
    assert pipeline["ai_phases"] == ["planner", "builder", "tester", "reviewer"]
    assert pipeline["attempt_start"] == "build"
    assert "changes_requested" in pipeline["outcomes"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_with_authentication_off_the_gateway_refuses_a_non_loopback_host(
    settings: Settings, host: str
) -> None:
    with pytest.raises(UnsafeBindError, match="loopback"):
        create_app(settings.model_copy(update={"host": host, "auth": "off"}))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_with_authentication_off_the_gateway_accepts_a_loopback_host(
    settings: Settings, host: str
) -> None:
    create_app(settings.model_copy(update={"host": host, "auth": "off"}))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "127.0.0.1"])
def test_with_authentication_on_the_gateway_may_listen_anywhere(
    settings: Settings, host: str
) -> None:
    create_app(settings.model_copy(update={"host": host}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_gateway_process_serves_and_refuses_to_expose_itself(settings: Settings) -> None:
    env = {
        **os.environ,
        "VDO_DATABASE_URL": str(settings.database_url),
        "VDO_NATS_URL": str(settings.nats_url),
        "VDO_HOME": str(settings.home),
    }
    refused = subprocess.run(
        [sys.executable, "-m", "vdo_gateway"],
        env={**env, "VDO_HOST": "0.0.0.0", "VDO_AUTH": "off"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
    assert "authentication off" in refused.stderr

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vdo_gateway"],
        env={**env, "VDO_PORT": str(port), "VDO_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                if response.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the gateway did not become healthy"
            time.sleep(0.1)
        anonymous = httpx.post(f"http://127.0.0.1:{port}/api/jobs", json=JOB, timeout=5)
        assert anonymous.status_code == 401
        created = httpx.post(f"http://127.0.0.1:{port}/api/jobs", json=JOB, headers=AUTH, timeout=5)
        assert created.status_code == 201
        big = httpx.post(
            f"http://127.0.0.1:{port}/api/jobs",
            content=b"x" * 10 * MB,
            headers={"content-type": "application/json", **AUTH},
            timeout=30,
        )
        assert big.status_code == 413
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
