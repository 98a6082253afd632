"""Who may do what, on a real PostgreSQL: every endpoint of the app against every kind of
caller (no token, a bad, revoked or expired one, a viewer, a member on their own job and on
another's, an admin), tokens kept only as digests and working (or not) the moment their event
is stored, the first admin from VDO_ADMIN_TOKEN, rate limits, CORS and authentication off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN

from vdo_gateway.app import create_app
from vdo_gateway.auth import LOCAL_ONLY, UNAUTHENTICATED, RateLimiter
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.domain import Job
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection

JOB = {"title": "todo API", "description": "a FastAPI todo API with SQLite and tests"}
GZIP = {"Content-Type": "application/gzip"}

# The kinds of caller; the first four hold no working token.
NOBODY = ("no token", "bad token", "revoked token", "expired token")
CALLERS = (*NOBODY, "viewer", "member, own job", "member, another's job", "admin")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        home=tmp_path,
        admin_token=SecretStr(ADMIN_TOKEN),
    )


@asynccontextmanager
async def serving(
    settings: Settings,
    gateway: GatewaySettings | None = None,
    client: tuple[str, int] = ("127.0.0.1", 123),
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings, gateway)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=client), base_url="http://127.0.0.1"
        ) as http,
    ):
        yield app, http


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serving(settings) as pair:
        yield pair


@pytest.fixture
def app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


@dataclass
class People:
    """The users and tokens a matrix runs with, and a job of each member."""

    tokens: dict[str, str]
    ada_job: str
    bob_job: str
    made: list[str] = field(default_factory=list)

    def headers(self, caller: str) -> dict[str, str]:
        token = self.tokens.get(caller)
        return bearer(token) if token else {}


async def add_user(client: httpx.AsyncClient, name: str, role: str) -> str:
    """A user made by the admin through the API, and a token made for them; the token."""
    added = await client.post("/api/users", json={"name": name, "role": role}, headers=ADMIN)
    assert added.status_code == 201, added.text
    made = await client.post("/api/tokens", json={"user": name, "name": "test"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


ADMIN = bearer(ADMIN_TOKEN)


async def people(client: httpx.AsyncClient, store: JobStore) -> People:
    ada = await add_user(client, "ada", "member")
    bob = await add_user(client, "bob", "member")
    vic = await add_user(client, "vic", "viewer")
    revoked = await add_user(client, "rev", "admin")
    made = await client.get("/api/me", headers=bearer(revoked))
    revoke = await client.delete(f"/api/tokens/{made.json()['token']['id']}", headers=ADMIN)
    assert revoke.status_code == 200, revoke.text
    # An admin's token that expired (the API only makes tokens that expire in days).
    user = store.get_user("ada")
    assert user is not None
    expired = new_token()
    store.save(
        Token.create(
            expired, user=user, name="old", by="admin", expires_at=datetime.now(UTC) - timedelta(1)
        )
    )
    jobs = {}
    for name, token in (("ada", ada), ("bob", bob)):
        response = await client.post("/api/jobs", json=JOB, headers=bearer(token))
        assert response.status_code == 201, response.text
        jobs[name] = response.json()["id"]
    return People(
        tokens={
            "bad token": "vdo_" + "A" * 43,
            "revoked token": revoked,
            "expired token": expired,
            "viewer": vic,
            "member, own job": ada,
            "member, another's job": ada,
            "admin": ADMIN_TOKEN,
        },
        ada_job=jobs["ada"],
        bob_job=jobs["bob"],
    )


# ---- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    url: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Make = Callable[[People, JobStore, str], Awaitable[Call]]


def job_call(suffix: str = "", json: Any = None) -> Make:
    """A call on a job: the member's own for "own job", another's for "another's job"."""

    async def make(people: People, store: JobStore, caller: str) -> Call:
        job = people.bob_job if caller == "member, another's job" else people.ada_job
        return Call(f"/api/jobs/{job}{suffix}", json=json)

    return make


def plain(url: str, **extra: Any) -> Make:
    async def make(people: People, store: JobStore, caller: str) -> Call:
        return Call(url, **extra)

    return make


async def new_user_call(people: People, store: JobStore, caller: str) -> Call:
    return Call("/api/users", json={"name": f"u{uuid4().hex[:10]}", "role": "viewer"})


async def role_change_call(people: People, store: JobStore, caller: str) -> Call:
    name = f"u{uuid4().hex[:10]}"
    store.save(User.add(name=name, role=Role.MEMBER, by="test"))
    return Call(f"/api/users/{name}", json={"role": "viewer"})


async def revoke_call(people: People, store: JobStore, caller: str) -> Call:
    user = store.get_user("bob")
    assert user is not None
    token = Token.create(new_token(), user=user, name="to revoke", by="test")
    store.save(token)
    return Call(f"/api/tokens/{token.token_id}")


def statuses(viewer: int, own: int, other: int, admin: int) -> dict[str, int]:
    return {
        "viewer": viewer,
        "member, own job": own,
        "member, another's job": other,
        "admin": admin,
    }


def readable(status: int = 200) -> dict[str, int]:
    return statuses(status, status, status, status)


def admin_only(status: int) -> dict[str, int]:
    return statuses(403, 403, 403, status)


JOB_READ = statuses(200, 200, 404, 200)
# Let through: whatever the endpoint makes of the request (a 404 of its own, a 422...), but not
# a refusal (401, 403) nor a job hidden from the caller.
ALLOWED = 0
JOB_SEEN = statuses(ALLOWED, ALLOWED, 404, ALLOWED)
ACTORS = statuses(403, ALLOWED, ALLOWED, ALLOWED)
JOB_ACTED = statuses(403, ALLOWED, 404, ALLOWED)

# Every endpoint: what each caller with a working token gets (those without one get 401, from
# every endpoint but the public ones). A new endpoint needs a row here.
MATRIX: dict[tuple[str, str], tuple[Make, dict[str, int]]] = {
    ("GET", "/api/jobs"): (plain("/api/jobs"), readable()),
    ("POST", "/api/jobs"): (plain("/api/jobs", json=JOB), statuses(403, 201, 201, 201)),
    ("GET", "/api/jobs/{job_id}"): (job_call(), JOB_READ),
    ("GET", "/api/jobs/{job_id}/calls"): (job_call("/calls"), JOB_READ),
    ("GET", "/api/jobs/{job_id}/events"): (job_call("/events"), JOB_READ),
    ("GET", "/api/jobs/{job_id}/plan"): (job_call("/plan"), JOB_SEEN),
    ("GET", "/api/stats"): (plain("/api/stats"), readable()),
    # The pipeline's vocabulary: the same for everyone.
    ("GET", "/api/pipeline"): (plain("/api/pipeline"), readable()),
    ("GET", "/api/me"): (plain("/api/me"), readable()),
    ("GET", "/api/users"): (plain("/api/users"), admin_only(200)),
    ("POST", "/api/users"): (new_user_call, admin_only(201)),
    ("PATCH", "/api/users/{name}"): (role_change_call, admin_only(200)),
    ("GET", "/api/tokens"): (plain("/api/tokens"), admin_only(200)),
    ("POST", "/api/tokens"): (plain("/api/tokens", json={"user": "bob"}), admin_only(201)),
    ("DELETE", "/api/tokens/{token_id}"): (revoke_call, admin_only(200)),
    ("GET", "/api/admin/backup"): (plain("/api/admin/backup"), admin_only(200)),
    ("GET", "/api/admin/export"): (plain("/api/admin/export?since=1"), admin_only(200)),
    ("GET", "/api/admin/providers"): (plain("/api/admin/providers"), admin_only(200)),
    # What a new job gets: for everyone (no key source in it).
    ("GET", "/api/providers"): (plain("/api/providers"), readable()),
    # Keys: admins only. No AI service runs here to try one: an admin gets as far as asking.
    ("PUT", "/api/admin/providers/{provider}"): (
        plain("/api/admin/providers/anthropic", json={"base_url": "http://127.0.0.1:9/v1"}),
        admin_only(200),
    ),
    # (after the row above has stored a base URL for it)
    ("DELETE", "/api/admin/providers/{provider}"): (
        plain("/api/admin/providers/anthropic"),
        admin_only(204),
    ),
    ("POST", "/api/admin/providers/{provider}/test"): (
        plain("/api/admin/providers/anthropic/test"),
        admin_only(503),
    ),
    # No projector runs here to answer: an admin gets as far as asking one (503 says so).
    ("POST", "/api/admin/verify"): (plain("/api/admin/verify"), admin_only(503)),
    # An upload must be a bundle (an admin gets that far).
    ("POST", "/api/admin/restore"): (
        plain("/api/admin/restore", content=b"x", headers=GZIP),
        admin_only(422),
    ),
    ("POST", "/api/admin/import"): (
        plain("/api/admin/import", content=b"x", headers={"Content-Type": "text/plain"}),
        admin_only(415),
    ),
    # A job's result and log: as the job itself.
    ("GET", "/api/jobs/{job_id}/artifacts"): (job_call("/artifacts"), JOB_SEEN),
    ("GET", "/api/jobs/{job_id}/artifacts.zip"): (job_call("/artifacts.zip"), JOB_SEEN),
    ("GET", "/api/jobs/{job_id}/artifacts/file"): (job_call("/artifacts/file?path=a"), JOB_SEEN),
    ("GET", "/api/jobs/{job_id}/diff"): (job_call("/diff"), JOB_SEEN),
    ("GET", "/api/jobs/{job_id}/logs"): (job_call("/logs"), JOB_SEEN),
    ("GET", "/api/jobs/{job_id}/audit"): (job_call("/audit"), JOB_READ),
    # Acting on a job: its submitter or an admin (a viewer never; the job's state may refuse).
    ("POST", "/api/jobs/{job_id}/cancel"): (job_call("/cancel", {"reason": "test"}), JOB_ACTED),
    ("POST", "/api/jobs/{job_id}/retry"): (job_call("/retry", {"from": "planning"}), JOB_ACTED),
    # Templates: everyone reads them; those who may submit jobs make and change them.
    ("GET", "/api/templates"): (plain("/api/templates"), readable(ALLOWED)),
    ("GET", "/api/templates/{ref}"): (plain("/api/templates/no-such-one"), readable(ALLOWED)),
    ("POST", "/api/templates"): (plain("/api/templates", json={}), ACTORS),
    ("PUT", "/api/templates/{ref}"): (plain("/api/templates/no-such-one", json={}), ACTORS),
    ("DELETE", "/api/templates/{ref}"): (plain("/api/templates/no-such-one"), ACTORS),
}
# What answers without a token: the health check, and the API's schema and its docs page (they
# describe the API and hold no data; the page's OAuth2 helper is FastAPI's, outside /api).
PUBLIC = {
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
    ("GET", "/docs/oauth2-redirect"),
}


def http_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers over HTTP, included routers' routes with their
    prefix (WebSocket routes authenticate in their own protocol, and have tests of their own)."""
    found: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIWebSocketRoute) or route.path is None:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def test_every_endpoint_has_a_row_in_the_matrix(settings: Settings) -> None:
    routes = http_routes(create_app(settings))
    missing = sorted(routes - set(MATRIX) - PUBLIC)
    assert not missing, (
        f"endpoints without a row in this module's MATRIX (who may call them?): {missing}"
    )
    assert sorted((set(MATRIX) | PUBLIC) - routes) == [], "rows of endpoints that are gone"


