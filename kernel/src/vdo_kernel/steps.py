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
from vdo_kernel.settings import Settings
from vdo_kernel.store import AlreadyHandledError, Claim, ConcurrencyError, JobStore
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


@dataclass(frozen=True)
class StepContext:
    job: Job
    due: Due
    blobs: BlobStore
    settings: Settings


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
    ) -> None:
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
        cause = str(message.position)
        lease = self.store.lease(f"{message.job_id}:{self.step.value}")
        claim = await asyncio.to_thread(lease.claim, tracking)
        if claim is Claim.HANDLED:
            log.info("duplicate delivery skipped", step=self.step.value)
            return
        if claim is Claim.BUSY:
            # The step is being worked on right now by a live worker that holds the original
            # message; if that worker dies, its message comes back and the step resumes.
            log.info("step in progress elsewhere; duplicate skipped", step=self.step.value)
            return
        try:
            await self._run(message.job_id, cause, tracking)
        finally:
            await asyncio.to_thread(lease.release)

    async def _run(self, job_id: UUID, cause: str, tracking: Tracking) -> None:
        job, due = await self._start(job_id, cause)
        if due is None:
            return
        try:
            result = await asyncio.wait_for(
                self.work(StepContext(job=job, due=due, blobs=self.blobs, settings=self.settings)),
                timeout=self.settings.step_timeout_seconds,
            )
        except StepFailure as failure:
            await self._record(job, due, cause, tracking, failure=str(failure))
            return
        except TimeoutError:
            await self._record(
                job,
                due,
                cause,
                tracking,
                failure=f"timed out after {self.settings.step_timeout_seconds:g}s",
            )
            return
        await self._record(job, due, cause, tracking, result=result)

    async def _start(self, job_id: UUID, cause: str) -> tuple[Job, Due | None]:
        for _ in range(10):
            job = await asyncio.to_thread(self.store.get, job_id)
            due = job.is_due(self.step)
            if due is None:
                return job, None
            if job.record(due.step, due.attempt).resumed >= MAX_RESUMES:
                job.fail_step(
                    due,
                    reason=f"gave up after {MAX_RESUMES + 1} tries that never finished",
                    causation_id=cause,
                )
                await asyncio.to_thread(self.store.save, job)
                return job, None
            job.start_step(due, worker=self.worker, causation_id=cause)
            try:
                await asyncio.to_thread(self.store.save, job)
            except ConcurrencyError:
                continue
            log.info("step started", step=due.step.value, attempt=due.attempt)
            return job, due
        raise ConcurrencyError(f"job {job_id} kept changing while starting {self.step}")

    async def _record(
        self,
        started: Job,
        due: Due,
        cause: str,
        tracking: Tracking,
        *,
        result: StepResult | None = None,
        failure: str | None = None,
    ) -> None:
        # Usually nothing has changed since the start: record on the job as it was then; if
        # someone appended meanwhile (a cancel, say), reload and ask the rules again.
        job: Job | None = started
        for _ in range(10):
            if job is None:
                job = await asyncio.to_thread(self.store.get, started.id)
            if job.is_due(self.step) != due:
                log.info("result dropped: the job moved on", step=due.step.value)
                return
            if result is not None:
                job.finish_step(
                    due,
                    outcome=result.outcome,
                    summary=result.summary,
                    artifacts=result.artifacts,
                    details=result.details,
                    causation_id=cause,
                )
            else:
                job.fail_step(due, reason=failure or "unknown failure", causation_id=cause)
            try:
                await asyncio.to_thread(self.store.save, job, tracking=tracking)
            except AlreadyHandledError:
                return
            except ConcurrencyError:
                job = None  # its in-memory state holds the rejected events: start afresh
                continue
            log.info(
                "step finished" if result else "step failed",
                step=due.step.value,
                attempt=due.attempt,
                outcome=result.outcome.value if result else None,
                reason=failure,
                status=job.status.value,
            )
            return
        raise ConcurrencyError(f"could not record {self.step} result")
