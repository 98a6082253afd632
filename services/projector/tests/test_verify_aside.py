"""Verifying the live read models against the log: equal when they are, and the exact rows and
columns when they are not; the live read models and the projector are left alone."""

from __future__ import annotations

import random
from collections.abc import Iterator

import psycopg
import pytest
from services.projector.tests.histories import random_history

from vdo_kernel import readmodels
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, checksums
from vdo_projector.verify import ASIDE_PREFIX, verify


@pytest.fixture
def projected(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    random_history(store, random.Random(3))
    projection.catch_up()
    yield projection
    projection.close()


def execute(database_url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def aside_schemas(database_url: str) -> list[tuple[object, ...]]:
    return execute(
        database_url,
        f"SELECT nspname FROM pg_namespace WHERE nspname LIKE '{ASIDE_PREFIX}%'",
    )


def test_consistent_read_models_verify_equal(
    database_url: str, store: JobStore, projected: Projection
) -> None:
    before = checksums(database_url)
    report = verify(database_url)
    assert report.equal
    assert report.problem is None
    assert report.position == store.max_position()
    assert {t.table: t.live_checksum for t in report.tables} == before
    assert all(t.live_checksum == t.replayed_checksum for t in report.tables)
    # Nothing is left behind, nothing live is changed.
    assert aside_schemas(database_url) == []
    assert checksums(database_url) == before
    assert projected.position() == store.max_position()


def test_verify_compares_at_the_position_the_live_read_models_reflect(
    database_url: str, store: JobStore, projected: Projection
) -> None:
    position = projected.position()
    random_history(store, random.Random(4))  # written, not projected yet
    report = verify(database_url)
    assert report.equal
    assert report.position == position < store.max_position()
    projected.catch_up()
    assert verify(database_url).position == store.max_position()


def test_a_tampered_row_is_named_with_the_column_that_differs(
    database_url: str, projected: Projection
) -> None:
    ((job_id, title),) = execute(database_url, "SELECT id, title FROM vdo_read.jobs LIMIT 1")
    execute(database_url, f"UPDATE vdo_read.jobs SET title = 'x' WHERE id = '{job_id}'")

    report = verify(database_url)

    assert not report.equal
    tables = {t.table: t for t in report.tables}
    assert tables["steps"].equal
    assert tables["timeline"].equal
    jobs = tables["jobs"]
    assert (jobs.different, jobs.missing, jobs.extra) == (1, 0, 0)
    (row,) = jobs.rows
    assert row.kind == "different"
    assert row.key == {"id": str(job_id)}
    assert row.columns == {"title": ["x", title]}


def test_a_deleted_row_is_missing_and_an_added_one_extra(
    database_url: str, projected: Projection
) -> None:
    ((job_id, step, attempt),) = execute(
        database_url, "SELECT job_id, step, attempt FROM vdo_read.steps ORDER BY 1, 2, 3 LIMIT 1"
    )
    execute(
        database_url,
        f"DELETE FROM vdo_read.steps WHERE job_id = '{job_id}' AND step = '{step}' "
        f"AND attempt = {attempt}",
    )
    execute(
        database_url,
        "INSERT INTO vdo_read.timeline (position, job_id, version, type, timestamp, data) "
        f"VALUES (999999, '{job_id}', 99, 'Forged', now(), '{{}}')",
    )

    report = verify(database_url)

    assert not report.equal
    tables = {t.table: t for t in report.tables}
    assert tables["jobs"].equal
    steps = tables["steps"]
    assert (steps.missing, steps.extra, steps.different) == (1, 0, 0)
    assert steps.rows[0].kind == "missing"
    assert steps.rows[0].key == {"job_id": str(job_id), "step": step, "attempt": attempt}
    timeline = tables["timeline"]
    assert (timeline.missing, timeline.extra, timeline.different) == (0, 1, 0)
    assert timeline.rows[0].kind == "extra"
    assert timeline.rows[0].key == {"position": 999999}
    assert aside_schemas(database_url) == []


def test_the_listing_is_capped_but_every_row_is_counted(
    database_url: str, projected: Projection
) -> None:
    execute(database_url, "UPDATE vdo_read.timeline SET type = 'x'")
    [(total,)] = execute(database_url, "SELECT count(*) FROM vdo_read.timeline")
    assert isinstance(total, int)
    assert total > 3

    report = verify(database_url, listing_cap=3)

    timeline = next(t for t in report.tables if t.table == "timeline")
    assert timeline.different == total
    assert [row.key["position"] for row in timeline.rows] == [1, 2, 3]
    assert all(set(row.columns) == {"type"} for row in timeline.rows)


def test_without_read_models_there_is_nothing_to_verify(database_url: str, store: JobStore) -> None:
    random_history(store, random.Random(5))
    report = verify(database_url)
    assert not report.equal
    assert report.problem is not None
    assert "projector has not run" in report.problem
    with psycopg.connect(database_url) as conn:
        assert not readmodels.exists(conn)


def test_a_tampered_model_call_is_named_by_its_key(
    database_url: str, projected: Projection
) -> None:
    rows = execute(
        database_url,
        "SELECT key, cost_usd FROM vdo_read.model_calls WHERE finished_at IS NOT NULL "
        "ORDER BY key LIMIT 1",
    )
    assert rows, "the history has a finished model call"
    ((key, cost),) = rows
    execute(database_url, f"UPDATE vdo_read.model_calls SET cost_usd = 99 WHERE key = '{key}'")

    report = verify(database_url)

    assert not report.equal
    tables = {t.table: t for t in report.tables}
    assert set(tables) == set(readmodels.TABLES)
    assert all(t.equal for name, t in tables.items() if name != "model_calls")
    calls = tables["model_calls"]
    assert (calls.different, calls.missing, calls.extra) == (1, 0, 0)
    (row,) = calls.rows
    assert row.key == {"key": key}
    assert row.columns == {"cost_usd": [99.0, cost]}
