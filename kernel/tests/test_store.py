"""The event store on a real PostgreSQL: gapless order, tracking, optimistic concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from eventsourcing.persistence import Tracking

from vdo_kernel.domain import Job, Outcome
from vdo_kernel.store import AlreadyHandledError, ConcurrencyError, JobNotFoundError, JobStore


def submit(store: JobStore) -> Job:
    job = Job.submit(title="t", description="d")
    store.save(job)
    return job


def admitted(store: JobStore) -> Job:
    """A job submitted and let run by the queue (two events)."""
    job = Job.submit(title="t", description="d")
    job.admit(by="scheduler", causation_id="test")
    store.save(job)
    return job


def test_positions_are_gapless_even_after_a_rejected_write(store: JobStore) -> None:
    job = admitted(store)
    stale = store.get(job.id)
    fresh = store.get(job.id)
    due = fresh.due()
    assert due is not None
    fresh.start_step(due, worker="a", causation_id="1")
    store.save(fresh)
    stale.start_step(due, worker="b", causation_id="1")
    with pytest.raises(ConcurrencyError):
        store.save(stale)
    submit(store)
    assert [e.position for e in store.read(0)] == [1, 2, 3, 4]


def test_concurrent_writers_get_distinct_ordered_positions(store: JobStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: submit(store), range(40)))
    positions = [e.position for e in store.read(0, limit=100)]
    assert positions == list(range(1, 41))
    assert store.max_position() == 40


def test_a_tracked_message_is_written_once(store: JobStore) -> None:
    job = admitted(store)
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="1")
    store.save(job)
    job.finish_step(due, outcome=Outcome.OK, summary="s", causation_id="1")
    store.save(job, tracking=Tracking("step-plan", 1))
    assert store.is_handled("step-plan", 1)
    again = store.get(job.id)
    next_due = again.due()
    assert next_due is not None
    again.start_step(next_due, worker="w", causation_id="1")
    before = store.max_position()
    with pytest.raises(AlreadyHandledError):
        store.save(again, tracking=Tracking("step-plan", 1))
    assert store.max_position() == before


def test_events_come_back_with_their_envelope(store: JobStore) -> None:
    job = submit(store)
    [event] = store.job_events(job.id)
    assert event.type == "JobSubmitted"
    assert event.position == 1
    assert event.version == 1
    assert event.correlation_id == str(job.id)
    assert event.data["title"] == "t"
    assert "originator_id" not in event.data


def test_an_unknown_job_is_not_found(store: JobStore) -> None:
    import uuid

    with pytest.raises(JobNotFoundError):
        store.get(uuid.uuid4())


def test_handled_means_exactly_that_message_not_an_earlier_one(store: JobStore) -> None:
    # Competing replicas finish messages out of order: position 7 done says nothing about 5.
    first, second = admitted(store), admitted(store)
    for job, position in ((first, 7), (second, 9)):
        due = job.due()
        assert due is not None
        job.start_step(due, worker="w", causation_id=str(position))
        store.save(job, tracking=Tracking("step-plan", position))
    assert store.is_handled("step-plan", 7)
    assert store.is_handled("step-plan", 9)
    assert not store.is_handled("step-plan", 5)
    assert not store.is_handled("step-plan", 8)
    assert not store.is_handled("step-build", 7)
