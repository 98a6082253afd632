"""The scheduler: the one component that lets queued jobs run.

It follows the store (not the read models, which may lag) through the few event types that
change the queue (`queue.QUEUE_TYPES`), and appends `JobAdmitted` for the next queued jobs in
order while the deployment's limits allow (`max_running_jobs` in all, `max_running_jobs_per_user`
per submitter). Nothing is due for a job before its admission, so the limits hold for the whole
pipeline.

Exactly once, and never over the limits:

- one scheduler decides at a time: the leader holds a PostgreSQL advisory lock on a connection
  of its own (a spare waits for it, as a spare relay does) and checks that connection before
  each round;
- a round's admissions are appended in one transaction with a tracking record of the log
  position the decision was made on, so two rounds decided on the same state cannot both be
  written, and each job's admission is checked by optimistic concurrency (a job cancelled
  meanwhile fails the round, which is then decided again on the new state).

It follows the store (`vdo_kernel.follow`): each commit wakes it, heard on the connection that
holds its lock (so hearing one also says it still leads), and a round reads on from the queue's
position. `scheduler_poll_seconds` is only the safety interval after which it looks (and checks
that connection) when nothing was heard. A lost connection ends the leadership; leading again
folds the queue in from the log, so a commit made meanwhile is a delay, never a stuck queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError, Tracking

from vdo_kernel import logs
from vdo_kernel.follow import listen, next_commit
from vdo_kernel.leadership import become_leader
from vdo_kernel.service import started, worker_name
from vdo_kernel.settings import Settings
from vdo_kernel.store import (
    AlreadyHandledError,
    ConcurrencyError,
    JobNotFoundError,
    JobStore,
)
from vdo_kernel.subjects import SCHEDULER
from vdo_scheduler.queue import QUEUE_TYPES, Limits, Queue

log = logs.get(__name__)

SCHEDULER_LOCK_KEY = 0x7664_6F5F_7363  # "vdo_sc": one scheduler decides at a time
READ_BATCH = 5000


class Scheduler:
    """The queue of one leader, and its rounds of admissions (synchronous: run in a thread)."""

    def __init__(self, store: JobStore, limits: Limits, *, worker: str) -> None:
        self.store = store
        self.limits = limits
        self.worker = worker
        self.queue = Queue(self._owner_of)
        self.admitted = 0

    def _owner_of(self, job_id: UUID) -> str:
        return self.store.get(job_id).submitted_by

    def catch_up(self) -> None:
        """Fold in what changed the queue since the last look."""
        while True:
            events = self.store.read_types(self.queue.position, QUEUE_TYPES, limit=READ_BATCH)
            if not events:
                return
            for event in events:
                self.queue.apply(event)

    def admit_next(self) -> list[UUID]:
        """One round: catch up, choose, and append the admissions (with the tracking record of
        the position decided on) in one transaction. Returns the jobs admitted: none when
        nothing may run now, or when the store changed meanwhile (the next round decides
        again on what it holds then)."""
        self.catch_up()
        chosen = self.queue.admissions(self.limits)
        if not chosen:
            return []
        decided_at = self.queue.position
        jobs = []
        for entry in chosen:
            try:
                job = self.store.get(entry.job_id)
            except JobNotFoundError:
                continue
            if not job.is_queued:
                continue  # changed after the events read (cancelled, say): the next round sees
            job.admit(by=self.worker, causation_id=str(decided_at))
            jobs.append(job)
        if not jobs:
            return []
        try:
            self.store.save(*jobs, tracking=Tracking(SCHEDULER, decided_at))
        except (AlreadyHandledError, ConcurrencyError) as error:
            log.info("admissions not written; deciding again", reason=str(error))
            return []
        running = len(self.queue.running()) + len(jobs)
        for job in jobs:
            log.info(
                "job admitted",
                job_id=str(job.id),
                priority=job.priority,
                submitted_by=job.submitted_by,
                running=running,
                max_running=self.limits.max_running,
            )
        self.admitted += len(jobs)
        return [job.id for job in jobs]

    def settle(self) -> int:
        """Rounds until nothing more may run now; returns how many jobs were admitted."""
        total = 0
        while admitted := self.admit_next():
            total += len(admitted)
        return total


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_running=settings.max_running_jobs, max_per_user=settings.max_running_jobs_per_user
    )


async def lead(store: JobStore, settings: Settings, database_url: str, stop: asyncio.Event) -> None:
    """Wait to be the leader, then schedule until stopped (or the lock's connection is lost:
    the caller tries again)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if not await become_leader(
            conn, SCHEDULER_LOCK_KEY, stop, waiting="another scheduler is leading; standing by"
        ):
            return
        # Before the first round, so that no commit made during it goes unheard.
        await listen(conn, store.recorder.channel_name)
        limits = limits_of(settings)
        scheduler = Scheduler(store, limits, worker=worker_name("scheduler"))
        log.info(
            "scheduler leading",
            max_running_jobs=limits.max_running,
            max_running_jobs_per_user=limits.max_per_user,
        )
        while not stop.is_set():
            await asyncio.to_thread(scheduler.settle)
            # Woken by the next commit (or by the stop), or after the safety interval, when
            # the lock's connection is checked: the lock lives as long as it does.
            await next_commit(conn, stop, settings.scheduler_poll_seconds)


async def run_scheduler(settings: Settings | None = None) -> None:
    """The scheduler process: `python -m vdo_scheduler`."""
    async with started("scheduler", settings or Settings()) as up:
        while not up.stop.is_set():
            try:
                await lead(up.store, up.settings, up.database_url, up.stop)
            except (psycopg.Error, PersistenceError, OSError) as error:
                log.warning("scheduler lost the database; trying again", error=str(error))
            except Exception:
                log.exception("scheduling failed; trying again")
            else:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(up.stop.wait(), timeout=1.0)
