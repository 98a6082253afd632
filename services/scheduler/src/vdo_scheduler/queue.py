"""The queue as the scheduler sees it: the jobs not ended, queued or running, folded from the
few event types that change it; and which queued jobs to admit next (pure, no I/O).

Order: the highest priority first, and within a priority the job queued first (by the log
position of its submission or of its last retry). A job is admitted while fewer than
`max_running` jobs run in all and fewer than `max_per_user` of its submitter's; a job held back
by its submitter's limit keeps its place, and the ones behind it may go first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from vdo_kernel.domain import ADMITTING_EVENTS, DEFAULT_PRIORITY, admits
from vdo_kernel.store import StoredJobEvent
from vdo_kernel.subjects import END_EVENTS

# The event types that change the queue: what queues a job, what lets it run (its admission,
# or a step's start for jobs submitted before there was a queue), and what ends it.
QUEUE_TYPES: Final = (
    "JobSubmitted",
    "JobRetried",
    *sorted(ADMITTING_EVENTS),
    *sorted(END_EVENTS),
)


@dataclass
class Entry:
    """A job that has not ended."""

    job_id: UUID
    # None until asked for, for a job retried after it ended (see `Queue.owner`).
    submitted_by: str | None
    priority: int
    # The log position of the event that put it in the queue (its submission or retry).
    queued_at: int
    running: bool = False

    @property
    def order(self) -> tuple[int, int]:
        return (-self.priority, self.queued_at)


@dataclass(frozen=True)
class Limits:
    max_running: int
    max_per_user: int


class Queue:
    """The jobs not ended, and the position of the last event folded in."""

    def __init__(self, owner_of: Callable[[UUID], str]) -> None:
        # Who submitted a job, for a job retried after it ended (an ended job is not kept
        # here): the scheduler asks the store, which is rare.
        self._owner_of = owner_of
        self.jobs: dict[UUID, Entry] = {}
        self.position = 0

    def apply(self, event: StoredJobEvent) -> None:
        self.position = max(self.position, event.position)
        data, job_id = event.data, event.job_id
        if event.type == "JobSubmitted":
            self.jobs[job_id] = Entry(
                job_id=job_id,
                submitted_by=str(data["submitted_by"]),
                priority=int(data.get("priority", DEFAULT_PRIORITY)),
                queued_at=event.position,
            )
        elif event.type == "JobRetried":
            self.jobs[job_id] = Entry(
                job_id=job_id,
                submitted_by=None,
                priority=int(data["priority"]),
                queued_at=event.position,
            )
        elif admits(event.type):
            entry = self.jobs.get(job_id)
            if entry is not None:
                entry.running = True
        elif event.type in END_EVENTS:
            self.jobs.pop(job_id, None)

    def owner(self, entry: Entry) -> str:
        """Who submitted the job. A job retried after it ended was not kept here meanwhile:
        the store says, once, when it matters (most retried jobs read at a start-up have ended
        since, and are never asked about)."""
        if entry.submitted_by is None:
            entry.submitted_by = self._owner_of(entry.job_id)
        return entry.submitted_by

    def running(self) -> list[Entry]:
        return [entry for entry in self.jobs.values() if entry.running]

    def queued(self) -> list[Entry]:
        """The queued jobs in the order they are to run."""
        return sorted(
            (entry for entry in self.jobs.values() if not entry.running),
            key=lambda entry: entry.order,
        )

    def admissions(self, limits: Limits) -> list[Entry]:
        """The queued jobs to admit now, in order."""
        running = self.running()
        free = limits.max_running - len(running)
        if free <= 0:
            return []
        per_user = Counter(self.owner(entry) for entry in running)
        chosen: list[Entry] = []
        for entry in self.queued():
            if free <= 0:
                break
            owner = self.owner(entry)
            if per_user[owner] >= limits.max_per_user:
                continue
            chosen.append(entry)
            per_user[owner] += 1
            free -= 1
        return chosen
