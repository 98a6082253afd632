"""The dashboard served at `/`: the build's files with the right caching, the page for any of
its own addresses, never a file outside the build nor a page for an `/api` path, a clear page
when it is not built; and the job's plan it shows, read from the plan's blob."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from services.gateway.tests.apps import client, run_job, running_app

from vdo_gateway.app import create_app
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.blobs import BlobStore
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

INDEX = b"<!doctype html><title>VDO</title><div id=root></div>"
SCRIPT = b"console.log('dashboard')"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-3f2a1b.js").write_bytes(SCRIPT)
    (dist / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("not for the web")
    return dist


def static_app(directory: Path) -> httpx.AsyncClient:
    """The app, not started: the dashboard needs none of its resources."""
    settings = Settings(nats_url="nats://127.0.0.1:1", database_url="postgresql://x@127.0.0.1:1/x")
    app = create_app(settings, GatewaySettings(dashboard_dir=directory))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_the_build_is_served_with_its_page_for_every_address(build: Path) -> None:
    async with static_app(build) as web:
        for path in ("/", "/jobs", "/jobs/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f", "/settings"):
            page = await web.get(path)
            assert page.status_code == 200, path
            assert page.content == INDEX
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["cache-control"] == "no-cache"
            assert "default-src 'self'" in page.headers["content-security-policy"]
        asset = await web.get("/assets/index-3f2a1b.js")
        assert asset.content == SCRIPT
        assert "immutable" in asset.headers["cache-control"]
        assert (await web.get("/favicon.svg")).text == "<svg/>"
        assert (await web.head("/")).status_code == 200


async def test_scripts_styles_and_the_page_go_gzipped_to_a_browser_that_takes_it(
    build: Path,
) -> None:
    bundle = b"".join(b"export const part%d = 'dashboard code %d';\n" % (i, i) for i in range(4000))
    (build / "assets" / "index-big.js").write_bytes(bundle)
    (build / "assets" / "logo.png").write_bytes(b"\x89PNG" + bytes(4096))
    async with static_app(build) as web:
        zipped = await web.get("/assets/index-big.js", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == bundle  # as the browser reads it
        assert zipped.num_bytes_downloaded < len(bundle) / 3
        assert "immutable" in zipped.headers["cache-control"]
        assert zipped.headers["vary"] == "Accept-Encoding"
        assert zipped.headers["content-type"].startswith("text/javascript")
        plain = await web.get("/assets/index-big.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.content == bundle
        # Already compressed, or too small to be worth it: sent as it is.
        image = await web.get("/assets/logo.png", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in image.headers
        small = await web.get("/assets/index-3f2a1b.js", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in small.headers
        assert small.content == SCRIPT


async def test_no_file_outside_the_build_is_served(build: Path) -> None:
    async with static_app(build) as web:
        for path in ("/../secret.txt", "/assets/..%2F..%2Fsecret.txt", "/%2e%2e/secret.txt"):
            response = await web.get(path)
            assert b"not for the web" not in response.content, path


async def test_without_a_build_the_page_says_how_to_make_one(tmp_path: Path) -> None:
    async with static_app(tmp_path / "nowhere") as web:
        page = await web.get("/")
    assert page.status_code == 503
    assert "make run" in page.text
    assert "npm run build" in page.text
    assert str(tmp_path / "nowhere") in page.text


@pytest.fixture
async def app(
    database_url: str, nats_url: str, tmp_path: Path, build: Path
) -> AsyncIterator[FastAPI]:
    settings = Settings(database_url=database_url, nats_url=nats_url, home=tmp_path)
    async with running_app(settings, GatewaySettings(dashboard_dir=build)) as running:
        yield running


async def test_the_api_keeps_its_answers_and_its_tokens_beside_the_dashboard(
    app: FastAPI, build: Path
) -> None:
    async with client(app) as admin, client(app, token="") as anonymous:
        unknown = await admin.get("/api/no-such-endpoint")
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": "Not Found"}
        assert (await anonymous.get("/api/jobs")).status_code == 401
        assert (await anonymous.get("/")).status_code == 200
        # Whatever the method, a path under /api that no endpoint has is not found; the
        # dashboard's own paths are only read.
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            gone = await admin.request(method, "/api/templates/a/b")
            assert (gone.status_code, gone.json()) == (404, {"detail": "Not Found"}), method
            wrong = await admin.request(method, "/api/stats")
            assert wrong.status_code == 405, method
            assert wrong.headers["allow"] == "GET"
            refused = await admin.request(method, "/jobs")
            assert refused.status_code == 405, method
            assert refused.headers["allow"] == "GET, HEAD"


async def test_a_jobs_plan_is_read_from_its_blob(
    app: FastAPI, store: JobStore, tmp_path: Path
) -> None:
    blobs = BlobStore(Settings(home=tmp_path).blobs_dir)
    planned = run_job(store, blobs, [])
    async with client(app) as admin:
        plan = await admin.get(f"/api/jobs/{planned.id}/plan")
        assert plan.status_code == 200, plan.text
        body = plan.json()
        assert (body["attempt"], body["steps"]) == (1, ["write it", "test it"])
        assert body["run_command"] == []
        missing = await admin.get("/api/jobs/9f6a1c1e-3f45-4e8b-9a0d-0c7d2b3a4e5f/plan")
        assert missing.status_code == 404
        early = await admin.get(f"/api/jobs/{planned.id}/plan", params={"attempt": 0})
        assert early.status_code == 422
