"""The pipeline's rules, on the Job aggregate alone (no I/O)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from vdo_kernel.domain import (
    AI_PHASES,
    ATTEMPT_START,
    DEFAULT_PRIORITY,
    PIPELINE,
    STEP_ROLE,
    DomainError,
    Due,
    Job,
    Outcome,
    Phase,
    Status,
    Step,
    admits,
    step_after,
    step_named,
)

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


def admitted(**kwargs: Any) -> Job:
    """A job submitted and let run by the queue."""
    job = Job.submit(**{"title": "t", "description": "d", **kwargs})
    job.admit(by="scheduler", causation_id="c")
    return job


def test_a_job_goes_through_every_step_in_order_and_completes() -> None:
    job = Job.submit(title="t", description="d")
    statuses = [job.status]
    job.admit(by="scheduler", causation_id="c")
    statuses.append(job.status)
    for step in PIPELINE:
        run(job, step)
        statuses.append(job.status)
    assert statuses == [Status.QUEUED] + [Status.RUNNING] * 6 + [Status.COMPLETED]
    assert job.due() is None
    assert names(job) == ["Submitted", "Admitted"] + [
        "StepStarted",
        "StepFinished",
    ] * len(PIPELINE) + ["Completed"]


@pytest.mark.parametrize(
    ("step", "verdict"),
    [
        (Step.RUN_TESTS, Outcome.FAILED),
        (Step.REVIEW, Outcome.CHANGES_REQUESTED),
        (Step.SANDBOX_RUN, Outcome.DOWN),
    ],
)
def test_a_rejection_starts_a_new_attempt_at_the_builder(step: Step, verdict: Outcome) -> None:
    job = admitted(max_attempts=2)
    for s in PIPELINE[: PIPELINE.index(step)]:
        run(job, s)
    run(job, step, verdict)
    assert job.attempt == 2
    assert job.due() == Due(Step.BUILD, 2)
    assert job.feedback == ["s"]


def test_a_rejection_on_the_last_attempt_fails_the_job_with_the_reason() -> None:
    job = admitted(max_attempts=1)
    for s in PIPELINE[:3]:
        run(job, s)
    run(job, Step.RUN_TESTS, Outcome.FAILED)
    assert job.status is Status.FAILED
    assert job.finished_reason is not None
    assert "last attempt" in job.finished_reason
    assert job.due() is None


def test_a_step_that_cannot_be_done_fails_the_job() -> None:
    job = admitted()
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="c")
    job.fail_step(due, reason="no model", causation_id="c")
    assert job.status is Status.FAILED
    assert job.finished_reason == "planning failed: no model"


def test_starting_again_without_a_result_is_recorded_as_resumed() -> None:
    job = admitted()
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="c")
    job.start_step(due, worker="w2", causation_id="c")
    assert names(job)[-1] == "StepResumed"
    assert job.record(Step.PLAN).resumed == 1


def test_steps_that_are_not_due_are_refused() -> None:
    job = admitted()
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
        ({"priority": -1}, "priority must be an integer from 0 to 9"),
        ({"priority": 10}, "priority must be an integer from 0 to 9"),
        ({"priority": True}, "priority must be an integer"),
    ],
)
def test_bad_submissions_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"title": "t", "description": "d", **kwargs}
    with pytest.raises(DomainError, match=message):
        Job.submit(**args)  # type: ignore[arg-type]


# ---- the queue ---------------------------------------------------------------------------------


def test_a_submitted_job_waits_in_the_queue_until_admitted() -> None:
    job = Job.submit(title="t", description="d")
    assert job.status is Status.QUEUED
    assert job.is_queued
    assert job.priority == DEFAULT_PRIORITY
    assert job.due() is None
    assert job.next_step() == Due(Step.PLAN, 1)
    with pytest.raises(DomainError, match="not due"):
        job.start_step(Due(Step.PLAN, 1), worker="w", causation_id="c")
    assert job.admit(by="scheduler", causation_id="c") == Due(Step.PLAN, 1)
    assert (job.status, job.is_queued) == (Status.RUNNING, False)
    assert job.due() == Due(Step.PLAN, 1)
    event = job.collect_events()[-1]
    assert isinstance(event, Job.Admitted)
    assert (event.step, event.attempt, event.by) == ("plan", 1, "scheduler")


def test_only_a_queued_job_is_admitted() -> None:
    job = admitted()
    with pytest.raises(DomainError, match="not queued"):
        job.admit(by="scheduler", causation_id="c")
    cancelled = Job.submit(title="t", description="d")
    cancelled.cancel(reason="r", by="me", causation_id="c")
    with pytest.raises(DomainError, match="not queued"):
        cancelled.admit(by="scheduler", causation_id="c")


def test_the_priority_is_kept_from_the_submission() -> None:
    assert Job.submit(title="t", description="d", priority=9).priority == 9
    assert Job.submit(title="t", description="d", priority=0).priority == 0


def test_an_admission_or_a_steps_start_lets_a_job_run() -> None:
    assert [kind for kind in ("JobSubmitted", "JobAdmitted", "StepStarted") if admits(kind)] == [
        "JobAdmitted",
        "StepStarted",
    ]


def test_a_job_submitted_before_the_queue_existed_with_steps_counts_as_admitted() -> None:
    # An old history: its steps started without any admission.
    job = Job.submit(title="t", description="d")
    job.trigger_event(
        Job.StepStarted,
        step="plan",
        phase="planning",
        attempt=1,
        key="k",
        worker="planner",
        correlation_id="c",
        causation_id="c",
    )
    assert job.admitted
    assert job.status is Status.RUNNING
    assert job.due() == Due(Step.PLAN, 1)
    with pytest.raises(DomainError, match="not queued"):
        job.admit(by="scheduler", causation_id="c")


def test_cancelling_a_queued_job_ends_it_without_running_anything() -> None:
    job = Job.submit(title="t", description="d")
    job.cancel(reason="not needed", by="ada", causation_id="c")
    assert job.status is Status.CANCELLED
    assert job.next_step() is None
    assert names(job) == ["Submitted", "Cancelled"]


def test_cancelling_a_running_job_leaves_nothing_due_and_refuses_its_result() -> None:
    job = admitted()
    run(job, Step.PLAN)
    due = job.due()
    assert due == Due(Step.BUILD, 1)
    job.start_step(due, worker="builder", causation_id="c")
    job.cancel(reason="wrong idea", by="ada", causation_id="c")
    assert job.due() is None
    assert job.finished_reason == "wrong idea"
    with pytest.raises(DomainError, match="not due"):
        job.finish_step(due, outcome=Outcome.OK, summary="s", causation_id="c")


# ---- retries -----------------------------------------------------------------------------------


def failed_at_the_tests(max_attempts: int = 1) -> Job:
    """A job whose only attempt's tests failed: plan, build and tests written were good."""
    job = admitted(max_attempts=max_attempts)
    for step in PIPELINE[:3]:
        run(job, step)
    run(job, Step.RUN_TESTS, Outcome.FAILED)
    assert job.status is Status.FAILED
    return job


