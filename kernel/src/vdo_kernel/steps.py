"""Running one pipeline step exactly once: the bracket every phase service shares.

For a message that may make the service's step due, the runner loads the job and asks the
domain whether the step is due. If so it records `StepStarted` (or `StepResumed` when an earlier
start has no result: the work is being redone, and the history says so), does the work, and
records the result (with whatever the rules say follows) together with the tracking record of
the message, in one transaction. A duplicate delivery finds its tracking record and does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from vdo_kernel import logs
from vdo_kernel.blobs import BlobStore
from vdo_kernel.consumer import Delivery
from vdo_kernel.domain import Due, Job, Outcome, Step
from vdo_kernel.livelog import LiveLog
from vdo_kernel.settings import Settings
from vdo_kernel.store import AlreadyHandledError, Claim, ConcurrencyError, JobStore, Lease
from vdo_kernel.subjects import step_consumer

log = logs.get(__name__)

# A step redone this many times without ever recording a result fails the job instead of
# looping for ever (a deterministic crash in the work, say).
MAX_RESUMES = 3


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    summary: str
    artifacts: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class StepFailure(Exception):
    """The step cannot be done; the job fails with this reason."""


class StepCancelledError(Exception):
    """The job moved on while the step worked (cancelled, say): its work is abandoned."""


@dataclass
class StepContext:
    """What a step's work gets: the job as it is, the step that is due, and the means to record
    events while it works (model calls, say) and to write to the job's live log."""

    job: Job
    due: Due
    blobs: BlobStore
    settings: Settings
    store: JobStore | None = None
    live: LiveLog | None = None
    cause: str = ""

    def emit(self, stream: str, text: str) -> None:
        """A line (or a piece of one) for the job's live log."""
        if self.live is not None:
            self.live.emit(
                self.job.id,
                step=self.due.step.value,
                attempt=self.due.attempt,
                stream=stream,
                text=text,
            )

    async def record(self, change: Callable[[Job], None]) -> Job:
        """Apply `change` (which triggers events) to the job and store them now, before the
        step's result. When someone else appended meanwhile, the job is reloaded and the change
        applied again; when the step is no longer due (cancelled), StepCancelledError."""
        store = self.store
        if store is None:
            raise RuntimeError("this step context cannot record events")
        due = self.due

        def attempt() -> Job:
            job: Job | None = self.job
            for _ in range(10):
                if job is None:
                    job = store.get(self.job.id)
                if job.is_due(due.step) != due:
                    raise StepCancelledError(f"the job is {job.status.value}; work abandoned")
                change(job)
                try:
                    store.save(job)
                except ConcurrencyError:
                    job = None
                    continue
                return job
            raise ConcurrencyError(f"job {self.job.id} kept changing")

        self.job = await asyncio.to_thread(attempt)
        return self.job


StepWork = Callable[[StepContext], Awaitable[StepResult]]


