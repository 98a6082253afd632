"""The queue's rules alone (no I/O): order, limits, places kept, jobs leaving and coming back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

from vdo_kernel.store import StoredJobEvent
from vdo_scheduler.queue import Limits, Queue


class Log:
    """Events of the types the queue follows, numbered as the store would."""

    def __init__(self) -> None:
        self.position = 0
        self.owners: dict[UUID, str] = {}
        self.asked: list[UUID] = []
        self.queue = Queue(self.owner_of)

    def owner_of(self, job_id: UUID) -> str:
        self.asked.append(job_id)
        return self.owners[job_id]

    def add(self, kind: str, job_id: UUID, **data: Any) -> None:
        self.position += 1
        self.queue.apply(
            StoredJobEvent(
                position=self.position,
                job_id=job_id,
                version=1,
                type=kind,
                timestamp=datetime.now(UTC),
                correlation_id=str(job_id),
                causation_id="test",
                data=data,
                event=cast(Any, None),
            )
        )

    def submit(self, by: str, priority: int = 5) -> UUID:
        job_id = uuid4()
        self.owners[job_id] = by
        self.add("JobSubmitted", job_id, submitted_by=by, priority=priority)
        return job_id

    def admit_all(self, limits: Limits) -> list[UUID]:
        chosen = [entry.job_id for entry in self.queue.admissions(limits)]
        for job_id in chosen:
            self.add("JobAdmitted", job_id, step="plan", attempt=1, by="test")
        return chosen


def test_higher_priorities_first_then_first_come_first_served() -> None:
    log = Log()
    a, b, c, d = log.submit("u1", 5), log.submit("u2", 9), log.submit("u3", 5), log.submit("u4", 0)
    assert [e.job_id for e in log.queue.queued()] == [b, a, c, d]
    assert log.admit_all(Limits(max_running=2, max_per_user=1)) == [b, a]
    assert log.admit_all(Limits(max_running=2, max_per_user=1)) == []
    log.add("JobCompleted", b, attempts=1)
    assert log.admit_all(Limits(max_running=2, max_per_user=1)) == [c]


def test_a_job_held_back_by_its_users_limit_keeps_its_place() -> None:
    log = Log()
    first, second, third = log.submit("ada"), log.submit("ada"), log.submit("bob")
    assert log.admit_all(Limits(max_running=5, max_per_user=1)) == [first, third]
    assert [e.job_id for e in log.queue.queued()] == [second]
    newer = log.submit("carol", priority=5)
    log.add("JobFailed", first, reason="r")
    # `second` was queued before `newer`: it goes first now that its user has room.
    assert log.admit_all(Limits(max_running=5, max_per_user=1)) == [second, newer]


def test_a_cancelled_job_leaves_and_a_retried_one_comes_back_at_the_end_of_its_line() -> None:
    log = Log()
    done, waiting = log.submit("ada"), log.submit("bob")
    log.add("JobCancelled", waiting, reason="r", by="bob")
    assert log.admit_all(Limits(max_running=1, max_per_user=1)) == [done]
    log.add("JobCompleted", done, attempts=1)
    assert log.queue.jobs == {}
    later = log.submit("carol")
    log.add("JobRetried", done, priority=5, from_step="build", attempt=2)
    assert [e.job_id for e in log.queue.queued()] == [later, done]
    log.add("JobRetried", waiting, priority=9, from_step="plan", attempt=2)
    assert [e.job_id for e in log.queue.queued()] == [waiting, later, done]
    # Their submitters are asked for when the choice needs them, once.
    assert log.admit_all(Limits(max_running=3, max_per_user=1)) == [waiting, later, done]
    assert sorted(log.asked) == sorted([done, waiting])


def test_a_job_started_before_the_queue_existed_counts_as_running() -> None:
    log = Log()
    old = log.submit("ada")
    log.add("StepStarted", old, step="plan", attempt=1)
    other = log.submit("bob")
    assert [e.job_id for e in log.queue.running()] == [old]
    assert log.admit_all(Limits(max_running=1, max_per_user=1)) == []
    log.add("JobCompleted", old, attempts=1)
    assert log.admit_all(Limits(max_running=1, max_per_user=1)) == [other]


def test_no_place_no_admission_and_no_question() -> None:
    log = Log()
    running = log.submit("ada")
    log.admit_all(Limits(max_running=1, max_per_user=1))
    log.add("JobRetried", uuid4(), priority=5, from_step="plan", attempt=2)
    assert log.queue.admissions(Limits(max_running=1, max_per_user=1)) == []
    assert log.asked == []
    assert log.queue.position == 3
    assert [e.job_id for e in log.queue.running()] == [running]