def completed() -> Job:
    job = admitted()
    for step in PIPELINE:
        run(job, step)
    assert job.status is Status.COMPLETED
    return job


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("planning", Step.PLAN),
        ("building", Step.BUILD),
        ("testing", Step.WRITE_TESTS),
        ("reviewing", Step.REVIEW),
        ("sandboxing", Step.SANDBOX_RUN),
        ("run_tests", Step.RUN_TESTS),
        ("build", Step.BUILD),
    ],
)
def test_a_retry_starts_from_a_phase_or_a_step(name: str, step: Step) -> None:
    assert step_named(name) is step


def test_a_retry_names_a_phase_or_a_step_or_is_refused() -> None:
    with pytest.raises(DomainError, match="neither a phase nor a step: planning, building"):
        step_named("deploying")


@pytest.mark.parametrize("start", PIPELINE)
def test_a_retry_reuses_the_results_before_its_step_and_redoes_the_rest(start: Step) -> None:
    job = completed()
    before = {step: job.record(step, 1) for step in PIPELINE}
    attempt = job.retry(start, by="ada", causation_id="c")
    assert attempt == 2
    assert job.status is Status.QUEUED
    assert job.is_queued
    assert job.due() is None  # back in the queue
    assert job.admit(by="scheduler", causation_id="c") == Due(start, 2)
    index = PIPELINE.index(start)
    for step in PIPELINE[:index]:
        # The same record, not a copy: the earlier attempt's result is the one reused.
        assert job.record(step, 2) is before[step]
    for step in PIPELINE[index:]:
        assert job.record(step, 2).outcome is None
    for step in PIPELINE[index:]:
        due = run(job, step)
        assert due.attempt == 2
    assert job.status.value == "completed"
    # The first attempt's records are as they were.
    assert all(job.steps[(step, 1)] is before[step] for step in PIPELINE)


