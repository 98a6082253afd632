"""The phase progress folded from a job's events, as `vdo submit --watch` shows it."""

from __future__ import annotations

from typing import Any

from vdo_cli.progress import JobProgress, PhaseState, describe
from vdo_cli.watch import cost_line
from vdo_kernel.domain import Phase, Status
from vdo_kernel.figures import is_scripted, latency, usd

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


def call_started(history: History, step: str, call: int, try_number: int, route: str) -> None:
    provider, model = route.split(":", 1)
    history.add(
        "ModelCallStarted",
        key=f"job-1:{step}:1:{call}:{try_number}",
        step=step,
        attempt=1,
        call=call,
        try_number=try_number,
        provider=provider,
        model=model,
        reserved_usd=0.05,
        note="",
    )


def call_finished(
    history: History, step: str, call: int, try_number: int, route: str, **result: Any
) -> None:
    provider, model = route.split(":", 1)
    history.add(
        "ModelCallFinished",
        key=f"job-1:{step}:1:{call}:{try_number}",
        step=step,
        attempt=1,
        call=call,
        try_number=try_number,
        provider=provider,
        model=model,
        **{
            "outcome": "ok",
            "error": "",
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "latency_ms": 0.0,
            **result,
        },
    )


def test_the_running_cost_adds_every_finished_call() -> None:
    history = submitted()
    history.add("StepStarted", step="build", phase="building", attempt=1)
    call_started(history, "build", 1, 1, "anthropic:claude-sonnet-4-5")
    call_finished(
        history,
        "build",
        1,
        1,
        "anthropic:claude-sonnet-4-5",
        outcome="error",
        error="429 rate limited",
        latency_ms=90.0,
    )
    call_started(history, "build", 1, 2, "openai:gpt-4.1")

    running = fold(history)
    assert (running.budget_usd, running.cost_usd, running.calls) == (1.0, 0.0, 1)
    assert running.open_calls == {"job-1:build:1:1:2"}
    assert running.phases[Phase.BUILDING].note == ("build call 1 try 2: waiting for openai:gpt-4.1")

    call_finished(
        history,
        "build",
        1,
        2,
        "openai:gpt-4.1",
        input_tokens=1500,
        output_tokens=400,
        cost_usd=0.0125,
        latency_ms=2300.0,
    )
    call_started(history, "build", 2, 1, "scripted:demo")
    call_finished(history, "build", 2, 1, "scripted:demo", cost_usd=0.1)
    done = fold(history)

    assert done.cost_usd == 0.0125 + 0.1
    assert (done.calls, done.open_calls) == (3, set())
    assert done.phases[Phase.BUILDING].state is PhaseState.RUNNING
    assert done.phases[Phase.BUILDING].note == (
        "build call 2 try 1: ok, 0 in / 0 out tokens, $0.10, 0 ms"
    )


def test_model_calls_read_as_one_line_each() -> None:
    history = submitted()
    call_started(history, "plan", 1, 1, "anthropic:claude-sonnet-4-5")
    call_finished(
        history,
        "plan",
        1,
        1,
        "anthropic:claude-sonnet-4-5",
        outcome="error",
        error="429\nrate limited",
        latency_ms=90.0,
    )
    call_finished(
        history,
        "plan",
        1,
        2,
        "openai:gpt-4.1",
        input_tokens=1500,
        output_tokens=400,
        cost_usd=0.0125,
        latency_ms=2300.0,
    )
    call_started(history, "review", 1, 1, "scripted:demo")
    history.add("ModelCallFinished")  # fields missing: still a line, never an error

    lines = [describe(event) for event in history.events[3:]]

    assert lines == [
        "planning: plan call 1 try 1 on anthropic:claude-sonnet-4-5 started (attempt 1, up to "
        "$0.05)",
        "planning: plan call 1 try 1 on anthropic:claude-sonnet-4-5: error, 0 in / 0 out "
        "tokens, $0.00, 90 ms: 429 rate limited",
        "planning: plan call 1 try 2 on openai:gpt-4.1: ok, 1,500 in / 400 out tokens, "
        "$0.0125, 2.3 s",
        "reviewing: review call 1 try 1 on scripted:demo [scripted model] started (attempt 1, "
        "up to $0.05)",
        "?: None call ? try ? on ?:?: ?, - in / - out tokens, $0.00, -",
    ]


def test_money_tokens_and_times_read_as_people_write_them() -> None:
    assert [usd(v) for v in (0, 0.0125, 0.5, 2.5, 1234.5, 0.00001, None)] == [
        "$0.00",
        "$0.0125",
        "$0.50",
        "$2.50",
        "$1,234.50",
        "$0.00",
        "-",
    ]
    assert [latency(v) for v in (0, 999.4, 2345.0, None, "x")] == [
        "0 ms",
        "999 ms",
        "2.3 s",
        "-",
        "-",
    ]
    assert is_scripted("scripted (built-in; no AI model configured)")
    assert is_scripted("scripted:demo")
    assert not is_scripted("openai:gpt-4.1")
    assert not is_scripted(None)


def test_the_watch_shows_the_running_cost_against_the_budget() -> None:
    history = submitted()
    assert cost_line(fold(history)) == "cost $0.00 of $1.00"
    call_started(history, "build", 1, 1, "openai:gpt-4.1")
    call_finished(history, "build", 1, 1, "openai:gpt-4.1", cost_usd=0.25)
    call_started(history, "build", 2, 1, "openai:gpt-4.1")

    assert cost_line(fold(history)) == "cost $0.25 of $1.00 (1 call(s), 1 running)"

    call_finished(history, "build", 2, 1, "openai:gpt-4.1", cost_usd=1.5)
    assert cost_line(fold(history)) == "cost $1.75 of $1.00 (2 call(s))"
    assert cost_line(JobProgress("no submission seen")) == "cost $0.00"


def test_a_calls_cost_says_when_it_is_estimated_or_its_worst_case() -> None:
    history = submitted()
    error = "timeout: anthropic stalled; counted at its worst case $0.0636"
    call_finished(
        history,
        "build",
        1,
        1,
        "anthropic:claude-sonnet-4-6",
        outcome="error",
        error=error,
        cost_usd=0.0636,
        cost_basis="worst_case",
    )
    call_finished(
        history,
        "build",
        1,
        2,
        "anthropic:claude-sonnet-4-6",
        outcome="error",
        error="stream_cut",
        output_tokens=71,
        cost_usd=0.0014,
        cost_basis="estimated",
    )
    call_finished(
        history, "build", 1, 3, "anthropic:claude-sonnet-4-6", cost_usd=0.01, cost_basis="reported"
    )

    said = [describe(event) for event in history.events[-3:]]

    assert "0 in / 0 out tokens, $0.0636 (worst case), " in said[0]
    assert "0 in / 71 out tokens, $0.0014 (estimated), " in said[1]
    assert "0 in / 0 out tokens, $0.01, " in said[2]
    assert fold(history).cost_usd == 0.0636 + 0.0014 + 0.01
