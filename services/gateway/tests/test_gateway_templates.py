"""The template library through the API on a real PostgreSQL and JetStream: the built-in
templates (read only), users' templates made by hand, from a job or as a copy, changed and
deleted as events, jobs submitted from either, who may do what, and bad input answered with a
clear 4xx that changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from services.gateway.tests.apps import add_user, client, running_app

from vdo_gateway.templates import BUILTIN_TEMPLATES
from vdo_kernel.accounts import Role
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, checksums, rebuild

BUILTINS = len(BUILTIN_TEMPLATES)
MINE = {
    "name": "my-todo",
    "title": "todo API",
    "description": "a FastAPI todo API with SQLite and tests",
    "summary": "the usual",
    "routes": {"reviewer": ["gemini:gemini-2.5-pro"]},
    "max_attempts": 2,
    "budget_usd": 2.5,
    "priority": 8,
}


@pytest.fixture
def settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, nats_url=nats_url, home=tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as running:
        yield running


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as api:
        yield api


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/templates", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_the_built_in_templates_are_listed_first_and_read_only(
    admin: httpx.AsyncClient, store: JobStore
) -> None:
    page = (await admin.get("/api/templates")).json()
    assert page["total"] == BUILTINS
    names = [t["name"] for t in page["items"]]
    assert names[:3] == ["todo-api", "word-count", "csv-summary"]
    assert {"repair-loop-demo", "json-api", "argparse-cli"} <= set(names)
    assert all(t["builtin"] and t["source"] == "builtin" for t in page["items"])
    assert [t["scripted"] for t in page["items"] if t["name"] == "json-api"] == [False]

    todo = (await admin.get("/api/templates/todo-api")).json()
    assert (todo["id"], todo["builtin"], todo["scripted"]) == ("todo-api", True, True)
    assert "todo API" in todo["description"]

    before = store.max_position()
    for method, body in (("PUT", {**MINE, "name": "todo-api"}), ("DELETE", None)):
        response = await admin.request(method, "/api/templates/todo-api", json=body)
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert "built in" in detail
        assert '"from_template": "todo-api"' in detail
    assert store.max_position() == before


async def test_a_template_made_by_hand_is_changed_renamed_and_deleted_as_events(
    admin: httpx.AsyncClient, store: JobStore, projection: Projection, database_url: str
) -> None:
    response = await admin.post("/api/templates", json=MINE)
    assert response.status_code == 201, response.text
    made = response.json()
    assert response.headers["location"] == f"/api/templates/{made['id']}"
    assert made["source"] == "store"
    expected = {k: v for k, v in MINE.items() if k != "routes"}
    assert {k: made[k] for k in expected} == expected
    assert made["routes"] == {"reviewer": ["google:gemini-2.5-pro"]}
    assert (made["builtin"], made["created_by"], made["version"]) == (False, "admin", 1)

    # Found at once (not projected yet), by id and by name.
    early = (await admin.get(f"/api/templates/{made['id']}")).json()
    assert (early["source"], early["name"]) == ("store", "my-todo")
    assert (await admin.get("/api/templates/my-todo")).json()["id"] == made["id"]
    projection.catch_up()
    listed = (await admin.get("/api/templates", params={"offset": BUILTINS})).json()
    assert [t["name"] for t in listed["items"]] == ["my-todo"]
    assert listed["items"][0]["source"] == "read_model"
    assert {k: listed["items"][0][k] for k in expected} == expected
    assert listed["total"] == BUILTINS + 1

    changed = {**MINE, "name": "todo-v2", "title": "todo API v2", "budget_usd": None}
    response = await admin.put(f"/api/templates/{made['id']}", json=changed)
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["budget_usd"]) == ("todo-v2", None)
    assert response.json()["version"] == 2
    # The same again changes nothing, and records nothing.
    before = store.max_position()
    assert (await admin.put("/api/templates/todo-v2", json=changed)).status_code == 200
    assert store.max_position() == before
    projection.catch_up()
    assert (await admin.get("/api/templates/my-todo")).status_code == 404
    assert (await admin.get("/api/templates/todo-v2")).json()["title"] == "todo API v2"

    assert (await admin.delete("/api/templates/todo-v2")).status_code == 204
    assert (await admin.get(f"/api/templates/{made['id']}")).status_code == 404
    projection.catch_up()
    assert (await admin.get("/api/templates", params={"builtin": False})).json()["total"] == 0
    assert (await admin.delete(f"/api/templates/{made['id']}")).status_code == 404
    # Its name is free again.
    again = await create(admin, **{**MINE, "name": "todo-v2"})
    assert again["id"] != made["id"]

    history = [e.type for e in store.read(0) if not e.is_job_event and "Template" in e.type]
    assert history == ["TemplateCreated", "TemplateUpdated", "TemplateDeleted", "TemplateCreated"]
    projection.catch_up()
    assert rebuild(database_url).checksums == checksums(database_url)


async def test_a_template_from_a_job_or_a_copy_of_another(
    admin: httpx.AsyncClient, projection: Projection
) -> None:
    job = (
        await admin.post(
            "/api/jobs",
            json={
                "title": "csv summary",
                "description": "a CSV summary script",
                "max_attempts": 4,
                "budget_usd": 0.5,
                "routes": {"tester": ["openai:gpt-4.1"]},
            },
        )
    ).json()
    made = await create(admin, name="from-job", from_job=job["id"])
    assert (made["title"], made["description"]) == ("csv summary", "a CSV summary script")
    assert (made["max_attempts"], made["budget_usd"], made["routes"]) == (
        4,
        0.5,
        {"tester": ["openai:gpt-4.1"]},
    )
    assert made["from_job"] == job["id"]

    copy = await create(admin, name="my-word-count", from_template="word-count", budget_usd=0.2)
    word_count = (await admin.get("/api/templates/word-count")).json()
    assert (copy["title"], copy["description"]) == (word_count["title"], word_count["description"])
    assert (copy["budget_usd"], copy["from_template"], copy["builtin"]) == (
        0.2,
        "word-count",
        False,
    )
    overridden = await create(
        admin, name="tweaked", from_template="from-job", title="another title", max_attempts=None
    )
    assert (overridden["title"], overridden["max_attempts"]) == ("another title", None)
    assert overridden["from_template"] == made["id"]
    assert overridden["description"] == "a CSV summary script"


async def test_jobs_are_submitted_from_templates_filling_what_they_leave_out(
    admin: httpx.AsyncClient, store: JobStore
) -> None:
    response = await admin.post("/api/jobs", json={"template": "word-count"})
    assert response.status_code == 201, response.text
    job = response.json()
    word_count = next(t for t in BUILTIN_TEMPLATES if t.fields.name == "word-count")
    assert (job["title"], job["description"]) == (
        word_count.fields.title,
        word_count.fields.description,
    )

    mine = await create(admin, **MINE)
    response = await admin.post(
        "/api/jobs",
        json={
            "template": mine["id"],
            "title": "my own title",
            "routes": {"planner": ["openai:gpt-4.1"]},
        },
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["title"], job["description"]) == ("my own title", MINE["description"])
    assert (job["max_attempts"], job["budget_usd"]) == (2, 2.5)
    assert job["routes"] == {
        "planner": ["openai:gpt-4.1"],
        "reviewer": ["google:gemini-2.5-pro"],
    }
    assert store.job_events(job["id"])[0].data["priority"] == MINE["priority"]

    before = store.max_position()
    for ref in ("no-such-template", "../etc", "x" * 150, "9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f"):
        response = await admin.post("/api/jobs", json={"template": ref})
        assert response.status_code == 404, (ref, response.text)
        assert "no template" in response.json()["detail"]
    response = await admin.post("/api/jobs", json={"template": "x" * 201})
    assert response.status_code == 422
    response = await admin.post("/api/jobs", json={"description": "no title, no template"})
    assert response.status_code == 422
    assert "field 'title' is required (or name a template" in response.json()["detail"]
    assert store.max_position() == before


BAD: list[tuple[str, str, str, dict[str, Any] | None, int, str]] = [
    ("taken name", "POST", "", {**MINE, "name": "taken"}, 409, "'taken' exists already"),
    ("built-in name", "POST", "", {**MINE, "name": "todo-api"}, 409, "'todo-api' exists"),
    ("upper-case name", "POST", "", {**MINE, "name": "Mine"}, 422, "field 'name'"),
    ("name with a slash", "POST", "", {**MINE, "name": "a/b"}, 422, "field 'name'"),
    ("no name", "POST", "", {"title": "t", "description": "d"}, 422, "'name' is required"),
    ("by hand, no title", "POST", "", {"name": "n", "description": "d"}, 422, "title and desc"),
    (
        "unknown job",
        "POST",
        "",
        {"name": "n", "from_job": "9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f"},
        404,
        "not found",
    ),
    ("job id not a UUID", "POST", "", {"name": "n", "from_job": "nope"}, 422, "'from_job'"),
    ("unknown template", "POST", "", {"name": "n", "from_template": "nope"}, 404, "no template"),
    (
        "two sources",
        "POST",
        "",
        {
            "name": "n",
            "from_job": "9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f",
            "from_template": "todo-api",
        },
        422,
        "not both",
    ),
    ("no budget", "POST", "", {**MINE, "name": "n", "budget_usd": 0}, 422, "more than 0"),
    ("bad priority", "POST", "", {**MINE, "name": "n", "priority": 10}, 422, "'priority'"),
    (
        "bad route",
        "POST",
        "",
        {**MINE, "name": "n", "routes": {"planner": ["xyz"]}},
        422,
        "provider:model",
    ),
    ("NUL in the title", "POST", "", {**MINE, "name": "n", "title": "a\x00b"}, 422, "NUL"),
    (
        "unknown field",
        "POST",
        "",
        {**MINE, "name": "n", "colour": "red"},
        422,
        "unknown field 'colour'",
    ),
    ("summary too long", "POST", "", {**MINE, "name": "n", "summary": "s" * 501}, 422, "'summary'"),
    ("not JSON", "POST", "", None, 422, "request body is required"),
    ("unknown id", "GET", "/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f", None, 404, "no template"),
    ("unknown name", "GET", "/nope", None, 404, "no template named 'nope'"),
    ("dot-dot reference", "GET", "/%2E%2E", None, 404, "no template '..'"),
    ("NUL in a reference", "GET", "/a%00b", None, 404, "no template"),
    ("reference with a slash", "DELETE", "/..%2F..%2Fetc", None, 404, "Not Found"),
    ("very long reference", "GET", "/" + "a" * 300, None, 422, "path parameter 'ref'"),
    ("change unknown", "PUT", "/nope", {**MINE, "name": "n"}, 404, "no template named"),
    (
        "change without a title",
        "PUT",
        "/taken",
        {"name": "taken", "description": "d"},
        422,
        "'title' is required",
    ),
    (
        "rename onto a built-in",
        "PUT",
        "/taken",
        {**MINE, "name": "json-api"},
        409,
        "exists already",
    ),
    ("delete unknown", "DELETE", "/nope", None, 404, "no template named"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
async def test_bad_input_is_refused_clearly_and_changes_nothing(
    admin: httpx.AsyncClient,
    store: JobStore,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    message: str,
) -> None:
    await create(admin, **{**MINE, "name": "taken"})
    before = store.max_position()
    response = await admin.request(method, f"/api/templates{path}", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert store.max_position() == before


async def test_members_change_their_own_templates_and_viewers_only_read(
    app: FastAPI, admin: httpx.AsyncClient, store: JobStore
) -> None:
    ada = client(app, add_user(store, "ada", Role.MEMBER))
    bob = client(app, add_user(store, "bob", Role.MEMBER))
    vic = client(app, add_user(store, "vic", Role.VIEWER))
    async with ada, bob, vic:
        mine = await create(ada, **MINE)
        assert mine["created_by"] == "ada"
        ada_job = (await ada.post("/api/jobs", json={"template": "word-count"})).json()

        before = store.max_position()
        refused = await bob.put("/api/templates/my-todo", json={**MINE, "title": "bob's"})
        assert refused.status_code == 403
        assert "only they or an admin" in refused.json()["detail"]
        assert (await bob.delete("/api/templates/my-todo")).status_code == 403
        # Another member's job is, to bob, not there.
        response = await bob.post("/api/templates", json={"name": "n", "from_job": ada_job["id"]})
        assert response.status_code == 404
        assert (await vic.post("/api/templates", json={**MINE, "name": "v"})).status_code == 403
        assert (await vic.delete("/api/templates/my-todo")).status_code == 403
        assert store.max_position() == before

        # Everyone reads every template; bob makes his own copy; a viewer makes one from a
        # job it sees? No: viewers make nothing.
        assert (await vic.get("/api/templates/my-todo")).json()["created_by"] == "ada"
        copy = await create(bob, name="bobs-todo", from_template="my-todo")
        assert (copy["created_by"], copy["title"]) == ("bob", MINE["title"])
        assert (
            await ada.put("/api/templates/my-todo", json={**MINE, "summary": "x"})
        ).status_code == 200
        # An admin may change and delete anyone's.
        assert (await admin.delete("/api/templates/bobs-todo")).status_code == 204
