"""The admin API on a real PostgreSQL: a backup downloaded from one deployment restores into
another event for event (its users and tokens with it: a token works in the restored one), an
export imports only where the log ends, and a refused upload (damaged, too large, into the
wrong deployment) changes nothing.

The deployments restored into run with authentication off (on loopback): with it on, a
deployment holds its first admin's events from its first start and is not empty."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from services.gateway.tests.apps import add_user
from tests.harness import ADMIN_TOKEN

from vdo_gateway.app import create_app
from vdo_gateway.resources import Bus
from vdo_gateway.settings import GatewaySettings
from vdo_kernel import readmodels
from vdo_kernel.accounts import Role
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bus import connect
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, checksums
from vdo_projector.service import answer_verify_requests

GZIP = {"Content-Type": "application/gzip"}
KIB = 1024
# Random bytes do not compress: a bundle holding this blob is over the API's 1 MB request
# limit, so its upload shows the bundle limit applies instead.
BIG_BLOB_BYTES = 1_200_000


class Deployment:
    """An event store, its blobs and a gateway serving them."""

    def __init__(self, database_url: str, nats_url: str, home: Path, *, auth: str = "on") -> None:
        self.database_url = database_url
        self.settings = Settings(
            database_url=database_url,
            nats_url=nats_url,
            home=home,
            auth="on" if auth == "on" else "off",
            admin_token=SecretStr(ADMIN_TOKEN) if auth == "on" else None,
        )
        self.store = JobStore(database_url, pool_size=1)
        self.blobs = BlobStore(self.settings.blobs_dir)
        self.client: httpx.AsyncClient

    def rows(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM vdo_events ORDER BY notification_id"
            ).fetchall()

    def blob_files(self) -> dict[str, bytes]:
        root = self.blobs.root
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def leftovers(self) -> list[str]:
        """Anything a download or an upload left under VDO_HOME."""
        home = self.settings.home
        return sorted(p.name for p in home.iterdir() if p.name.startswith("vdo-"))

    def add_job(self, title: str, *, big: bool = False) -> None:
        """A job planned and built, with artifacts like the services write."""
        job = Job.submit(title=title, description="a small program")
        job.admit(by="scheduler", causation_id="test")
        put = self.blobs.put_text
        files = {"main.py": put(f"# {title}\n"), "README.md": put("read me\n")}
        artifacts = {
            Step.PLAN: {"plan": put(f"plan of {title}")},
            Step.BUILD: {"files": put(json.dumps(files, sort_keys=True))},
        }
        if big:
            artifacts[Step.PLAN]["transcript"] = self.blobs.put(os.urandom(BIG_BLOB_BYTES))
        for step in (Step.PLAN, Step.BUILD):
            due = job.due()
            assert due is not None
            assert due.step is step
            job.start_step(due, worker="test", causation_id="test")
            job.finish_step(
                due,
                outcome=Outcome.OK,
                summary="done",
                causation_id="test",
                artifacts=artifacts[step],
            )
        self.store.save(job)


@asynccontextmanager
async def serving(
    database_url: str,
    nats_url: str,
    home: Path,
    gateway: GatewaySettings | None = None,
    *,
    auth: str = "on",
) -> AsyncIterator[Deployment]:
    """A gateway on the store, and a client of it: as the first admin (VDO_ADMIN_TOKEN's) with
    authentication on, as the local admin with it off."""
    deployment = Deployment(database_url, nats_url, home, auth=auth)
    app = create_app(deployment.settings, gateway or GatewaySettings())
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if auth == "on" else {}
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://127.0.0.1",
                headers=headers,
            ) as client,
        ):
            deployment.client = client
            await connected(app.state.resources.bus)
            yield deployment
    finally:
        deployment.store.close()


async def connected(bus: Bus) -> None:
    """Wait for the gateway's background NATS connection: closing the app while it is still
    being made cancels it half-way, and the NATS client then leaves its socket open."""
    for _ in range(200):
        if bus.connected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway did not connect to NATS")


@pytest.fixture
async def source(database_url: str, nats_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with serving(database_url, nats_url, tmp_path / "source") as deployment:
        yield deployment


@pytest.fixture
async def target(
    make_database: Callable[[], str], nats_url: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    async with serving(make_database(), nats_url, tmp_path / "target", auth="off") as deployment:
        yield deployment


async def download(deployment: Deployment, url: str, **params: int) -> bytes:
    response = await deployment.client.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert int(response.headers["content-length"]) == len(response.content)
    return response.content


async def in_pieces(data: bytes, size: int = 64 * KIB) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def test_a_backup_restores_into_another_deployment_event_for_event(
    source: Deployment, target: Deployment, nats_url: str, tmp_path: Path
) -> None:
    source.add_job("first", big=True)
    source.add_job("second")
    # A member and their token, made through the API: in the backup as events (digested).
    added = await source.client.post("/api/users", json={"name": "ada", "role": "member"})
    assert added.status_code == 201, added.text
    made = await source.client.post("/api/tokens", json={"user": "ada", "name": "laptop"})
    assert made.status_code == 201, made.text
    member_token = made.json()["token"]
    end = source.store.max_position()

    response = await source.client.get("/api/admin/backup")
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="vdo-backup-')
    assert disposition.endswith('.tar.gz"')
    assert response.headers["x-vdo-last-position"] == str(end)
    backup = response.content
    assert len(backup) > source.settings.max_request_bytes
    assert source.leftovers() == []

    # Sent chunked, as a large file is: spooled to disk under the bundle limit, not the API's.
    restored = await target.client.post(
        "/api/admin/restore", content=in_pieces(backup), headers=GZIP
    )
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert (body["outcome"], body["kind"], body["since"]) == ("restored", "backup", 0)
    # Two jobs (the accounts' events are in the backup too, and not counted as jobs).
    assert (body["events"], body["jobs"], body["last_position"]) == (end, 2, end)
    assert body["blobs_written"] == body["blobs"] == len(source.blob_files())
    assert body["projected_position"] == 0
    assert "catching up from position 0" in body["read_models"]
    assert target.rows() == source.rows()
    assert target.blob_files() == source.blob_files()
    assert target.leftovers() == []

    # The projector, reading on from its tracking position (0), builds the same read models.
    for deployment in (source, target):
        projection = Projection(deployment.database_url)
        projection.catch_up()
        projection.close()
    assert checksums(target.database_url) == checksums(source.database_url)

    again = await target.client.post("/api/admin/restore", content=backup, headers=GZIP)
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "already_present"
    assert again.json()["blobs_written"] == 0
    assert "up to date" in again.json()["read_models"]
    assert target.rows() == source.rows()
    assert member_token.encode() not in b"".join(bytes(row[4]) for row in target.rows())
    assert ADMIN_TOKEN.encode() not in b"".join(bytes(row[4]) for row in target.rows())

    # The restored deployment, with authentication on, answers to the source's tokens.
    async with serving(
        target.database_url, nats_url, tmp_path / "restored", gateway=None
    ) as restarted:
        assert restarted.store.max_position() == end  # nothing written at its start
        me = await restarted.client.get("/api/me")
        assert (me.status_code, me.json()["name"], me.json()["role"]) == (200, "admin", "admin")
        member = {"Authorization": f"Bearer {member_token}"}
        ada = await restarted.client.get("/api/me", headers=member)
        assert (ada.status_code, ada.json()["name"], ada.json()["role"]) == (200, "ada", "member")
        refused = await restarted.client.get(
            "/api/me", headers={"Authorization": f"Bearer {member_token[:-1]}x"}
        )
        assert refused.status_code == 401


async def test_a_restore_into_a_deployment_that_is_not_empty_is_refused(
    source: Deployment, target: Deployment
) -> None:
    source.add_job("theirs")
    backup = await download(source, "/api/admin/backup")
    target.add_job("ours")
    before = (target.rows(), target.blob_files())

    response = await target.client.post(
        "/api/admin/restore", content=backup, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 409
    end = target.store.max_position()
    assert f"not empty: its event store holds {end} events" in response.json()["detail"]
    assert (target.rows(), target.blob_files()) == before
    assert target.leftovers() == []


async def test_a_restore_into_a_deployment_that_made_its_first_admin_says_why_it_is_refused(
    source: Deployment, make_database: Callable[[], str], nats_url: str, tmp_path: Path
) -> None:
    source.add_job("theirs")
    backup = await download(source, "/api/admin/backup")
    async with serving(make_database(), nats_url, tmp_path / "fresh") as fresh:
        response = await fresh.client.post("/api/admin/restore", content=backup, headers=GZIP)
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "first start with authentication on" in detail
        assert "stop the stack and run `vdo restore FILE`" in detail
        assert fresh.store.max_position() == 2


async def test_read_models_ahead_of_an_empty_store_refuse_a_restore(
    source: Deployment, target: Deployment
) -> None:
    source.add_job("theirs")
    backup = await download(source, "/api/admin/backup")
    # Left over from another history: catching up from here would build on it.
    with psycopg.connect(target.database_url, autocommit=True) as conn:
        conn.execute("UPDATE vdo_read.tracking SET position = 7")

    response = await target.client.post("/api/admin/restore", content=backup, headers=GZIP)
    assert response.status_code == 409
    assert "read models reflect position 7" in response.json()["detail"]
    assert target.rows() == []
    assert target.blob_files() == {}


def flip_compressed(bundle: bytes) -> bytes:
    at = len(bundle) // 2
    return bundle[:at] + bytes([bundle[at] ^ 0x01]) + bundle[at + 1 :]


def flip_in_a_blob(bundle: bytes) -> bytes:
    """One byte of a blob changed, the archive otherwise whole and well compressed."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(bundle)), mode="r:") as tar,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.USTAR_FORMAT) as changed,
    ):
        for member in tar.getmembers():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.startswith("blobs/"):
                data = bytes([data[0] ^ 0x01]) + data[1:]
            changed.addfile(member, io.BytesIO(data))
    return gzip.compress(out.getvalue())


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (flip_compressed, "refused, nothing was changed"),
        (flip_in_a_blob, "its checksum does not match"),
        (lambda _: b"not a bundle", "not a gzip-compressed archive"),
        (lambda bundle: bundle[: len(bundle) // 2], "truncated"),
    ],
    ids=["a compressed byte flipped", "a blob byte flipped", "not a bundle", "cut in half"],
)
async def test_a_damaged_bundle_is_refused_and_changes_nothing(
    source: Deployment,
    target: Deployment,
    tamper: Callable[[bytes], bytes],
    reason: str,
) -> None:
    source.add_job("theirs")
    bundle = tamper(await download(source, "/api/admin/backup"))

    response = await target.client.post("/api/admin/restore", content=bundle, headers=GZIP)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the bundle is refused, nothing was changed")
    assert reason in detail
    assert str(target.settings.home) not in detail
    assert target.store.max_position() == 0
    assert target.blob_files() == {}
    assert target.leftovers() == []


