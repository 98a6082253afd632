"""The step bracket on a real PostgreSQL: duplicates do nothing twice; an orphaned start resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vdo_kernel.blobs import BlobStore
from vdo_kernel.consumer import Delivery
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.relay import to_message
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure, StepResult, StepRunner
from vdo_kernel.store import JobStore


def submitted(store: JobStore) -> tuple[Job, Delivery]:
    job = Job.submit(title="t", description="d")
    [position] = store.save(job)
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
    assert types(store, job) == ["JobSubmitted", "StepStarted", "StepFinished"]


async def test_the_same_message_twice_at_once_does_the_work_once(
    store: JobStore, tmp_path: Path
) -> None:
    job, delivery = submitted(store)
    calls: list[int] = []
    step = runner(store, tmp_path, calls, delay=0.3)
    await asyncio.gather(step.handle(delivery), step.handle(delivery), step.handle(delivery))
    assert calls == [1]
    assert types(store, job) == ["JobSubmitted", "StepStarted", "StepFinished"]


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
    assert types(store, job) == ["JobSubmitted", "StepStarted", "StepResumed", "StepFinished"]


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
    assert types(store, job) == ["JobSubmitted", "StepStarted", "JobCancelled"]
    assert store.get(job.id).status.value == "cancelled"
