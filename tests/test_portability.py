"""Backup, restore, export and import with the `vdo` commands on real stacks: a backup of a
running stack comes back whole in a fresh one, and a migration loses and repeats nothing."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from tests.harness import ADMIN_TOKEN, WORD_COUNT, RunningStack, start_stack
from typer.testing import CliRunner

from vdo_cli.main import app
from vdo_kernel.blobs import BlobStore
from vdo_kernel.store import JobStore
from vdo_projector.projection import checksums


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


def test_a_backup_of_a_running_stack_restores_whole_into_a_fresh_one(
    make_stack: Callable[..., RunningStack],
    make_database: Callable[[], str],
    nats_url: str,
    tmp_path: Path,
) -> None:
    second_database = make_database()
    source = make_stack()
    completed = [source.submit(f"done {n}") for n in range(2)]
    # The scripted builder's first attempt fails its tests here, and there is no second.
    failed = source.submit("fails", WORD_COUNT + ", to show the repair loop", max_attempts=1)
    for job_id in [*completed, failed]:
        source.wait_for(job_id)
    assert source.job(failed)["status"] == "failed"
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
        assert f"{count} events of 6 jobs" in said, said
        # Nothing moves in the source now, so its read models are the ones at the backup.
        source_checksums = checksums(source.database_url)
        states = {
            j: source.job(j)["status"] for j in [*completed, failed, halfway, queued, cancelled]
        }
        assert sorted(states.values()) == sorted(
            ["completed", "completed", "failed", "running", "queued", "cancelled"]
        )
        source_history = {j: source.events(j) for j in states}
        source_rows = rows(source.database_url)
    finally:
        source.stack.kill("builder", signal.SIGCONT)
        source.stack.kill("scheduler", signal.SIGCONT)

    home = tmp_path / "restored"
    said = vdo("restore", str(bundle), home=home, database_url=second_database, nats_url=nats_url)
    assert f"restored {count} events" in said, said
    assert "the event stream is ready" in said, said
    assert rows(second_database) == source_rows
    assert checksums(second_database) == source_checksums
    said = vdo("restore", str(bundle), home=home, database_url=second_database)
    assert f"already holds these {count} events" in said, said
    assert rows(second_database) == source_rows

    restored = start_stack(home, second_database)
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
            assert api.get("/api/jobs").json()["total"] == 6
            # The source's admin and its token came with the backup (the token as a digest):
            # the restored deployment answers to it, and made no admin of its own.
            me = api.get("/api/me").json()
            assert (me["name"], me["role"], me["token"]["name"]) == (
                "admin",
                "admin",
                "VDO_ADMIN_TOKEN",
            )
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