async def test_an_export_imports_only_where_the_log_ends(
    source: Deployment, target: Deployment
) -> None:
    source.add_job("first")
    cut = source.store.max_position()
    restored = await target.client.post(
        "/api/admin/restore", content=await download(source, "/api/admin/backup"), headers=GZIP
    )
    assert restored.status_code == 200, restored.text
    source.add_job("second")
    end = source.store.max_position()

    response = await source.client.get("/api/admin/export", params={"since": cut})
    assert response.headers["content-disposition"].startswith(
        f'attachment; filename="vdo-export-{cut}-'
    )
    export = response.content
    late = await download(source, "/api/admin/export", since=cut + 1)

    # An export that begins after this log's end would leave a gap.
    refused = await target.client.post("/api/admin/import", content=late, headers=GZIP)
    assert refused.status_code == 409
    assert f"ends at position {cut + 1}" in refused.json()["detail"]
    assert f"log ends at {cut}" in refused.json()["detail"]
    assert target.store.max_position() == cut

    # A backup is not an export (and an export is not a backup).
    wrong = await target.client.post("/api/admin/restore", content=export, headers=GZIP)
    assert wrong.status_code == 422
    assert "POST /api/admin/import" in wrong.json()["detail"]

    imported = await target.client.post("/api/admin/import", content=export, headers=GZIP)
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert (body["outcome"], body["kind"], body["since"], body["last_position"]) == (
        "imported",
        "export",
        cut,
        end,
    )
    assert target.rows() == source.rows()
    assert target.blob_files() == source.blob_files()

    again = await target.client.post("/api/admin/import", content=export, headers=GZIP)
    assert again.status_code == 200
    assert again.json()["outcome"] == "already_present"
    assert "nothing was imported twice" in again.json()["detail"]
    assert target.rows() == source.rows()
    assert target.leftovers() == []


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("-1", "query parameter 'since'"),
        ("x", "query parameter 'since'"),
        ("99", "position 99 is after the end of the log"),
    ],
)
async def test_an_export_from_a_bad_position_is_refused(
    source: Deployment, since: str, reason: str
) -> None:
    source.add_job("only")
    response = await source.client.get("/api/admin/export", params={"since": since})
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert source.leftovers() == []


