"""Running one pipeline step exactly once: the bracket every phase service shares.

For a message that may make the service's step due, the runner loads the job and asks the
domain whether the step is due. If so it records `StepStarted` (or `StepResumed` when an earlier
start has no result: the work is being redone, and the history says so), does the work, and
records the result (with whatever the rules say follows) together with the tracking record of
the message, in one transaction. A duplicate delivery finds its tracking record and does nothing.

A job cancelled while its step is being worked on has that work stopped: the service hears of
the cancellation (`abandon`) and cancels the work's task, which closes a model call's stream and
kills a sandbox run; the step then records no result, and the model calls it left open are
closed as interrupted.
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
from vdo_kernel.domain import Due, Job, Outcome, Step, call_key
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
        return await asyncio.to_thread(self.record_now, change)

    def record_now(self, change: Callable[[Job], None]) -> Job:
        """`record`, blocking (in a thread: for a check and the events it allows to be done
        under one lock)."""
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

        self.job = attempt()
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
        # The work in hand, by job: its task and the job's version when the step started.
        self._working: dict[UUID, tuple[asyncio.Task[StepResult], int]] = {}

    @property
    def working_on(self) -> dict[UUID, int]:
        """The jobs whose step is being worked on now, with each job's version at its start."""
        return {job_id: version for job_id, (_, version) in self._working.items()}

    def abandon(self, job_id: UUID, cancelled_version: int) -> bool:
        """The job was cancelled (by its event of that version): stop the work in hand for it,
        if it began before the cancellation. True when some was stopped."""
        working = self._working.get(job_id)
        if working is None:
            return False
        task, started_version = working
        if cancelled_version <= started_version or task.done():
            return False  # a cancellation of an earlier run of the job (retried since)
        log.info("job cancelled; abandoning its work", step=self.step.value, job_id=str(job_id))
        task.cancel()
        return True

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
        work = asyncio.create_task(
            asyncio.wait_for(self.work(ctx), timeout=self.settings.step_timeout_seconds)
        )
        self._working[job.id] = (work, job.version)
        outcome: StepResult | str
        try:
            outcome = await work
        except StepFailure as failure:
            outcome = str(failure)
        except StepCancelledError as cancelled:
            log.info("step abandoned", step=self.step.value, reason=str(cancelled))
            await asyncio.to_thread(self._abandon, lease, job.id, due, tracking)
            return
        except TimeoutError:
            outcome = f"timed out after {self.settings.step_timeout_seconds:g}s"
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if work.cancelled() and (current is None or not current.cancelling()):
                # Its job was cancelled (`abandon`), not this handler (a shutdown).
                await asyncio.to_thread(self._abandon, lease, job.id, due, tracking)
                return
            await asyncio.to_thread(lease.release)
            raise
        except BaseException:
            await asyncio.to_thread(lease.release)
            raise
        finally:
            if self._working.get(job.id, (None, 0))[0] is work:
                del self._working[job.id]
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

    def _abandon(self, lease: Lease, job_id: UUID, due: Due, tracking: Tracking) -> None:
        """The step's work was stopped because its job was cancelled: record no result, close
        the model calls it left open (as interrupted, at their worst case: what they cost is not
        known), with the tracking record of the message; then release the lease."""
        cause = str(tracking.notification_id)
        prefix = call_key(job_id, due.step.value, due.attempt, 0)[:-1]
        try:
            for _ in range(10):
                job = self.store.get(job_id)
                if job.is_due(self.step) == due:
                    # Not cancelled after all: hand the message back, so the step is resumed.
                    raise RuntimeError(f"the work of {due.step} stopped but the step is still due")
                left_open = [key for key in job.open_calls if key.startswith(prefix)]
                for key in left_open:
                    job.finish_model_call(
                        key,
                        outcome="interrupted",
                        error="abandoned: the job was cancelled while the call was made; "
                        "counted at its worst-case cost",
                        cost_usd=job.open_calls[key].reserved_usd,
                        causation_id=cause,
                    )
                if left_open:
                    try:
                        self.store.save(job, tracking=tracking)
                    except AlreadyHandledError:
                        return
                    except ConcurrencyError:
                        continue
                log.info(
                    "step abandoned: the job was cancelled",
                    step=due.step.value,
                    attempt=due.attempt,
                    calls_closed=len(left_open),
                )
                return
            raise ConcurrencyError(f"job {job_id} kept changing while its work was abandoned")
        finally:
            lease.release()

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
