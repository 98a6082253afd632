"""The scheduler on a real store: admissions in order within the limits, each written once,
never on a stale decision, and jobs from before the queue existed."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from vdo_kernel.domain import DEFAULT_PRIORITY, Due, Job, Status, Step
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_scheduler.queue import Limits
from vdo_scheduler.scheduler import Scheduler, lead


def submit(store: JobStore, by: str = "ada", priority: int = DEFAULT_PRIORITY) -> UUID:
    job = Job.submit(title="t", description="d", submitted_by=by, priority=priority)
    store.save(job)
    return job.id


def admitted_in_order(store: JobStore) -> list[UUID]:
    return [e.job_id for e in store.read(0, limit=10_000) if e.type == "JobAdmitted"]


def end(store: JobStore, job_id: UUID) -> None:
    job = store.get(job_id)
    job.cancel(reason="done with it", by="ada", causation_id="test")
    store.save(job)


def test_the_highest_priority_goes_first_then_first_come_first_served(store: JobStore) -> None:
    low, normal1, high, normal2 = (
        submit(store, "u1", 1),
        submit(store, "u2", 5),
        submit(store, "u3", 9),
        submit(store, "u4", 5),
    )
    scheduler = Scheduler(store, Limits(max_running=2, max_per_user=1), worker="test")
    assert scheduler.settle() == 2
    assert admitted_in_order(store) == [high, normal1]
    assert [e.job_id for e in scheduler.queue.queued()] == [normal2, low]
    end(store, high)
    assert scheduler.settle() == 1
    end(store, normal1)
    end(store, normal2)
    assert scheduler.settle() == 1
    assert admitted_in_order(store) == [high, normal1, normal2, low]
    job = store.get(low)
    assert (job.status, job.due()) == (Status.RUNNING, Due(Step.PLAN, 1))


def test_a_users_second_job_waits_and_the_ones_behind_it_go_first(store: JobStore) -> None:
    first = submit(store, "ada")
    second = submit(store, "ada")
    other = submit(store, "bob")
    scheduler = Scheduler(store, Limits(max_running=3, max_per_user=1), worker="test")
    assert scheduler.settle() == 2
    assert admitted_in_order(store) == [first, other]
    # The second keeps its place: it runs as soon as its submitter's first job ends.
    assert [e.job_id for e in scheduler.queue.queued()] == [second]
    end(store, first)
    assert scheduler.settle() == 1
    assert admitted_in_order(store) == [first, other, second]


def test_never_more_than_the_limit_run_however_many_wait(store: JobStore) -> None:
    jobs = [submit(store, f"user{n % 5}") for n in range(30)]
    scheduler = Scheduler(store, Limits(max_running=4, max_per_user=2), worker="test")
    running: set[UUID] = set()
    while len(admitted_in_order(store)) < len(jobs):
        scheduler.settle()
        running = {j for j in admitted_in_order(store) if store.get(j).status is Status.RUNNING}
        assert len(running) <= 4
        end(store, sorted(running)[0])
    assert sorted(admitted_in_order(store)) == sorted(jobs)


def test_a_retried_job_goes_to_the_back_of_its_prioritys_line(store: JobStore) -> None:
    job_id = submit(store, "ada")
    scheduler = Scheduler(store, Limits(max_running=1, max_per_user=1), worker="test")
    scheduler.settle()
    end(store, job_id)
    waiting = submit(store, "bob")
    job = store.get(job_id)
    job.retry(Step.PLAN, by="ada", causation_id="test")
    store.save(job)
    retried = store.get(job_id)
    assert scheduler.settle() == 1
    assert admitted_in_order(store) == [job_id, waiting]
    end(store, waiting)
    assert scheduler.settle() == 1
    assert admitted_in_order(store) == [job_id, waiting, job_id]
    assert retried.attempt == 2
    # The owner of a job retried after it ended is the store's answer.
    assert scheduler.queue.jobs[job_id].submitted_by == "ada"


def test_a_retry_may_change_the_priority(store: JobStore) -> None:
    job_id = submit(store, "ada", priority=0)
    scheduler = Scheduler(store, Limits(max_running=1, max_per_user=1), worker="test")
    scheduler.settle()
    end(store, job_id)
    blocker = submit(store, "carol")
    scheduler.settle()
    waiting = submit(store, "bob", priority=5)
    job = store.get(job_id)
    job.retry(Step.PLAN, by="ada", priority=9, causation_id="test")
    store.save(job)
    scheduler.settle()
    end(store, blocker)
    scheduler.settle()
    assert admitted_in_order(store) == [job_id, blocker, job_id]
    assert [e.job_id for e in scheduler.queue.queued()] == [waiting]


def test_a_decision_on_a_stale_state_is_not_written(store: JobStore) -> None:
    first, second = submit(store, "ada"), submit(store, "bob")
    one = Scheduler(store, Limits(max_running=1, max_per_user=1), worker="one")
    # A second scheduler that wrongly believes it leads, with more room, on the same state.
    two = Scheduler(store, Limits(max_running=2, max_per_user=1), worker="two")
    one.catch_up()
    two.catch_up()
    frozen: Any = two
    frozen.catch_up = lambda: None
    assert one.admit_next() == [first]
    # `two` would admit `first` (no longer queued: skipped) and `second`, on the position both
    # decided on: the tracking record of that decision is there already, so nothing is written.
    assert two.admit_next() == []
    assert admitted_in_order(store) == [first]
    assert store.get(second).is_queued


def test_a_job_cancelled_while_being_admitted_is_not_admitted(
    store: JobStore, database_url: str
) -> None:
    first, second = submit(store, "ada"), submit(store, "bob")
    scheduler = Scheduler(store, Limits(max_running=1, max_per_user=1), worker="test")
    other = JobStore(database_url)
    loaded = store.get

    def get_then_cancel(job_id: UUID) -> Job:
        job = loaded(job_id)
        if job_id == first and job.is_queued:
            end(other, first)  # between the load and the save
        return job

    try:
        frozen: Any = store
        frozen.get = get_then_cancel
        assert scheduler.admit_next() == []
        frozen.get = loaded
        assert scheduler.settle() == 1
    finally:
        other.close()
    assert admitted_in_order(store) == [second]
    assert store.get(first).status is Status.CANCELLED


def downgrade_to_version_2(database_url: str, store: JobStore, job_id: UUID) -> None:
    """Make the job's stored submission what version 2 wrote: no priority."""
    table = sql.Identifier(store.recorder.datastore.schema, store.recorder.events_table_name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET state = convert_to(((convert_from(state, 'UTF8')::jsonb "
                "- 'priority') || '{{\"class_version\": 2}}'::jsonb)::text, 'UTF8') "
                "WHERE originator_id = %s AND originator_version = 1"
            ).format(table),
            (job_id,),
        )


def test_jobs_from_before_the_queue_are_scheduled_like_the_others(
    store: JobStore, database_url: str
) -> None:
    # Submitted and started before the queue existed: no admission, a step started.
    started = submit(store, "ada")
    old = store.get(started)
    old.trigger_event(
        Job.StepStarted,
        step="plan",
        phase="planning",
        attempt=1,
        key=f"{started}:plan:1",
        worker="planner",
        correlation_id=str(started),
        causation_id="1",
    )
    store.save(old)
    # Submitted before the queue existed and not started yet.
    waiting = submit(store, "bob")
    for job_id in (started, waiting):
        downgrade_to_version_2(database_url, store, job_id)
    assert store.get(waiting).priority == DEFAULT_PRIORITY
    assert store.read(0)[0].data["priority"] == DEFAULT_PRIORITY
    resumed = store.get(started)
    assert resumed.due() == Due(Step.PLAN, 1)
    scheduler = Scheduler(store, Limits(max_running=1, max_per_user=1), worker="test")
    # The started one counts as running: the other waits for it.
    assert scheduler.settle() == 0
    end(store, started)
    assert scheduler.settle() == 1
    assert admitted_in_order(store) == [waiting]
    assert store.get(waiting).due() == Due(Step.PLAN, 1)


async def admitted_within(store: JobStore, expected: list[UUID], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while await asyncio.to_thread(admitted_in_order, store) != expected:
            await asyncio.sleep(0.02)


async def test_the_leader_admits_on_the_next_commit_not_on_a_clock(
    store: JobStore, database_url: str
) -> None:
    # A safety interval of an hour: only the store's commits can wake the scheduler here.
    settings = Settings(
        database_url=database_url,
        scheduler_poll_seconds=3600,
        max_running_jobs=1,
        max_running_jobs_per_user=1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(lead(store, settings, database_url, stop))
    try:
        first = await asyncio.to_thread(submit, store, "ada")
        await admitted_within(store, [first], 3)
        second = await asyncio.to_thread(submit, store, "bob")
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(admitted_in_order, store) == [first]
        await asyncio.to_thread(end, store, first)
        await admitted_within(store, [first, second], 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_leader_that_loses_its_lock_connection_stops_leading_at_once(
    store: JobStore, database_url: str
) -> None:
    settings = Settings(database_url=database_url, scheduler_poll_seconds=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(lead(store, settings, database_url, stop))
    try:
        job = await asyncio.to_thread(submit, store, "ada")
        await admitted_within(store, [job], 3)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted"
            )
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 5)