def test_a_retry_from_planning_makes_a_new_plan_for_the_new_attempt() -> None:
    job = completed()
    first_plan = job.record(Step.PLAN)
    job.retry(Step.PLAN, by="ada", causation_id="c")
    job.admit(by="scheduler", causation_id="c")
    assert job.due() == Due(Step.PLAN, 2)
    run(job, Step.PLAN)
    assert job.record(Step.PLAN) is job.steps[(Step.PLAN, 2)]
    assert job.record(Step.PLAN) is not first_plan
    assert job.due() == Due(Step.BUILD, 2)


def test_a_retry_of_a_failed_job_resumes_where_asked_with_why_it_failed_as_feedback() -> None:
    job = failed_at_the_tests()
    reason = job.finished_reason
    assert job.retry(Step.RUN_TESTS, by="ada", causation_id="c") == 2
    # The new attempt counts like any other: max_attempts grows to it.
    assert job.max_attempts == 2
    assert job.feedback[-1] == reason
    assert job.finished_reason is None
    job.admit(by="scheduler", causation_id="c")
    assert job.due() == Due(Step.RUN_TESTS, 2)
    # The build and the tests of attempt 1 are what runs again.
    assert job.record(Step.BUILD, 2) is job.steps[(Step.BUILD, 1)]
    assert job.record(Step.WRITE_TESTS, 2) is job.steps[(Step.WRITE_TESTS, 1)]
    run(job, Step.RUN_TESTS, Outcome.FAILED)
    # No attempt left: it fails again.
    assert job.status is Status.FAILED
    assert "(2 of 2)" in (job.finished_reason or "")


def test_a_retry_gives_the_reason_as_feedback_and_keeps_attempts_left() -> None:
    job = admitted(max_attempts=3)
    run(job, Step.PLAN)
    job.cancel(reason="later", by="ada", causation_id="c")
    job.retry(Step.BUILD, by="ada", reason="use argparse", causation_id="c")
    assert (job.attempt, job.max_attempts, job.feedback[-1]) == (2, 3, "use argparse")
    event = job.collect_events()[-1]
    assert isinstance(event, Job.Retried)
    assert (event.from_step, event.attempt, event.reused_attempt) == ("build", 2, 1)
    assert (event.reason, event.by, event.max_attempts) == ("use argparse", "ada", 3)
    job.admit(by="scheduler", causation_id="c")
    for step in PIPELINE[1:4]:
        run(job, step)
    # A rejection in the retried attempt starts the next one, a fresh build.
    run(job, Step.REVIEW, Outcome.CHANGES_REQUESTED)
    assert job.attempt == 3
    assert job.due() == Due(Step.BUILD, 3)
    assert job.record(Step.BUILD, 3).outcome is None


def test_a_retry_twice_reuses_the_first_result_through_both() -> None:
    job = completed()
    build = job.record(Step.BUILD, 1)
    job.retry(Step.REVIEW, by="ada", causation_id="c")
    job.admit(by="scheduler", causation_id="c")
    job.cancel(reason="r", by="ada", causation_id="c")
    # Attempt 2 reused attempt 1's build, tests and test run; attempt 3 reuses them in turn.
    job.retry(Step.REVIEW, by="ada", causation_id="c")
    assert job.attempt == 3
    assert job.record(Step.BUILD, 3) is build
    assert job.links[(Step.BUILD, 3)] == 1