async def test_an_upload_that_is_not_a_bundle_file_is_refused(target: Deployment) -> None:
    for headers in ({"Content-Type": "application/json"}, {}):
        response = await target.client.post("/api/admin/import", content=b"{}", headers=headers)
        assert response.status_code == 415
        assert "Content-Type: application/gzip" in response.json()["detail"]
    empty = await target.client.post("/api/admin/import", content=b"", headers=GZIP)
    assert empty.status_code == 422
    assert "empty" in empty.json()["detail"]
    assert target.leftovers() == []


async def test_a_bundle_over_the_limit_is_refused_while_it_arrives(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    limit = 64 * KIB
    async with AsyncExitStack() as stack:
        small = await stack.enter_async_context(
            serving(database_url, nats_url, tmp_path, GatewaySettings(max_bundle_bytes=limit))
        )
        before = small.store.max_position()
        body = os.urandom(limit + 1)
        for path in ("/api/admin/restore", "/api/admin/import"):
            for content in (body, in_pieces(body, 16 * KIB)):
                response = await small.client.post(path, content=content, headers=GZIP)
                assert response.status_code == 413
                assert f"limit of {limit} bytes" in response.json()["detail"]
        assert small.store.max_position() == before
        assert small.leftovers() == []


# ---- verify --------------------------------------------------------------------------------


@asynccontextmanager
async def projector_answering(nats_url: str, database_url: str) -> AsyncIterator[None]:
    """The projector's answer to verify requests, as its process runs it."""
    nc = await connect(nats_url, name="test-projector")
    try:
        await answer_verify_requests(nc, database_url)
        yield
    finally:
        await nc.close()


async def test_verify_says_equal_then_names_each_row_that_was_tampered_with(
    source: Deployment, nats_url: str
) -> None:
    source.add_job("first")
    source.add_job("second")
    projection = Projection(source.database_url)
    projection.catch_up()
    projection.close()
    end = source.store.max_position()
    async with projector_answering(nats_url, source.database_url):
        response = await source.client.post("/api/admin/verify")
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["equal"], report["position"], report["problem"]) == (True, end, None)
        assert [t["table"] for t in report["tables"]] == list(readmodels.TABLES)
        assert all(t["equal"] and t["rows"] == [] for t in report["tables"])
        assert all(t["live_checksum"] == t["replayed_checksum"] for t in report["tables"])

        with psycopg.connect(source.database_url, autocommit=True) as conn:
            (job_id,) = conn.execute(
                "UPDATE vdo_read.jobs SET title = 'tampered' WHERE title = 'first' RETURNING id"
            ).fetchone() or (None,)
            conn.execute(
                "DELETE FROM vdo_read.steps WHERE job_id = %s AND step = 'build'", (job_id,)
            )
        response = await source.client.post("/api/admin/verify")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["equal"] is False
        tables = {t["table"]: t for t in report["tables"]}
        jobs, steps = tables.pop("jobs"), tables.pop("steps")
        assert all(t["equal"] for t in tables.values())
        assert (jobs["equal"], jobs["different"], jobs["missing"], jobs["extra"]) == (
            False,
            1,
            0,
            0,
        )
        (row,) = jobs["rows"]
        assert (row["kind"], row["key"]) == ("different", {"id": str(job_id)})
        assert row["columns"]["title"] == ["tampered", "first"]
        assert (steps["equal"], steps["missing"], steps["different"]) == (False, 1, 0)
        assert steps["rows"][0]["kind"] == "missing"
        assert steps["rows"][0]["key"]["job_id"] == str(job_id)
    # Nothing was changed by the check: the tampered row is still there.
    with psycopg.connect(source.database_url) as conn:
        titles = conn.execute("SELECT title FROM vdo_read.jobs ORDER BY title").fetchall()
    assert titles == [("second",), ("tampered",)]


async def test_verify_without_a_projector_answers_503_and_says_what_to_do(
    source: Deployment,
) -> None:
    response = await source.client.post("/api/admin/verify")
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert "no projector is running to answer" in detail
    assert "vdo replay --verify" in detail


async def test_verify_is_for_admins_only(source: Deployment, nats_url: str) -> None:
    token = add_user(source.store, "vic", Role.VIEWER)
    async with projector_answering(nats_url, source.database_url):
        response = await source.client.post(
            "/api/admin/verify", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 403, response.text


async def test_a_verify_that_fails_in_the_projector_answers_500_with_its_reason(
    source: Deployment, nats_url: str, make_database: Callable[[], str]
) -> None:
    # A projector on read models the check cannot read (their version's record damaged).
    damaged = make_database()
    with psycopg.connect(damaged, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vdo_read")
        conn.execute("CREATE TABLE vdo_read.tracking (position bigint)")
        conn.execute("CREATE TABLE vdo_read.schema_version (damaged integer)")
    async with projector_answering(nats_url, damaged):
        response = await source.client.post("/api/admin/verify")
    assert response.status_code == 500, response.text
    detail = response.json()["detail"]
    assert detail.startswith("verifying the read models failed: ")
    assert 'column "version" does not exist' in detail
