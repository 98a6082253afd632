"""A job's progress through its phases, folded from its events as the gateway returns them.

Pure: no I/O, so the watch display and the tests share it. Events it does not know are kept in
the history but change nothing, so a newer gateway does not break an older CLI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vdo_kernel.domain import (
    ATTEMPT_START,
    PIPELINE,
    REJECTING_OUTCOMES,
    STEP_PHASE,
    Outcome,
    Phase,
    Status,
    Step,
)
from vdo_kernel.figures import SCRIPTED_LABEL, cost_text, is_scripted, latency, tokens_text, usd
from vdo_kernel.figures import number as _float
from vdo_kernel.figures import whole_number as _int

JSON = dict[str, Any]

FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

# A phase is done when its last step finishes (testing is two steps: write, then run).
LAST_STEP: dict[Phase, Step] = {STEP_PHASE[step]: step for step in PIPELINE}

NOTE_MAX = 120


class PhaseState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # The job was cancelled while this phase ran.
    STOPPED = "stopped"


@dataclass
class PhaseProgress:
    phase: Phase
    state: PhaseState = PhaseState.PENDING
    attempt: int | None = None
    note: str = ""


@dataclass
class JobProgress:
    job_id: str
    title: str = ""
    status: Status = Status.QUEUED
    attempt: int = 1
    max_attempts: int | None = None
    budget_usd: float | None = None
    # What the finished model calls have cost so far, and how many there were (every try).
    cost_usd: float = 0.0
    calls: int = 0
    # Model calls started and not finished, by key.
    open_calls: set[str] = field(default_factory=set)
    finished_reason: str | None = None
    last_position: int = 0
    phases: dict[Phase, PhaseProgress] = field(
        default_factory=lambda: {phase: PhaseProgress(phase) for phase in Phase}
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def is_new(self, event: JSON) -> bool:
        return position(event) > self.last_position

    def apply(self, event: JSON) -> None:
        """Take one event into account; events at or before the last position are ignored."""
        if not self.is_new(event):
            return
        self.last_position = position(event)
        kind = str(event.get("type", ""))
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data)

    def _submitted(self, data: JSON) -> None:
        self.title = str(data.get("title", ""))
        self.max_attempts = _int(data.get("max_attempts"))
        self.budget_usd = _float(data.get("budget_usd"))

    def _admitted(self, data: JSON) -> None:
        self.status = Status.RUNNING

    def _retried(self, data: JSON) -> None:
        # Queued again; the phases from the retry's step on run again, the others are reused.
        self.status = Status.QUEUED
        self.attempt = _int(data.get("attempt")) or self.attempt + 1
        self.max_attempts = _int(data.get("max_attempts")) or self.max_attempts
        self.finished_reason = None
        start = _step(data | {"step": data.get("from_step")})
        if start is None:
            return
        again = {STEP_PHASE[step] for step in PIPELINE[PIPELINE.index(start) :]}
        for phase in again:
            self.phases[phase].state = PhaseState.PENDING
            self.phases[phase].note = ""

    def _attempt_started(self, data: JSON) -> None:
        self.attempt = _int(data.get("attempt")) or self.attempt + 1
        # The phases from where a new attempt starts run again with the feedback (planning is
        # done once).
        again = {STEP_PHASE[step] for step in PIPELINE[PIPELINE.index(ATTEMPT_START) :]}
        for phase in again:
            self.phases[phase].state = PhaseState.PENDING

    def _step_started(self, data: JSON) -> None:
        self.status = Status.RUNNING
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is None:
            return
        progress.state = PhaseState.RUNNING
        progress.attempt = _int(data.get("attempt")) or self.attempt
        progress.note = f"{step or 'step'} started"

    def _step_resumed(self, data: JSON) -> None:
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is None:
            return
        progress.state = PhaseState.RUNNING
        progress.attempt = _int(data.get("attempt")) or self.attempt
        progress.note = _clip(f"{step} resumed: {data.get('reason', '')}")

    def _step_finished(self, data: JSON) -> None:
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is None:
            return
        outcome = str(data.get("outcome", ""))
        progress.attempt = _int(data.get("attempt")) or progress.attempt
        if step is not None and REJECTING_OUTCOMES.get(step) == outcome:
            progress.state = PhaseState.FAILED
        elif step is not None and LAST_STEP[progress.phase] is step:
            progress.state = PhaseState.DONE
        summary = str(data.get("summary", "")).strip()
        progress.note = _clip(f"{step} {outcome}" + (f": {summary}" if summary else ""))

    def _step_failed(self, data: JSON) -> None:
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is None:
            return
        progress.state = PhaseState.FAILED
        progress.note = _clip(f"{step} failed: {data.get('reason', '')}")

    def _call_started(self, data: JSON) -> None:
        self.open_calls.add(str(data.get("key", "")))
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is not None:
            progress.note = _clip(f"{step} {_call_name(data)}: waiting for {route_of(data)}")

    def _call_finished(self, data: JSON) -> None:
        self.open_calls.discard(str(data.get("key", "")))
        self.calls += 1
        self.cost_usd += _float(data.get("cost_usd")) or 0.0
        step = _step(data)
        progress = self._phase_of(data, step)
        if progress is not None:
            progress.note = _clip(f"{step} {_call_name(data)}: {call_result(data)}")

    def _completed(self, data: JSON) -> None:
        self.status = Status.COMPLETED
        self.attempt = _int(data.get("attempts")) or self.attempt

    def _failed(self, data: JSON) -> None:
        self.status = Status.FAILED
        self.finished_reason = str(data.get("reason", "")) or None
        self._end_running(PhaseState.FAILED)

    def _cancelled(self, data: JSON) -> None:
        self.status = Status.CANCELLED
        self.finished_reason = str(data.get("reason", "")) or None
        self._end_running(PhaseState.STOPPED)

    def _end_running(self, state: PhaseState) -> None:
        for progress in self.phases.values():
            if progress.state is PhaseState.RUNNING:
                progress.state = state

    def _phase_of(self, data: JSON, step: Step | None) -> PhaseProgress | None:
        if step is not None:
            return self.phases[STEP_PHASE[step]]
        try:
            return self.phases[Phase(str(data.get("phase")))]
        except ValueError:
            return None


_HANDLERS = {
    "JobSubmitted": JobProgress._submitted,
    "JobAdmitted": JobProgress._admitted,
    "JobRetried": JobProgress._retried,
    "AttemptStarted": JobProgress._attempt_started,
    "StepStarted": JobProgress._step_started,
    "StepResumed": JobProgress._step_resumed,
    "StepFinished": JobProgress._step_finished,
    "StepFailed": JobProgress._step_failed,
    "ModelCallStarted": JobProgress._call_started,
    "ModelCallFinished": JobProgress._call_finished,
    "JobCompleted": JobProgress._completed,
    "JobFailed": JobProgress._failed,
    "JobCancelled": JobProgress._cancelled,
}


def position(event: JSON) -> int:
    return _int(event.get("position")) or 0


def describe(event: JSON) -> str:
    """One line saying what an event means, for the live view and the history."""
    kind = str(event.get("type", "?"))
    raw = event.get("data")
    data: JSON = raw if isinstance(raw, dict) else {}
    step = data.get("step")
    phase = data.get("phase") or _phase_name(step)
    attempt = data.get("attempt")
    match kind:
        case "JobSubmitted":
            return _clip(
                f"submitted: {data.get('title', '')} (up to {data.get('max_attempts', '?')} "
                f"attempts, budget ${data.get('budget_usd', '?')})"
            )
        case "JobAdmitted":
            return f"admitted: its turn in the queue came ({phase}: {step} due, attempt {attempt})"
        case "JobRetried":
            reason = str(data.get("reason", "")).strip()
            return _clip(
                f"retried by {data.get('by', '?')} from {data.get('from_step', '?')} "
                f"(attempt {attempt}, priority {data.get('priority', '?')}): back in the queue"
                + (f": {reason}" if reason else "")
            )
        case "AttemptStarted":
            return _clip(f"attempt {attempt} started: {data.get('reason', '')}")
        case "StepStarted":
            return f"{phase}: {step} started (attempt {attempt})"
        case "StepResumed":
            return _clip(f"{phase}: {step} resumed (attempt {attempt}): {data.get('reason', '')}")
        case "StepFinished":
            summary = str(data.get("summary", "")).strip()
            tail = f": {summary}" if summary else ""
            return _clip(f"{phase}: {step} {data.get('outcome', '')} (attempt {attempt}){tail}")
        case "StepFailed":
            return _clip(f"{phase}: {step} failed (attempt {attempt}): {data.get('reason', '')}")
        case "ModelCallStarted":
            note = str(data.get("note", "")).strip()
            return _clip(
                f"{phase}: {step} {_call_name(data)} on {route_of(data)} started "
                f"(attempt {attempt}, up to {usd(_float(data.get('reserved_usd')) or 0.0)})"
                + (f": {note}" if note else "")
            )
        case "ModelCallFinished":
            return _clip(
                f"{phase}: {step} {_call_name(data)} on {route_of(data)}: {call_result(data)}"
            )
        case "JobCompleted":
            return f"job completed after {data.get('attempts', '?')} attempt(s)"
        case "JobFailed":
            return _clip(f"job failed: {data.get('reason', '')}")
        case "JobCancelled":
            return _clip(f"job cancelled by {data.get('by', '?')}: {data.get('reason', '')}")
        case _:
            return kind


def route_of(data: JSON) -> str:
    """A model call's provider:model, labelled when it is the built-in scripted model."""
    route = f"{data.get('provider', '?')}:{data.get('model', '?')}"
    return f"{route} {SCRIPTED_LABEL}" if is_scripted(route) else route


