"""Versions: a submission stored before routes existed (JobSubmitted v1) projects with no routes,
and read models made by an older version of the projector are rebuilt from the log when it
starts, not altered in place."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from services.projector.tests.histories import random_history

from vdo_kernel import readmodels
from vdo_kernel.domain import Job
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, checksums, rebuild
from vdo_projector.verify import verify


def save_v1_submission(store: JobStore, title: str, version: int = 1) -> UUID:
    """A JobSubmitted as version 1 stored it (no routes, no priority, no class version), or
    version 2 (routes, no priority)."""
    job = Job.submit(title=title, description="stored before routes existed", budget_usd=2.0)
    (event,) = job.collect_events()
    stored = store.app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    assert state.pop("class_version") == 3
    del state["priority"]
    if version == 1:
        del state["routes"]
    else:
        state["class_version"] = version
    store.recorder.insert_events(
        [
            StoredEvent(
                originator_id=stored.originator_id,
                originator_version=stored.originator_version,
                topic=stored.topic,
                state=json.dumps(state).encode(),
            )
        ]
    )
    return job.id


def make_version_1(database_url: str) -> None:
    """Turn the read models into the shape version 1 gave them (the rows stay)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE vdo_read.schema_version")
        conn.execute("DROP TABLE vdo_read.model_calls")
        conn.execute("ALTER TABLE vdo_read.jobs DROP COLUMN cost_usd, DROP COLUMN routes")


def version(database_url: str) -> int | None:
    with psycopg.connect(database_url) as conn:
        return readmodels.schema_version(conn)


def test_a_version_1_submission_projects_with_no_routes_both_ways(
    database_url: str, store: JobStore
) -> None:
    old = save_v1_submission(store, "old")
    older_than_the_queue = save_v1_submission(store, "v2", version=2)
    new = Job.submit(
        title="new", description="d", routes={"tester": ["openai:gpt-4.1"]}, priority=7
    )
    store.save(new)
    projection = Projection(database_url, store)
    try:
        projection.catch_up()
        with psycopg.connect(database_url) as conn:
            old_row, new_row = readmodels.get_job(conn, old), readmodels.get_job(conn, new.id)
            v2_row = readmodels.get_job(conn, older_than_the_queue)
        assert old_row is not None
        assert new_row is not None
        assert v2_row is not None
        assert (old_row.title, old_row.routes, old_row.budget_usd) == ("old", {}, 2.0)
        assert new_row.routes == {"tester": ["openai:gpt-4.1"]}
        # Before the queue, every job had the default priority; they wait in the queue as any.
        assert (old_row.priority, v2_row.priority, new_row.priority) == (5, 5, 7)
        assert (old_row.queue_position, v2_row.queue_position, new_row.queue_position) == (
            2,
            3,
            1,
        )
        # The store upcasts the old events: the jobs read the same through the domain.
        assert store.get(old).routes == {}
        assert (store.get(old).priority, store.get(older_than_the_queue).priority) == (5, 5)
        assert rebuild(database_url).checksums == checksums(database_url)
    finally:
        projection.close()


def test_read_models_of_version_1_are_rebuilt_when_the_projector_starts(
    database_url: str, store: JobStore
) -> None:
    random_history(store, random.Random(11))
    first = Projection(database_url, store)
    try:
        first.catch_up()
    finally:
        first.close()
    expected = checksums(database_url)
    make_version_1(database_url)
    assert version(database_url) == 1
    # Read as they are, they would be wrong: nothing reads them until they are rebuilt.
    with pytest.raises(readmodels.OutdatedReadModelsError, match="version 1"):
        checksums(database_url)
    report = verify(database_url)
    assert not report.equal
    assert report.problem is not None
    assert "version 1" in report.problem
    assert "rebuilds them" in report.problem
    printed = subprocess.run(
        [sys.executable, "-m", "vdo_projector", "checksums"],
        env={**os.environ, "VDO_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 1
    assert f"version 1, this code's are of version {readmodels.SCHEMA_VERSION}" in printed.stderr
    assert "Traceback" not in printed.stderr

    restarted = Projection(database_url, store)
    try:
        restarted.setup()
        assert version(database_url) == readmodels.SCHEMA_VERSION
        assert restarted.position() == store.max_position()
        assert checksums(database_url) == expected
        assert verify(database_url).equal
        # And it carries on from there.
        random_history(store, random.Random(12))
        restarted.catch_up()
        assert rebuild(database_url).checksums == checksums(database_url)
    finally:
        restarted.close()


def test_two_projectors_starting_on_old_read_models_at_once(
    database_url: str, store: JobStore
) -> None:
    random_history(store, random.Random(13))
    first = Projection(database_url, store)
    try:
        first.catch_up()
    finally:
        first.close()
    expected = checksums(database_url)
    make_version_1(database_url)
    replicas = [Projection(database_url) for _ in range(2)]
    ready = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def start(replica: Projection) -> None:
        try:
            ready.wait(timeout=30)
            replica.setup()
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert version(database_url) == readmodels.SCHEMA_VERSION
        assert checksums(database_url) == expected
        assert all(replica.position() == store.max_position() for replica in replicas)
    finally:
        for replica in replicas:
            replica.close()


def test_read_models_of_a_newer_version_are_left_alone(database_url: str, store: JobStore) -> None:
    random_history(store, random.Random(14))
    projection = Projection(database_url, store)
    projection.catch_up()
    projection.close()
    expected = checksums(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE vdo_read.schema_version SET version = version + 1")

    newer = Projection(database_url, store)
    try:
        with pytest.raises(RuntimeError, match="newer than this projector's"):
            newer.setup()
    finally:
        newer.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(readmodels.OutdatedReadModelsError, match="a newer version"):
            readmodels.create_schema(conn)
        conn.execute("UPDATE vdo_read.schema_version SET version = version - 1")
    assert checksums(database_url) == expected
