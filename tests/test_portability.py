"""Backup, restore, export and import with the `vdo` commands on real stacks: a backup of a
running stack comes back whole in a fresh one (one that started once with authentication on,
so holds its own first admin, which the restore replaces), and a migration loses and repeats
nothing."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from tests.harness import ADMIN_TOKEN, WORD_COUNT, RunningStack, start_stack
from typer.testing import CliRunner

from vdo_cli.main import app
from vdo_kernel.blobs import BlobStore
from vdo_kernel.store import JobStore
from vdo_projector.projection import checksums

# The scripted builder's first attempt at this one fails its tests; a second attempt passes.
REPAIRED = WORD_COUNT + ", to show the repair loop"


def vdo(
    *args: str,
    home: Path,
    database_url: str | None = None,
    nats_url: str | None = None,
    ok: bool = True,
) -> str:
    """Run a `vdo` command as a user would, against the deployment at `home`."""
    env = {"VDO_HOME": str(home), "VDO_DATABASE_URL": database_url, "VDO_NATS_URL": nats_url}
    result = CliRunner().invoke(app, list(args), env=env)
    assert (result.exit_code == 0) is ok, result.output
    # One line, whatever the console's width wrapped.
    return " ".join(result.output.split())


def rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM vdo_events ORDER BY notification_id"
        ).fetchall()


def blob_files(home: Path) -> set[str]:
    root = home / "blobs"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def wait_projected(database_url: str, timeout: float = 30.0) -> None:
    """Until the projector has applied every stored event."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT position FROM vdo_read.tracking), "
                "(SELECT COALESCE(MAX(notification_id), 0) FROM vdo_events)"
            ).fetchone()
            if row is not None and row[0] == row[1]:
                return
            time.sleep(0.1)
    raise AssertionError("the projector did not catch up")


def referenced_digests(events: list[dict[str, Any]], blobs: BlobStore) -> set[str]:
    digests = set()
    for event in events:
        for name, digest in event["data"].get("artifacts", {}).items():
            digests.add(digest)
            if name in ("files", "tests"):
                digests.update(json.loads(blobs.get(digest)).values())
    return digests


