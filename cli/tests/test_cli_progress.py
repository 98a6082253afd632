"""The phase progress folded from a job's events, as `vdo submit --watch` shows it."""

from __future__ import annotations

from typing import Any

from vdo_cli.progress import JobProgress, PhaseState, describe
from vdo_kernel.domain import Phase, Status

PIPELINE_STEPS = [
    ("build", "building", "ok"),
    ("write_tests", "testing", "ok"),
    ("run_tests", "testing", "passed"),
    ("review", "reviewing", "approved"),
    ("sandbox_run", "sandboxing", "up"),
]


class History:
    """Events shaped as the gateway returns them, numbered as the store numbers them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {
            "position": len(self.events) + 1,
            "type": kind,
            "timestamp": "2026-01-01T10:00:00+00:00",
            "data": data,
        }
        self.events.append(event)
        return event

    def step(self, step: str, phase: str, attempt: int, outcome: str) -> None:
        self.add("StepStarted", step=step, phase=phase, attempt=attempt)
        self.add(
            "StepFinished",
            step=step,
            phase=phase,
            attempt=attempt,
            outcome=outcome,
            summary=f"{step} {outcome}",
        )


def fold(history: History) -> JobProgress:
    progress = JobProgress("job-1")
    for event in history.events:
        progress.apply(event)
    return progress


def submitted() -> History:
    history = History()
    history.add("JobSubmitted", title="todo api", max_attempts=2, budget_usd=1.0)
    history.step("plan", "planning", 1, "ok")
    return history


def states(progress: JobProgress) -> dict[Phase, PhaseState]:
    return {phase: p.state for phase, p in progress.phases.items()}


def test_a_completed_job_has_every_phase_done() -> None:
    history = submitted()
    for step in PIPELINE_STEPS:
        history.step(*step[:2], 1, step[2])
    history.add("JobCompleted", attempts=1)

    progress = fold(history)

    assert progress.status is Status.COMPLETED
    assert progress.finished
    assert progress.title == "todo api"
    assert set(states(progress).values()) == {PhaseState.DONE}
    assert progress.last_position == len(history.events)


def test_testing_stays_running_until_the_tests_have_run() -> None:
    history = submitted()
    history.step("build", "building", 1, "ok")
    history.step("write_tests", "testing", 1, "ok")

    progress = fold(history)

    assert progress.status is Status.RUNNING
    assert progress.phases[Phase.TESTING].state is PhaseState.RUNNING
    assert progress.phases[Phase.REVIEWING].state is PhaseState.PENDING


def test_a_rejection_marks_the_phase_and_a_new_attempt_resets_the_later_phases() -> None:
    history = submitted()
    for step, phase, _ in PIPELINE_STEPS[:3]:
        history.step(step, phase, 1, "ok" if step != "run_tests" else "passed")
    history.step("review", "reviewing", 1, "changes_requested")

    rejected = fold(history)
    assert rejected.phases[Phase.REVIEWING].state is PhaseState.FAILED
    assert "changes_requested" in rejected.phases[Phase.REVIEWING].note

    history.add("AttemptStarted", attempt=2, reason="review changes_requested", feedback="")
    history.add("StepStarted", step="build", phase="building", attempt=2)
    retried = fold(history)

    assert retried.attempt == 2
    assert retried.phases[Phase.PLANNING].state is PhaseState.DONE
    assert retried.phases[Phase.BUILDING].state is PhaseState.RUNNING
    assert retried.phases[Phase.BUILDING].attempt == 2
    assert retried.phases[Phase.REVIEWING].state is PhaseState.PENDING


def test_a_failed_job_fails_the_phase_it_was_in() -> None:
    history = submitted()
    history.add("StepStarted", step="build", phase="building", attempt=1)
    history.add("StepFailed", step="build", phase="building", attempt=1, reason="model down")
    history.add("JobFailed", reason="building failed: model down")

    progress = fold(history)

    assert progress.status is Status.FAILED
    assert progress.finished_reason == "building failed: model down"
    assert progress.phases[Phase.BUILDING].state is PhaseState.FAILED
    assert progress.phases[Phase.TESTING].state is PhaseState.PENDING


def test_a_cancelled_job_stops_the_running_phase() -> None:
    history = submitted()
    history.add("StepStarted", step="build", phase="building", attempt=1)
    history.add("JobCancelled", reason="changed my mind", by="someone")

    progress = fold(history)

    assert progress.status is Status.CANCELLED
    assert progress.phases[Phase.BUILDING].state is PhaseState.STOPPED


def test_a_resumed_step_runs_again_in_its_phase() -> None:
    history = submitted()
    history.add("StepStarted", step="build", phase="building", attempt=1)
    # A resumed step names no phase: it is found from the step.
    history.add("StepResumed", step="build", attempt=1, key="k", worker="w", reason="redelivered")

    progress = fold(history)

    assert progress.phases[Phase.BUILDING].state is PhaseState.RUNNING
    assert "resumed" in progress.phases[Phase.BUILDING].note


def test_events_seen_before_and_events_it_does_not_know_change_nothing() -> None:
    history = submitted()
    history.add("SomethingNewer", step="build", phase="building")
    progress = fold(history)
    before = states(progress)

    for event in history.events:
        progress.apply(event)  # the same events again, as a poll without `after` returns them
    progress.apply({"position": 1, "type": "JobCompleted", "data": {}})

    assert states(progress) == before
    assert progress.status is Status.RUNNING


def test_every_event_reads_as_one_line() -> None:
    history = submitted()
    history.add("StepFailed", step="build", phase="building", attempt=1, reason="a\nb")
    history.add("SomethingNewer")
    history.add("JobCompleted")  # fields missing: still a line, never an error

    lines = [describe(event) for event in history.events]

    assert lines[0] == "submitted: todo api (up to 2 attempts, budget $1.0)"
    assert lines[2] == "planning: plan ok (attempt 1): plan ok"
    assert lines[3] == "building: build failed (attempt 1): a b"
    assert lines[4] == "SomethingNewer"
    assert all("\n" not in line for line in lines)