def test_only_an_ended_job_is_retried() -> None:
    queued = Job.submit(title="t", description="d")
    with pytest.raises(DomainError, match="job is queued: only a completed, failed or cancelled"):
        queued.retry(Step.PLAN, by="ada", causation_id="c")
    running = admitted()
    with pytest.raises(DomainError, match="job is running"):
        running.retry(Step.PLAN, by="ada", causation_id="c")


def test_a_retry_cannot_reuse_a_result_that_is_not_there_or_was_rejected() -> None:
    never_planned = Job.submit(title="t", description="d")
    never_planned.cancel(reason="r", by="ada", causation_id="c")
    with pytest.raises(DomainError, match="no plan; retry from planning"):
        never_planned.retry(Step.BUILD, by="ada", causation_id="c")
    assert never_planned.retry(Step.PLAN, by="ada", causation_id="c") == 2

    job = failed_at_the_tests()
    with pytest.raises(
        DomainError,
        match="cannot retry from review: run_tests of attempt 1 has no good result to reuse "
        r"\(failed\); retry from testing or earlier",
    ):
        job.retry(Step.REVIEW, by="ada", causation_id="c")

    failed_build = admitted()
    run(failed_build, Step.PLAN)
    due = failed_build.due()
    assert due is not None
    failed_build.start_step(due, worker="w", causation_id="c")
    failed_build.fail_step(due, reason="no model", causation_id="c")
    with pytest.raises(DomainError, match="build of attempt 1 has no good result"):
        failed_build.retry(Step.WRITE_TESTS, by="ada", causation_id="c")
    failed_build.retry(Step.BUILD, by="ada", causation_id="c")
    failed_build.admit(by="scheduler", causation_id="c")
    assert failed_build.due() == Due(Step.BUILD, 2)


def test_the_step_after_a_finished_step_is_the_next_one_unless_rejected_or_last() -> None:
    assert {(step, outcome): step_after(step, outcome) for step, outcome in OK_OUTCOME.items()} == {
        (Step.PLAN, Outcome.OK): Step.BUILD,
        (Step.BUILD, Outcome.OK): Step.WRITE_TESTS,
        (Step.WRITE_TESTS, Outcome.OK): Step.RUN_TESTS,
        (Step.RUN_TESTS, Outcome.PASSED): Step.REVIEW,
        (Step.REVIEW, Outcome.APPROVED): Step.SANDBOX_RUN,
        (Step.SANDBOX_RUN, Outcome.UP): None,
    }
    assert step_after(Step.RUN_TESTS, Outcome.FAILED) is None
    assert step_after(Step.REVIEW, Outcome.CHANGES_REQUESTED) is None
    assert step_after(Step.SANDBOX_RUN, Outcome.DOWN) is None
    # A new attempt starts again at the build: the plan is made once per job.
    assert ATTEMPT_START is Step.BUILD


def test_the_ai_roles_are_the_four_model_steps_in_order() -> None:
    assert AI_PHASES == ("planner", "builder", "tester", "reviewer")
    assert STEP_ROLE == {
        "plan": "planner",
        "build": "builder",
        "write_tests": "tester",
        "review": "reviewer",
    }


def test_phases_start_at_their_first_step() -> None:
    assert [step_named(phase.value) for phase in Phase] == [
        Step.PLAN,
        Step.BUILD,
        Step.WRITE_TESTS,
        Step.REVIEW,
        Step.SANDBOX_RUN,
    ]


