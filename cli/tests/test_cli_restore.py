"""`vdo restore` into a deployment that holds only what its first start wrote (its first admin
and token): replaced with the stack stopped, and refused, changing nothing, while its stack runs,
when its NATS is unknown, or when it holds anything more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from vdo_cli.main import app
from vdo_kernel.accounts import Role, User
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bootstrap import ensure_admin, read_token_file
from vdo_kernel.domain import Job
from vdo_kernel.portability import write_bundle
from vdo_kernel.relay import RELAY_LOCK_KEY
from vdo_kernel.store import JobStore


def rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM vdo_events ORDER BY notification_id"
        ).fetchall()


@pytest.fixture
def backup(store: JobStore, tmp_path: Path) -> Path:
    """A backup of a deployment with two jobs (and, having run with authentication off, no
    users at all)."""
    for title in ("one", "two"):
        job = Job.submit(title=title, description="a small program")
        job.admit(by="scheduler", causation_id="test")
        store.save(job)
    out = tmp_path / "backup.tar.gz"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    write_bundle(store, BlobStore(tmp_path / "source-blobs"), out, scratch=scratch)
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def first_started(make_database: Any, home: Path) -> str:
    """A deployment's database after its first start: the first admin, its token kept in
    VDO_HOME."""
    url: str = make_database()
    target = JobStore(url, pool_size=1)
    try:
        ensure_admin(target, home)
    finally:
        target.close()
    assert read_token_file(home) is not None
    return url


def restore(
    bundle: Path, home: Path, database_url: str, nats_url: str | None = None
) -> tuple[int, str]:
    env = {"VDO_HOME": str(home), "VDO_DATABASE_URL": database_url, "VDO_NATS_URL": nats_url}
    result = CliRunner().invoke(app, ["restore", str(bundle)], env=env)
    return result.exit_code, " ".join(result.output.split())


def test_a_first_start_is_replaced_by_the_backup(
    backup: Path, home: Path, first_started: str, database_url: str, nats_url: str
) -> None:
    code, said = restore(backup, home, first_started, nats_url)
    assert code == 0, said
    assert rows(first_started) == rows(database_url)
    assert "restored 4 events" in said
    assert f"the event stream on {nats_url} was recreated" in said
    assert "read models rebuilt from 4 events up to position 4" in said
    assert "replaced this deployment's first start (2 events" in said
    assert f"removed {home / 'admin-token'}" in said
    assert not (home / "admin-token").exists()
    # The backup has no users: the next start makes a first admin again.
    assert "the backup has no admin: the next `vdo up` makes a first admin" in said
    # Again: recognised, nothing replaced twice.
    code, said = restore(backup, home, first_started, nats_url)
    assert code == 0, said
    assert "already holds these 4 events" in said
    assert rows(first_started) == rows(database_url)


def test_a_running_stack_is_refused_and_nothing_changes(
    backup: Path, home: Path, first_started: str, nats_url: str
) -> None:
    before = rows(first_started)
    with psycopg.connect(first_started, autocommit=True) as relay:
        relay.execute("SELECT pg_advisory_lock(%s)", (RELAY_LOCK_KEY,))
        code, said = restore(backup, home, first_started, nats_url)
    assert code == 1
    assert "the stack of this deployment is running" in said
    assert "stop it, then restore" in said
    assert rows(first_started) == before
    assert (home / "admin-token").exists()


def test_an_unknown_nats_is_refused_and_nothing_changes(
    backup: Path, home: Path, first_started: str
) -> None:
    before = rows(first_started)
    code, said = restore(backup, home, first_started)
    assert code == 1
    assert "the deployment's NATS is not known" in said
    assert "nothing was changed" in said
    assert rows(first_started) == before


def test_more_than_a_first_start_is_refused_and_nothing_changes(
    backup: Path, home: Path, first_started: str, nats_url: str
) -> None:
    target = JobStore(first_started, pool_size=1)
    try:
        target.save(User.add(name="ada", role=Role.MEMBER, by="admin"))
    finally:
        target.close()
    before = rows(first_started)
    code, said = restore(backup, home, first_started, nats_url)
    assert code == 1
    assert "this deployment is not empty: its event store holds 3 events" in said
    assert rows(first_started) == before
    assert (home / "admin-token").exists()
