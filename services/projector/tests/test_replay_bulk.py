"""The bulk replay against the incremental projector: random histories (retries, failures,
cancellations, resumes, awkward text and JSON) give the same read models both ways, and the
cheap decoding gives what the store's own does."""

from __future__ import annotations

import random

import psycopg
import pytest
from services.projector.tests.histories import random_history

from vdo_kernel import readmodels
from vdo_kernel.store import JobStore
from vdo_projector.eventlog import decode, read_log
from vdo_projector.projection import Projection, checksums, rebuild
from vdo_projector.updates import storable


@pytest.mark.parametrize("seed", range(6))
def test_a_random_history_replays_to_the_read_models_the_projector_keeps(
    database_url: str, store: JobStore, seed: int
) -> None:
    projection = Projection(database_url, store, batch_size=rng_batch(seed))
    try:

        def now_and_then(rng: random.Random) -> None:
            if rng.random() < 0.3:
                projection.catch_up()

        random_history(store, random.Random(seed), now_and_then)
        projection.catch_up()
        assert projection.position() == store.max_position()
        live = checksums(database_url)
        summary = rebuild(database_url)
        assert summary.events_applied == summary.position == store.max_position()
        assert summary.checksums == live
        # And the other way round: the projector carries on from a bulk replay.
        random_history(store, random.Random(seed + 100))
        projection.catch_up()
        assert rebuild(database_url).checksums == checksums(database_url)
    finally:
        projection.close()


def rng_batch(seed: int) -> int:
    return [1, 2, 7, 500][seed % 4]


def test_the_cheap_decoding_gives_what_the_store_gives(database_url: str, store: JobStore) -> None:
    for seed in range(3):
        random_history(store, random.Random(seed))
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(store.read_after_sql, (0, 100_000)).fetchall()
    assert len(rows) == store.max_position()
    for row in rows:
        fast = decode(store, row)
        slow = store.decode_row(row)
        assert (fast.position, fast.job_id, fast.version, fast.type) == (
            slow.position,
            slow.job_id,
            slow.version,
            slow.type,
        )
        assert fast.timestamp == slow.timestamp.isoformat()
        assert fast.data == storable(slow.data)


def test_the_log_is_read_in_chunks_up_to_a_position(database_url: str, store: JobStore) -> None:
    random_history(store, random.Random(1))
    total = store.max_position()
    with psycopg.connect(database_url) as conn, conn.transaction():
        chunks = list(read_log(conn, store, after=2, until=total - 1, chunk_size=4))
    positions = [event.position for chunk in chunks for event in chunk]
    assert positions == list(range(3, total))
    assert all(len(chunk) <= 4 for chunk in chunks)


def test_a_rebuild_of_an_empty_log_leaves_empty_read_models(database_url: str) -> None:
    summary = rebuild(database_url)
    assert (summary.events_applied, summary.position) == (0, 0)
    with psycopg.connect(database_url) as conn:
        assert readmodels.projector_position(conn) == 0
        assert conn.execute("SELECT count(*) FROM vdo_read.jobs").fetchone() == (0,)
