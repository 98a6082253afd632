"""The step bracket on a real PostgreSQL: duplicates do nothing twice; an orphaned start resumes;
the work for a job cancelled meanwhile is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from uuid import UUID

import pytest

from vdo_kernel.blobs import BlobStore
from vdo_kernel.bus import EventMessage, connect
from vdo_kernel.consumer import Delivery
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.relay import to_message
from vdo_kernel.service import watch_cancellations
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure, StepResult, StepRunner
from vdo_kernel.store import JobStore
from vdo_kernel.subjects import JOB_CANCELLED


def submitted(store: JobStore) -> tuple[Job, Delivery]:
    """A job the queue let run, and the message of its admission (what makes planning due)."""
    job = Job.submit(title="t", description="d")
    job.admit(by="scheduler", causation_id="test")
    [_, position] = store.save(job)
    [event] = store.read(position - 1, 1)
    return job, Delivery(to_message(event), num_delivered=1)


def runner(
    store: JobStore, tmp_path: Path, work_calls: list[int], delay: float = 0.0
) -> StepRunner:
    async def plan(ctx: StepContext) -> StepResult:
        work_calls.append(ctx.due.attempt)
        await asyncio.sleep(delay)
        return StepResult(outcome=Outcome.OK, summary="planned")

    return StepRunner(
        step=Step.PLAN,
        work=plan,
        store=store,
        blobs=BlobStore(tmp_path),
        settings=Settings(home=tmp_path),
        worker="test",
    )


def types(store: JobStore, job: Job) -> list[str]:
    return [e.type for e in store.job_events(job.id)]


async def test_the_same_message_twice_in_a_row_does_the_work_once(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    calls: list[int] = []
    step = runner(store, tmp_path, calls)
    await step.handle(delivery)
    before = store.max_position()
    await step.handle(delivery)
    assert calls == [1]
    assert store.max_position() == before
    assert types(store, job) == ["JobSubmitted", "JobAdmitted", "StepStarted", "StepFinished"]


async def test_the_same_message_twice_at_once_does_the_work_once(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    calls: list[int] = []
    step = runner(store, tmp_path, calls, delay=0.3)
    await asyncio.gather(step.handle(delivery), step.handle(delivery), step.handle(delivery))
    assert calls == [1]
    assert types(store, job) == ["JobSubmitted", "JobAdmitted", "StepStarted", "StepFinished"]


async def test_a_start_without_a_result_is_resumed_and_says_so(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    due = job.due()
    assert due is not None
    job.start_step(due, worker="crashed-worker", causation_id="1")  # then it "died"
    store.save(job)
    calls: list[int] = []
    await runner(store, tmp_path, calls).handle(delivery)
    assert calls == [1]
    assert types(store, job) == [
        "JobSubmitted",
        "JobAdmitted",
        "StepStarted",
        "StepResumed",
        "StepFinished",
    ]


async def test_a_step_failure_fails_the_job_with_its_reason(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)

    async def refuse(ctx: StepContext) -> StepResult:
        raise StepFailure("the plan cannot be made")

    step = StepRunner(
        step=Step.PLAN,
        work=refuse,
        store=store,
        blobs=BlobStore(tmp_path),
        settings=Settings(home=tmp_path),
        worker="test",
    )
    await step.handle(delivery)
    reloaded = store.get(job.id)
    assert reloaded.status.value == "failed"
    assert reloaded.finished_reason == "planning failed: the plan cannot be made"
    assert types(store, job)[-2:] == ["StepFailed", "JobFailed"]


async def test_a_change_made_during_the_work_is_respected(store: JobStore, tmp_path: Path) -> None:
    # The job is cancelled while the step works: the result must not resurrect it.
    job, delivery = submitted(store)

    async def plan_while_cancelled(ctx: StepContext) -> StepResult:
        other = store.get(ctx.job.id)
        other.cancel(reason="stop", by="someone", causation_id="x")
        store.save(other)
        return StepResult(outcome=Outcome.OK, summary="planned")

    step = StepRunner(
        step=Step.PLAN,
        work=plan_while_cancelled,
        store=store,
        blobs=BlobStore(tmp_path),
        settings=Settings(home=tmp_path),
        worker="test",
    )
    await step.handle(delivery)
    assert types(store, job) == ["JobSubmitted", "JobAdmitted", "StepStarted", "JobCancelled"]
    assert store.get(job.id).status.value == "cancelled"


class SlowWork:
    """A step's work that starts a model call, then waits for its reply for ever (unless
    stopped), and says whether it was stopped."""

    def __init__(self) -> None:
        self.calling = asyncio.Event()
        self.stopped = False

    async def __call__(self, ctx: StepContext) -> StepResult:
        def call(job: Job) -> None:
            job.start_model_call(
                ctx.due,
                call=1,
                try_number=1,
                provider="openai",
                model="gpt-4.1",
                reserved_usd=0.25,
                causation_id=ctx.cause,
            )

        await ctx.record(call)
        self.calling.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.stopped = True
            raise
        return StepResult(outcome=Outcome.OK, summary="never")


def slow_runner(store: JobStore, tmp_path: Path, work: SlowWork) -> StepRunner:
    return StepRunner(
        step=Step.PLAN,
        work=work,
        store=store,
        blobs=BlobStore(tmp_path),
        settings=Settings(home=tmp_path),
        worker="test",
    )


def cancel(store: JobStore, job_id: UUID) -> int:
    job = store.get(job_id)
    job.cancel(reason="not any more", by="ada", causation_id="test")
    store.save(job)
    return job.version


async def test_the_work_for_a_job_cancelled_meanwhile_is_stopped_and_records_no_result(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    work = SlowWork()
    step = slow_runner(store, tmp_path, work)
    handling = asyncio.create_task(step.handle(delivery))
    await asyncio.wait_for(work.calling.wait(), 10)
    assert list(step.working_on) == [job.id]
    version = cancel(store, job.id)
    assert step.abandon(job.id, version)
    await asyncio.wait_for(handling, 10)
    assert work.stopped
    assert step.working_on == {}
    # No result; the call it left open is closed, at its worst case, and says why.
    assert types(store, job) == [
        "JobSubmitted",
        "JobAdmitted",
        "StepStarted",
        "ModelCallStarted",
        "JobCancelled",
        "ModelCallFinished",
    ]
    closed = store.job_events(job.id)[-1].data
    assert (closed["outcome"], closed["cost_usd"]) == ("interrupted", 0.25)
    assert "cancelled" in closed["error"]
    assert store.get(job.id).open_calls == {}
    # The lease is free again and the message handled: a redelivery does nothing.
    await step.handle(delivery)
    assert len(types(store, job)) == 6


async def test_a_cancellation_from_before_the_work_began_stops_nothing(
    store: JobStore, tmp_path: Path
) -> None:
    # Cancelled, retried and admitted again: the old cancellation is not this run's.
    job = Job.submit(title="t", description="d")
    job.admit(by="scheduler", causation_id="test")
    job.cancel(reason="first run", by="ada", causation_id="test")
    old_cancellation = job.version
    job.retry(Step.PLAN, by="ada", causation_id="test")
    job.admit(by="scheduler", causation_id="test")
    positions = store.save(job)
    [event] = store.read(positions[-1] - 1, 1)
    work = SlowWork()
    step = slow_runner(store, tmp_path, work)
    handling = asyncio.create_task(step.handle(Delivery(to_message(event), num_delivered=1)))
    await asyncio.wait_for(work.calling.wait(), 10)
    assert not step.abandon(job.id, old_cancellation)
    assert not step.abandon(UUID(int=1), 99)
    assert not handling.done()
    assert step.abandon(job.id, cancel(store, job.id))
    await asyncio.wait_for(handling, 10)
    assert work.stopped


async def test_a_step_stopped_although_its_job_was_not_cancelled_is_handed_back(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    work = SlowWork()
    step = slow_runner(store, tmp_path, work)
    handling = asyncio.create_task(step.handle(delivery))
    await asyncio.wait_for(work.calling.wait(), 10)
    # A cancellation that is not in the store (never so in practice): the step is still due,
    # so the message goes back to be redelivered and the step resumes.
    assert step.abandon(job.id, job.version + 100)
    with pytest.raises(RuntimeError, match="still due"):
        await asyncio.wait_for(handling, 10)
    assert store.get(job.id).due() is not None


async def test_a_service_hears_of_a_cancellation_on_the_bus_or_asks_the_store(
    store: JobStore, tmp_path: Path, nats_url: str
) -> None:
    nc = await connect(nats_url, name="test")
    stop = asyncio.Event()
    try:
        first, first_delivery = submitted(store)
        second, second_delivery = submitted(store)
        works = [SlowWork(), SlowWork()]
        steps = [slow_runner(store, tmp_path, work) for work in works]
        # Asks the store only every 0.5 s: the bus is what stops the first job's work at once.
        watching = asyncio.create_task(watch_cancellations(nc, store, steps, stop, every=0.5))
        handling = [
            asyncio.create_task(steps[0].handle(first_delivery)),
            asyncio.create_task(steps[1].handle(second_delivery)),
        ]
        for work in works:
            await asyncio.wait_for(work.calling.wait(), 10)
        await asyncio.sleep(0.1)  # subscribed
        version = cancel(store, first.id)
        [event] = [e for e in store.job_events(first.id) if e.type == "JobCancelled"]
        message = EventMessage(
            position=event.position,
            job_id=first.id,
            version=version,
            type="JobCancelled",
            timestamp=event.timestamp.isoformat(),
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            data=event.data,
        )
        await nc.publish(JOB_CANCELLED, message.encode())
        await asyncio.wait_for(handling[0], 0.4)
        assert works[0].stopped
        assert not works[1].stopped
        # The second job's cancellation is never published: the store says so.
        cancel(store, second.id)
        await asyncio.wait_for(handling[1], 5)
        assert works[1].stopped
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watching, 5)
        await nc.close()