async def test_every_endpoint_answers_every_caller_as_it_should(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    folks = await people(client, store)
    projection.catch_up()
    wrong: list[str] = []
    for (method, path), (make, expected) in sorted(MATRIX.items()):
        for caller in CALLERS:
            call = await make(folks, store, caller)
            response = await client.request(
                method,
                call.url,
                json=call.json,
                content=call.content,
                headers={**call.headers, **folks.headers(caller)},
            )
            want = 401 if caller in NOBODY else expected[caller]
            if want == ALLOWED:
                hidden = response.status_code == 404 and response.json().get("detail") in (
                    f"job {folks.ada_job} not found",
                    f"job {folks.bob_job} not found",
                )
                if response.status_code in (401, 403) or hidden or response.status_code >= 500:
                    wrong.append(
                        f"{method} {path} as {caller}: {response.status_code} (not let through) "
                        f"{response.text[:200]}"
                    )
            elif response.status_code != want:
                wrong.append(
                    f"{method} {path} as {caller}: {response.status_code} (not {want}) "
                    f"{response.text[:200]}"
                )
            elif want == 401:
                assert response.json() == {"detail": UNAUTHENTICATED}
                assert response.headers["www-authenticate"] == "Bearer"
            elif want == 404:
                # Another's job is, to a member, a job that does not exist.
                assert response.json()["detail"] == f"job {folks.bob_job} not found"
    for method, path in sorted(PUBLIC):
        for caller in CALLERS:
            response = await client.request(method, path, headers=folks.headers(caller))
            if response.status_code != 200:
                wrong.append(f"{method} {path} as {caller}: {response.status_code} (not 200)")
    assert wrong == [], "\n".join(wrong)


async def test_a_member_sees_only_their_jobs_a_viewer_every_job(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    folks = await people(client, store)
    # An old job, from before accounts: nobody's, so only admins and viewers see it.
    store.save(Job.submit(title="old", description="from before accounts"))
    projection.catch_up()

    async def listed(caller: str) -> list[str]:
        page = (await client.get("/api/jobs", headers=folks.headers(caller))).json()
        assert page["total"] == len(page["items"])
        return sorted(job["submitted_by"] for job in page["items"])

    assert await listed("member, own job") == ["ada"]
    assert await listed("viewer") == ["ada", "anonymous", "bob"]
    assert await listed("admin") == ["ada", "anonymous", "bob"]
    stats = (await client.get("/api/stats", headers=folks.headers("member, own job"))).json()
    assert stats["total_jobs"] == 1
    everything = (await client.get("/api/stats", headers=ADMIN)).json()
    assert everything["total_jobs"] == 3
    # Not projected yet: the store answers, with the same rule.
    late = await client.post("/api/jobs", json=JOB, headers=bearer(folks.tokens["admin"]))
    job_id = late.json()["id"]
    for suffix in ("", "/calls", "/events"):
        own = folks.headers("member, own job")
        response = await client.get(f"/api/jobs/{job_id}{suffix}", headers=own)
        assert response.status_code == 404, suffix
        assert response.json() == {"detail": f"job {job_id} not found"}
        seen = await client.get(f"/api/jobs/{job_id}{suffix}", headers=folks.headers("viewer"))
        assert seen.status_code == 200, suffix


async def test_a_token_works_when_stored_and_stops_when_revoked_before_any_projection(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    projection.catch_up()
    token = await add_user(client, "ada", "member")  # not projected: the store answers
    me = await client.get("/api/me", headers=bearer(token))
    assert (me.status_code, me.json()["name"], me.json()["role"]) == (200, "ada", "member")
    token_id = me.json()["token"]["id"]
    projection.catch_up()  # now the read models do
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 200

    # The read models still say it works: the revocation in the store wins.
    revoked = await client.delete(f"/api/tokens/{token_id}", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 401
    projection.catch_up()
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 401
    again = await client.delete(f"/api/tokens/{token_id}", headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]

    # A role changed in the store counts at once too.
    bob = await add_user(client, "bob", "member")
    projection.catch_up()
    assert (await client.post("/api/jobs", json=JOB, headers=bearer(bob))).status_code == 201
    changed = await client.patch("/api/users/bob", json={"role": "viewer"}, headers=ADMIN)
    assert (changed.status_code, changed.json()["role"]) == (200, "viewer")
    assert (await client.post("/api/jobs", json=JOB, headers=bearer(bob))).status_code == 403


async def test_tokens_are_kept_only_as_digests(
    client: httpx.AsyncClient,
    store: JobStore,
    projection: Projection,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folks = await people(client, store)
    projection.catch_up()
    listed = await client.get("/api/tokens", headers=ADMIN)
    assert listed.status_code == 200
    for item in listed.json()["items"]:
        assert set(item) == {
            "id",
            "prefix",
            "user",
            "name",
            "status",
            "created_at",
            "created_by",
            "expires_at",
            "revoked_at",
            "revoked_by",
        }
    statuses = {(t["user"], t["name"]): t["status"] for t in listed.json()["items"]}
    assert statuses[("rev", "test")] == "revoked"
    assert statuses[("ada", "old")] == "expired"
    assert statuses[("admin", "VDO_ADMIN_TOKEN")] == "active"
    secrets = {ADMIN_TOKEN, *folks.tokens.values()}
    output = capsys.readouterr()
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'vdo_read') AND table_type = 'BASE TABLE'"
        ).fetchall()
        dump: list[str] = []
        for schema, table in tables:
            rows = conn.execute(
                psycopg.sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                    psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
                )
            ).fetchall()
            dump.extend(row[0] for row in rows)
        states = conn.execute("SELECT state FROM vdo_events").fetchall()
    text = "\n".join(dump) + "\n".join(bytes(row[0]).decode() for row in states)
    assert "sha256" in text  # the digests are there...
    for secret in secrets:
        assert secret not in text  # ...never a token
        assert secret not in output.out + output.err


async def test_users_and_tokens_refuse_bad_requests_and_change_nothing(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    await add_user(client, "ada", "member")
    before = store.max_position()
    bad = [
        ("POST", "/api/users", {"name": "ada", "role": "member"}, 409, "already"),
        ("POST", "/api/users", {"name": "Ada", "role": "member"}, 422, "'name'"),
        ("POST", "/api/users", {"name": "x", "role": "owner"}, 422, "'role'"),
        ("PATCH", "/api/users/admin", {"role": "viewer"}, 409, "own role"),
        ("PATCH", "/api/users/nobody", {"role": "viewer"}, 404, "user nobody not found"),
        ("POST", "/api/tokens", {"user": "nobody"}, 404, "user nobody not found"),
        ("POST", "/api/tokens", {"user": "ada", "expires_in_days": 0}, 422, "expires_in_days"),
        ("POST", "/api/tokens", {"user": "ada", "name": ""}, 422, "'name'"),
        ("DELETE", "/api/tokens/0123456789ab", None, 404, "token 0123456789ab not found"),
    ]
    for method, url, body, status, message in bad:
        response = await client.request(method, url, json=body, headers=ADMIN)
        assert response.status_code == status, (method, url, body, response.text)
        assert message in response.json()["detail"], response.text
    assert store.max_position() == before


async def test_a_token_that_expires_stops_working_then(
    client: httpx.AsyncClient, store: JobStore, projection: Projection
) -> None:
    token = await add_user(client, "ada", "member")
    made = await client.post(
        "/api/tokens", json={"user": "ada", "expires_in_days": 30}, headers=ADMIN
    )
    assert made.status_code == 201
    expires = datetime.fromisoformat(made.json()["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert made.headers["cache-control"] == "no-store"
    assert (await client.get("/api/me", headers=bearer(made.json()["token"]))).status_code == 200
    user = store.get_user("ada")
    assert user is not None
    soon = new_token()
    store.save(
        Token.create(
            soon, user=user, name="soon", by="a", expires_at=datetime.now(UTC) + timedelta(0, 1)
        )
    )
    projection.catch_up()
    assert (await client.get("/api/me", headers=bearer(soon))).status_code == 200
    # The clock, not an event, ends it.
    await asyncio.sleep(1.2)
    assert (await client.get("/api/me", headers=bearer(soon))).status_code == 401
    assert (await client.get("/api/me", headers=bearer(token))).status_code == 200


# ---- the first admin, rate limits, CORS, authentication off ----------------------------------


async def test_the_first_admin_comes_from_vdo_admin_token_once(
    settings: Settings, store: JobStore
) -> None:
    for _ in range(2):  # a restart writes nothing
        async with serving(settings) as (_, client):
            me = await client.get("/api/me", headers=ADMIN)
            assert me.json()["name"] == "admin"
            assert me.json()["token"]["name"] == "VDO_ADMIN_TOKEN"
    assert [e.type for e in store.read(after=0)] == ["UserAdded", "TokenCreated"]
    assert not (settings.home / "admin-token").exists()  # the operator has it already

    # Another VDO_ADMIN_TOKEN later is not a way in: the deployment has its admin.
    other = settings.model_copy(update={"admin_token": SecretStr("vdo_" + "B" * 43)})
    async with serving(other) as (_, client):
        refused = await client.get("/api/me", headers=bearer("vdo_" + "B" * 43))
        assert refused.status_code == 401
    assert store.max_position() == 2


async def test_a_short_vdo_admin_token_stops_the_gateway(settings: Settings) -> None:
    short = settings.model_copy(update={"admin_token": SecretStr("password")})
    with pytest.raises(RuntimeError, match="VDO_ADMIN_TOKEN must be 32") as raised:
        async with serving(short):
            pass
    assert "password" not in str(raised.value)


async def test_a_token_is_rate_limited_and_told_when_to_come_back(
    settings: Settings, store: JobStore
) -> None:
    limited = GatewaySettings(rate_limit_per_minute=3)
    async with serving(settings, limited) as (_, client):
        for _ in range(3):
            assert (await client.get("/api/me", headers=ADMIN)).status_code == 200
        refused = await client.get("/api/me", headers=ADMIN)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "20"
        assert "at most 3 a minute per token" in refused.json()["detail"]
        # The health check counts against nobody; another token has its own bucket.
        assert (await client.get("/api/health")).status_code in (200, 503)
        user = store.get_user("admin")
        assert user is not None
        other = new_token()
        store.save(Token.create(other, user=user, name="other", by="test"))
        assert (await client.get("/api/me", headers=bearer(other))).status_code == 200


def test_a_bucket_refills_over_the_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("t") is None for _ in range(60))
    assert limiter.take("t") == pytest.approx(1.0)
    now[0] += 2.5
    assert limiter.take("t") is None
    assert limiter.take("t") is None
    assert limiter.take("t") == pytest.approx(0.5)
    assert limiter.take("another") is None
    assert RateLimiter(0).take("t") is None  # off


async def test_cors_answers_only_the_configured_origins(settings: Settings) -> None:
    dashboard = "https://dash.example.com"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with serving(settings, GatewaySettings(cors_origins=f"{dashboard}/")) as (_, client):
        allowed = await client.options("/api/jobs", headers={"Origin": dashboard, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == dashboard
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = await client.options(
            "/api/jobs", headers={"Origin": "https://evil.example", **preflight}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        # A refusal carries the headers too, so the dashboard can read why.
        refused = await client.get("/api/jobs", headers={"Origin": dashboard})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == dashboard
    async with serving(settings) as (_, client):
        same_origin_only = await client.get("/api/jobs", headers={"Origin": dashboard, **ADMIN})
        assert same_origin_only.status_code == 200
        assert "access-control-allow-origin" not in same_origin_only.headers
        no_preflight = await client.options("/api/jobs", headers={"Origin": dashboard, **preflight})
        assert "access-control-allow-origin" not in no_preflight.headers


async def test_with_authentication_off_every_local_request_acts_as_the_local_admin(
    settings: Settings, store: JobStore
) -> None:
    off = settings.model_copy(update={"auth": "off", "admin_token": None})
    async with serving(off) as (_, client):
        me = (await client.get("/api/me")).json()
        assert (me["name"], me["role"], me["authentication"], me["token"]) == (
            "local",
            "admin",
            "off",
            None,
        )
        created = await client.post("/api/jobs", json=JOB)
        assert created.status_code == 201
        assert created.json()["submitted_by"] == "local"
        unnamed = await client.post("/api/tokens", json={})
        assert unnamed.status_code == 422
        assert "name the user" in unnamed.json()["detail"]
    # Nothing about accounts was written: no first admin with authentication off.
    assert [e.type for e in store.read(after=0)] == ["JobSubmitted"]
    async with serving(off, client=("10.1.2.3", 4567)) as (_, client):
        remote = await client.get("/api/me")
        assert remote.status_code == 401
        assert remote.json() == {"detail": LOCAL_ONLY}


async def test_unauthenticated_requests_learn_nothing_about_the_body_or_the_route(
    client: httpx.AsyncClient, store: JobStore
) -> None:
    before = store.max_position()
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/jobs", {"content": b'{"title": '}),  # malformed JSON
        ("POST", "/api/jobs", {"content": b"x" * 2_000_000}),  # over the body limit
        ("GET", "/api/no-such-thing", {}),
        ("GET", "/api/jobs/not-a-uuid", {}),
        ("POST", "/api/jobs", {"json": JOB, "headers": {"Authorization": "Basic YWRtaW4="}}),
        ("POST", "/api/jobs", {"json": JOB, "headers": {"Authorization": "Bearer"}}),
        ("POST", "/api/jobs", {"json": JOB, "headers": bearer("x" * 100_000)}),
    ]
    for method, url, kwargs in requests:
        response = await client.request(method, url, **kwargs)
        assert response.status_code == 401, (method, url, response.text)
        assert response.json() == {"detail": UNAUTHENTICATED}
    assert store.max_position() == before


def test_the_openapi_schema_describes_the_bearer_token(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    scheme = schema["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert {"token": []} in schema["paths"]["/api/jobs"]["post"]["security"]
    assert "security" not in schema["paths"]["/api/health"]["get"]
    assert {"UserCreate", "TokenCreate", "TokenCreated", "MePublic"} <= set(
        schema["components"]["schemas"]
    )