def test_a_retry_may_change_the_priority_within_its_bounds() -> None:
    job = completed()
    with pytest.raises(DomainError, match="priority must be an integer from 0 to 9"):
        job.retry(Step.PLAN, by="ada", priority=10, causation_id="c")
    job.retry(Step.PLAN, by="ada", priority=9, causation_id="c")
    assert job.priority == 9
    job.admit(by="scheduler", causation_id="c")
    job.cancel(reason="r", by="ada", causation_id="c")
    job.retry(Step.PLAN, by="ada", causation_id="c")
    assert job.priority == 9  # kept unless another is given


def planning(budget_usd: float = 0.5) -> tuple[Job, Due]:
    job = Job.submit(title="t", description="d", budget_usd=budget_usd)
    job.admit(by="scheduler", causation_id="c")
    due = job.due()
    assert due is not None
    job.start_step(due, worker="w", causation_id="c")
    return job, due


def call(job: Job, due: Due, try_number: int = 1, reserved_usd: float = 0.2) -> str:
    return job.start_model_call(
        due,
        call=1,
        try_number=try_number,
        provider="anthropic",
        model="claude-sonnet-4-6",
        reserved_usd=reserved_usd,
        causation_id="c",
    )


def test_a_call_that_takes_the_spending_over_the_budget_is_named_with_the_overrun() -> None:
    job, due = planning(budget_usd=0.5)
    # The provider counted far more than the worst case estimated before the call.
    reason = job.finish_model_call(call(job, due), outcome="ok", cost_usd=75.0, causation_id="c")
    assert reason == (
        "budget exceeded: the planner's call to anthropic:claude-sonnet-4-6 (try 1) cost "
        "$75.0000, taking the job's spending to $75.0000 of its $0.50 budget ($74.5000 over)"
    )
    # Any later call is refused with the same reason, not with "$0.0000 is left".
    with pytest.raises(DomainError, match=r"planner's call .* \(\$74\.5000 over\); no further"):
        call(job, due, try_number=2)


def test_a_call_within_the_budget_or_already_over_it_names_no_overrun() -> None:
    job, due = planning(budget_usd=0.5)
    reason = job.finish_model_call(call(job, due), outcome="ok", cost_usd=0.5, causation_id="c")
    assert reason is None
    assert job.spent_usd == 0.5  # exactly the budget is within it


def test_a_finished_calls_cost_basis_is_checked_and_defaults_by_outcome() -> None:
    job, due = planning(budget_usd=5)
    first = call(job, due)
    with pytest.raises(DomainError, match="cost basis 'guessed'"):
        job.finish_model_call(first, outcome="error", cost_basis="guessed", causation_id="c")
    job.finish_model_call(first, outcome="error", cost_usd=0.2, causation_id="c")
    second = call(job, due, try_number=2)
    job.finish_model_call(second, outcome="interrupted", cost_usd=0.2, causation_id="c")
    third = call(job, due, try_number=3)
    job.finish_model_call(
        third, outcome="error", cost_usd=0.01, cost_basis="estimated", causation_id="c"
    )
    finished = [e for e in job.collect_events() if isinstance(e, Job.ModelCallFinished)]
    assert [e.cost_basis for e in finished] == ["reported", "worst_case", "estimated"]


def test_a_finished_call_stored_before_cost_basis_existed_is_upcast() -> None:
    """Events of version 1 have no `cost_basis`: an interrupted try was counted at its worst
    case, any other at the provider's figures."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    job, due = planning(budget_usd=5)
    job.finish_model_call(call(job, due), outcome="interrupted", cost_usd=0.2, causation_id="c")
    job.finish_model_call(call(job, due, 2), outcome="error", causation_id="c")
    read = []
    for event in job.collect_events():
        if not isinstance(event, Job.ModelCallFinished):
            continue
        stored = mapper.to_stored_event(event)
        state = json.loads(stored.state)
        assert state.pop("class_version") == 2
        del state["cost_basis"]
        old = replace(stored, state=json.dumps(state).encode())
        upcast = mapper.to_domain_event(old)
        assert isinstance(upcast, Job.ModelCallFinished)
        read.append((upcast.outcome, upcast.cost_basis, upcast.cost_usd))
    assert read == [("interrupted", "worst_case", 0.2), ("error", "reported", 0.0)]