class StepRunner:
    def __init__(
        self,
        *,
        step: Step,
        work: StepWork,
        store: JobStore,
        blobs: BlobStore,
        settings: Settings,
        worker: str,
        live: LiveLog | None = None,
    ) -> None:
        self.live = live
        self.step = step
        self.work = work
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.worker = worker
        self.consumer = step_consumer(step)

    async def handle(self, delivery: Delivery) -> None:
        message = delivery.message
        tracking = Tracking(self.consumer, message.position)
        lease = self.store.lease(f"{message.job_id}:{self.step.value}")
        # The synchronous parts (store and lease) each run in one thread hop: before the work
        # and after it. Hops, not queries, are most of a step's fixed cost.
        started = await asyncio.to_thread(self._begin, lease, message.job_id, tracking)
        if started is None:
            return
        job, due = started
        ctx = StepContext(
            job=job,
            due=due,
            blobs=self.blobs,
            settings=self.settings,
            store=self.store,
            live=self.live,
            cause=str(tracking.notification_id),
        )
        outcome: StepResult | str
        try:
            outcome = await asyncio.wait_for(
                self.work(ctx), timeout=self.settings.step_timeout_seconds
            )
        except StepFailure as failure:
            outcome = str(failure)
        except StepCancelledError as cancelled:
            log.info("step abandoned", step=self.step.value, reason=str(cancelled))
            outcome = str(cancelled)
        except TimeoutError:
            outcome = f"timed out after {self.settings.step_timeout_seconds:g}s"
        except BaseException:
            await asyncio.to_thread(lease.release)
            raise
        await asyncio.to_thread(self._finish, lease, ctx.job, due, tracking, outcome)

    def _begin(self, lease: Lease, job_id: UUID, tracking: Tracking) -> tuple[Job, Due] | None:
        """Claim the message, then record the step's start; None when there is nothing to do
        (the lease is then released)."""
        claim = lease.claim(tracking)
        if claim is Claim.HANDLED:
            log.info("duplicate delivery skipped", step=self.step.value)
            return None
        if claim is Claim.BUSY:
            # The step is being worked on right now by a live worker that holds the original
            # message; if that worker dies, its message comes back and the step resumes.
            log.info("step in progress elsewhere; duplicate skipped", step=self.step.value)
            return None
        try:
            started = self._start(job_id, str(tracking.notification_id))
        except BaseException:
            lease.release()
            raise
        if started is None:
            lease.release()
        return started

    def _start(self, job_id: UUID, cause: str) -> tuple[Job, Due] | None:
        for _ in range(10):
            job = self.store.get(job_id)
            due = job.is_due(self.step)
            if due is None:
                return None
            if job.record(due.step, due.attempt).resumed >= MAX_RESUMES:
                job.fail_step(
                    due,
                    reason=f"gave up after {MAX_RESUMES + 1} tries that never finished",
                    causation_id=cause,
                )
                self.store.save(job)
                return None
            job.start_step(due, worker=self.worker, causation_id=cause)
            try:
                self.store.save(job)
            except ConcurrencyError:
                continue
            log.info("step started", step=due.step.value, attempt=due.attempt)
            return job, due
        raise ConcurrencyError(f"job {job_id} kept changing while starting {self.step}")

    def _finish(
        self, lease: Lease, started: Job, due: Due, tracking: Tracking, outcome: StepResult | str
    ) -> None:
        try:
            self._record(started, due, tracking, outcome)
        finally:
            lease.release()

    def _record(
        self, started: Job, due: Due, tracking: Tracking, outcome: StepResult | str
    ) -> None:
        """Record the result (or the failure, when `outcome` is a reason) with the tracking
        record of the message, in one transaction."""
        cause = str(tracking.notification_id)
        # Usually nothing has changed since the start: record on the job as it was then; if
        # someone appended meanwhile (a cancel, say), reload and ask the rules again.
        job: Job | None = started
        for _ in range(10):
            if job is None:
                job = self.store.get(started.id)
            if job.is_due(self.step) != due:
                log.info("result dropped: the job moved on", step=due.step.value)
                return
            if isinstance(outcome, StepResult):
                job.finish_step(
                    due,
                    outcome=outcome.outcome,
                    summary=outcome.summary,
                    artifacts=outcome.artifacts,
                    details=outcome.details,
                    causation_id=cause,
                )
            else:
                job.fail_step(due, reason=outcome, causation_id=cause)
            try:
                self.store.save(job, tracking=tracking)
            except AlreadyHandledError:
                return
            except ConcurrencyError:
                job = None  # its in-memory state holds the rejected events: start afresh
                continue
            log.info(
                "step finished" if isinstance(outcome, StepResult) else "step failed",
                step=due.step.value,
                attempt=due.attempt,
                outcome=outcome.outcome.value if isinstance(outcome, StepResult) else None,
                reason=None if isinstance(outcome, StepResult) else outcome,
                status=job.status.value,
            )
            return
        raise ConcurrencyError(f"could not record {self.step} result")