def finished(step: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(
        e["type"] == "StepFinished" and e["data"]["step"] == step for e in events
    )


def add_user(api: httpx.Client, name: str, role: str) -> str:
    """A user made by the admin through the API, and a token of theirs (returned)."""
    added = api.post("/api/users", json={"name": name, "role": role})
    assert added.status_code == 201, added.text
    made = api.post("/api/tokens", json={"user": name, "name": "laptop"})
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


def results(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """Everything the API gives of a job's result: its log, its files (listed, each one, the
    zip) and the diff between its attempts."""
    got: dict[str, Any] = {}
    for name, url in (
        ("job", f"/api/jobs/{job_id}"),
        ("log", f"/api/jobs/{job_id}/logs?include=replies"),
        ("files", f"/api/jobs/{job_id}/artifacts"),
        ("diff", f"/api/jobs/{job_id}/diff"),
        ("audit", f"/api/jobs/{job_id}/audit"),
    ):
        response = api.get(url)
        assert response.status_code == 200, (url, response.text)
        got[name] = response.json() if name != "audit" else response.text
    assert got["files"]["items"], "the result has files"
    for listed in got["files"]["items"]:
        response = api.get(f"/api/jobs/{job_id}/artifacts/file", params={"path": listed["path"]})
        assert response.status_code == 200, response.text
        got[f"file {listed['path']}"] = response.content
    response = api.get(f"/api/jobs/{job_id}/artifacts.zip")
    assert response.status_code == 200, response.text
    got["zip"] = response.content
    return got


def test_a_backup_of_a_running_stack_restores_whole_into_a_fresh_one(
    make_stack: Callable[..., RunningStack],
    make_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    second_database = make_database()
    source = make_stack()
    # A member and a viewer with their tokens; the member's job needs a second attempt (the
    # scripted builder's first fails its tests), so it has a diff; and a template.
    with source.api() as api:
        ada = add_user(api, "ada", "member")
        vic = add_user(api, "vic", "viewer")
        made = api.post(
            "/api/templates",
            json={"name": "our-wc", "title": "wc", "description": WORD_COUNT, "priority": 3},
        )
        assert made.status_code == 201, made.text
        template = made.json()
    with source.api(ada) as api:
        submitted = api.post(
            "/api/jobs",
            json={"title": "repaired", "description": REPAIRED, "max_attempts": 2},
        )
        assert submitted.status_code == 201, submitted.text
        repaired = submitted.json()["id"]
    completed = [source.submit(f"done {n}") for n in range(2)]
    # The scripted builder's first attempt fails its tests here, and there is no second.
    failed = source.submit("fails", REPAIRED, max_attempts=1)
    for job_id in [repaired, *completed, failed]:
        source.wait_for(job_id)
    assert source.job(failed)["status"] == "failed"
    assert source.job(repaired)["status"] == "completed"
    # A job in the middle of its build: the builder is frozen, and its step is recorded as
    # started with no result, as when a worker dies mid-step.
    source.stack.kill("builder", signal.SIGSTOP)
    try:
        halfway = source.submit("halfway")
        source.wait_for(halfway, finished("plan"))
        store = JobStore(source.database_url, pool_size=1)
        try:
            job = store.get(UUID(halfway))
            due = job.due()
            assert due is not None
            job.start_step(due, worker="builder@gone", causation_id="test")
            store.save(job)
        finally:
            store.close()
        # Two jobs nobody has started on: one waits in the queue (the scheduler is frozen), one
        # is cancelled there.
        source.stack.kill("scheduler", signal.SIGSTOP)
        queued = source.submit("queued")
        cancelled = source.submit("cancelled")
        store = JobStore(source.database_url, pool_size=1)
        try:
            job = store.get(UUID(cancelled))
            job.cancel(reason="not needed after all", by="test", causation_id="test")
            store.save(job)
        finally:
            store.close()
        wait_projected(source.database_url)
        source_home = source.stack.settings.home
        bundle = tmp_path / "backup.tar.gz"
        said = vdo("backup", "--out", str(bundle), home=source_home)
        count = len(rows(source.database_url))
        assert f"{count} events of 7 jobs" in said, said
        # Nothing moves in the source now, so its read models are the ones at the backup.
        source_checksums = checksums(source.database_url)
        states = {
            j: source.job(j)["status"]
            for j in [repaired, *completed, failed, halfway, queued, cancelled]
        }
        assert sorted(states.values()) == sorted(
            ["completed", "completed", "completed", "failed", "running", "queued", "cancelled"]
        )
        source_history = {j: source.events(j) for j in states}
        source_rows = rows(source.database_url)
    finally:
        source.stack.kill("builder", signal.SIGCONT)
        source.stack.kill("scheduler", signal.SIGCONT)

    # The new deployment started once with authentication on: it made its first admin (two
    # events) and kept the generated token; then it was stopped.
    home = tmp_path / "restored"
    fresh = start_stack(home, second_database, admin_token=None)
    try:
        own_token = fresh.token
        with fresh.api() as api:
            assert api.get("/api/me").json()["name"] == "admin"
    finally:
        fresh.stack.stop()
    assert len(rows(second_database)) == 2

    said = vdo("restore", str(bundle), home=home, database_url=second_database)
    assert f"restored {count} events" in said, said
    assert "started the stopped stack's embedded NATS" in said, said
    assert "the event stream on nats://127.0.0.1:" in said, said
    assert "was recreated" in said, said
    assert f"read models rebuilt from {count} events" in said, said
    assert "replaced this deployment's first start (2 events" in said, said
    assert f"removed {home / 'admin-token'}" in said, said
    assert not (home / "admin-token").exists()
    assert rows(second_database) == source_rows
    assert checksums(second_database) == source_checksums
    said = vdo("restore", str(bundle), home=home, database_url=second_database)
    assert f"already holds these {count} events" in said, said
    assert rows(second_database) == source_rows

    # Started again as before (no VDO_ADMIN_TOKEN): the restored admins are found, none made.
    restored = start_stack(home, second_database, admin_token=None)
    restored.admin_token = ADMIN_TOKEN
    try:
        # The job that was mid-step resumes its build and completes in the new deployment.
        history = restored.wait_for(halfway)
        assert history[len(source_history[halfway])]["type"] == "StepResumed"
        assert history[-1]["type"] == "JobCompleted"
        # The queued job is admitted there and runs; the finished ones stay as they ended.
        assert restored.wait_for(queued)[-1]["type"] == "JobCompleted"
        assert restored.job(failed)["status"] == "failed"
        assert restored.job(cancelled)["status"] == "cancelled"
        blobs = BlobStore(home / "blobs")
        for job_id, events in source_history.items():
            assert restored.events(job_id)[: len(events)] == events
            assert restored.job(job_id)["title"] == source.job(job_id)["title"]
            assert all(blobs.get(d) for d in referenced_digests(events, blobs))
        with restored.api() as api:
            assert api.get("/api/jobs").json()["total"] == 7
            # The source's admin and its token came with the backup (the token as a digest):
            # the restored deployment answers to it, and made no admin of its own.
            me = api.get("/api/me").json()
            assert (me["name"], me["role"], me["token"]["name"]) == (
                "admin",
                "admin",
                "VDO_ADMIN_TOKEN",
            )
            tokens = api.get("/api/tokens").json()["items"]
            assert sorted((t["user"], t["name"]) for t in tokens) == [
                ("ada", "laptop"),
                ("admin", "VDO_ADMIN_TOKEN"),
                ("vic", "laptop"),
            ]
            # The template, unchanged.
            assert api.get(f"/api/templates/{template['id']}").json() == template
        # The deployment's own first token went with the events it replaced.
        with restored.api(own_token) as api:
            assert api.get("/api/me").status_code == 401
        # The member's token works, and sees only the member's job; the viewer's reads all.
        with restored.api(ada) as api:
            mine = api.get("/api/jobs").json()
            assert [job["id"] for job in mine["items"]] == [repaired]
            assert api.get(f"/api/jobs/{completed[0]}").status_code == 404
        with restored.api(vic) as api:
            assert api.get("/api/jobs").json()["total"] == 7
            assert api.post("/api/jobs", json={"title": "x"}).status_code == 403
        # A completed job's log, files, zip, diff and audit come back as the source gives them.
        with source.api() as there, restored.api() as here:
            expected = results(there, repaired)
            assert (expected["diff"]["from_attempt"], expected["diff"]["to_attempt"]) == (1, 2)
            assert expected["diff"]["items"], "the second attempt changed the code"
            assert results(here, repaired) == expected
        assert not any(ADMIN_TOKEN.encode() in bytes(row[4]) for row in rows(second_database))
    finally:
        restored.stack.stop()


def test_a_migration_by_export_and_import_loses_and_repeats_nothing(
    make_stack: Callable[..., RunningStack], make_database: Callable[[], str], tmp_path: Path
) -> None:
    second_database = make_database()
    source = make_stack()
    source_home = source.stack.settings.home
    target_home = tmp_path / "target"

    def into_target(*args: str, ok: bool = True) -> str:
        return vdo(*args, home=target_home, database_url=second_database, ok=ok)

    # A job that passes first time: submitted, admitted, then each of the six steps started and
    # finished, the four AI steps with one model call each (started and finished), then
    # completed.
    job_events = 1 + 1 + 6 * 2 + 4 * 2 + 1
    source.wait_for(source.submit("before the move"))
    vdo("backup", "--out", str(tmp_path / "b0.tar.gz"), home=source_home)
    into_target("restore", str(tmp_path / "b0.tar.gz"))
    cut = len(rows(second_database))

    # The source keeps working while the target is prepared; then the final, short cut-over.
    source.wait_for(source.submit("during the move"))
    vdo("export", "--since", str(cut), "--out", str(tmp_path / "e1.tar.gz"), home=source_home)
    said = into_target("import", str(tmp_path / "e1.tar.gz"))
    assert f"imported {job_events} events (positions after {cut}" in said, said
    said = into_target("import", str(tmp_path / "e1.tar.gz"))
    assert "nothing imported twice" in said, said

    # Part of what the target already holds: recognised, not added again.
    overlap = tmp_path / "overlap.tar.gz"
    vdo("export", "--since", str(cut + 1), "--out", str(overlap), home=source_home)
    assert "nothing imported twice" in into_target("import", str(overlap))

    # The final cut-over; an export that does not start where the target ends is refused.
    source.wait_for(source.submit("the last one"))
    end = cut + job_events
    gap = tmp_path / "gap.tar.gz"
    vdo("export", "--since", str(end + 1), "--out", str(gap), home=source_home)
    said = into_target("import", str(gap), ok=False)
    assert f"ends at position {end + 1}, but this deployment's log ends at {end}" in said, said
    vdo("export", "--since", str(end), "--out", str(tmp_path / "e2.tar.gz"), home=source_home)
    assert f"imported {job_events} events" in into_target("import", str(tmp_path / "e2.tar.gz"))

    assert rows(second_database) == rows(source.database_url)
    assert blob_files(target_home) == blob_files(source_home)
