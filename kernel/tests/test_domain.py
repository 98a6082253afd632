"""The pipeline's rules, on the Job aggregate alone (no I/O)."""

from __future__ import annotations

import pytest

from vdo_kernel.domain import PIPELINE, DomainError, Due, Job, Outcome, Status, Step

OK_OUTCOME = {
    Step.PLAN: Outcome.OK,
    Step.BUILD: Outcome.OK,
    Step.WRITE_TESTS: Outcome.OK,
    Step.RUN_TESTS: Outcome.PASSED,
    Step.REVIEW: Outcome.APPROVED,
    Step.SANDBOX_RUN: Outcome.UP,
}


def run(job: Job, step: Step, outcome: Outcome | None = None) -> Due:
    due = job.due()
    assert due is not None
    assert due.step is step, f"expected {step}, due is {due}"
    job.start_step(due, worker="test", causation_id="c")
    job.finish_step(due, outcome=outcome or OK_OUTCOME[step], summary="s", causation_id="c")
    return due


def names(job: Job) -> list[str]:
    return [type(e).__qualname__.split(".")[-1] for e in job.collect_events()]


def test_a_job_goes_through_every_step_in_order_and_completes() -> None:
    job = Job.submit(title="t", description="d")
    statuses = [job.status]
    for step in PIPELINE:
        run(job, step)
        statuses.append(job.status)
    assert statuses == [Status.QUEUED] + [Status.RUNNING] * 5 + [Status.COMPLETED]
    assert job.due() is None
    assert names(job) == ["Submitted"] + ["StepStarted", "StepFinished"] * len(PIPELINE) + [
        "Completed"
    ]


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        (Step.RUN_TESTS, Outcome.FAILED),
        (Step.REVIEW, Outcome.CHANGES_REQUESTED),
        (Step.SANDBOX_RUN, Outcome.DOWN),
    ],
)
def test_a_rejection_starts_a_new_attempt_at_the_builder(step: Step, verdict: Outcome) -> None:
    job = Job.submit(title="t", description="d", max_attempts=2)
    for s in PIPELINE[: PIPELINE.index(step)]:
        run(job, s)
    run(job, step, verdict)
    assert job.attempt == 2
    assert job.due() == Due(Step.BUILD, 2)
    assert job.feedback == ["s"]


def test_a_rejection_on_the_last_attempt_fails_the_job_with_the_reason() -> None:
    job = Job.submit(title="t", description="d", max_attempts=1)
    for s in PIPELINE[:3]:
        run(job, s)
    run(job, Step.RUN_TESTS, Outcome.FAILED)
    assert job.status is Status.FAILED
    assert job.finished_reason is not None
    assert "last attempt" in job.finished_reason
    assert job.due() is None


def test_a_step_that_cannot_be_done_fails_the_job() -> None:
    job = Job.submit(title="t", description="d")
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="c")
    job.fail_step(due, reason="no model", causation_id="c")
    assert job.status is Status.FAILED
    assert job.finished_reason == "planning failed: no model"


def test_starting_again_without_a_result_is_recorded_as_resumed() -> None:
    job = Job.submit(title="t", description="d")
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="c")
    job.start_step(due, worker="w2", causation_id="c")
    assert names(job)[-1] == "StepResumed"
    assert job.record(Step.PLAN).resumed == 1


def test_steps_that_are_not_due_are_refused() -> None:
    job = Job.submit(title="t", description="d")
    with pytest.raises(DomainError, match="not due"):
        job.start_step(Due(Step.BUILD, 1), worker="w", causation_id="c")
    due = job.due()
    assert due is not None
    with pytest.raises(DomainError, match="never started"):
        job.finish_step(due, outcome=Outcome.OK, summary="", causation_id="c")
    job.start_step(due, worker="w", causation_id="c")
    with pytest.raises(DomainError, match="not a result"):
        job.finish_step(due, outcome=Outcome.PASSED, summary="", causation_id="c")


def test_cancel_ends_the_job_and_a_finished_job_cannot_be_cancelled() -> None:
    job = Job.submit(title="t", description="d")
    job.cancel(reason="no longer needed", by="someone", causation_id="c")
    assert job.status is Status.CANCELLED
    assert job.due() is None
    with pytest.raises(DomainError, match="already cancelled"):
        job.cancel(reason="again", by="someone", causation_id="c")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": "  "}, "title must not be empty"),
        ({"title": "x" * 201}, "title is longer"),
        ({"description": ""}, "description must not be empty"),
        ({"description": "x" * 20_001}, "description is longer"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 11}, "max_attempts"),
        ({"budget_usd": 0}, "budget_usd"),
    ],
)
def test_bad_submissions_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"title": "t", "description": "d", **kwargs}
    with pytest.raises(DomainError, match=message):
        Job.submit(**args)  # type: ignore[arg-type]