def call_result(data: JSON) -> str:
    """What a finished model call came to, in a few words: its outcome, tokens, cost and time,
    then its error (last: a long one is what a clipped line loses)."""
    outcome = str(data.get("outcome", "?"))
    error = str(data.get("error", "")).strip()
    tokens = (
        f"{tokens_text(data.get('input_tokens'))} in / "
        f"{tokens_text(data.get('output_tokens'))} out tokens"
    )
    return (
        f"{outcome}, {tokens}, "
        f"{cost_text(_float(data.get('cost_usd')) or 0.0, data.get('cost_basis'))}, "
        f"{latency(data.get('latency_ms'))}" + (f": {error}" if error and outcome != "ok" else "")
    )


def _call_name(data: JSON) -> str:
    return f"call {data.get('call', '?')} try {data.get('try_number', '?')}"


def outcome_is_good(outcome: str) -> bool:
    """Whether a step's outcome moved the job on (for colouring)."""
    return outcome in (Outcome.OK, Outcome.PASSED, Outcome.APPROVED, Outcome.UP)


def _phase_name(step: object) -> str:
    try:
        return STEP_PHASE[Step(str(step))].value
    except ValueError:
        return "?"


def _step(data: JSON) -> Step | None:
    try:
        return Step(str(data.get("step")))
    except ValueError:
        return None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= NOTE_MAX else text[: NOTE_MAX - 1] + "…"
