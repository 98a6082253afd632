"""A job's progress through its phases, folded from its events as the gateway returns them.

Pure: no I/O, so the watch display and the tests share it. Events it does not know are kept in
the history but change nothing, so a newer gateway does not break an older CLI.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vdo_kernel.domain import PIPELINE, REJECTING_OUTCOMES, STEP_PHASE, Outcome, Phase, Status, Step

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

    def _attempt_started(self, data: JSON) -> None:
        self.attempt = _int(data.get("attempt")) or self.attempt + 1
        # Planning is done once; every other phase runs again with the feedback.
        for phase, progress in self.phases.items():
            if phase is not Phase.PLANNING:
                progress.state = PhaseState.PENDING

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
    "AttemptStarted": JobProgress._attempt_started,
    "StepStarted": JobProgress._step_started,
    "StepResumed": JobProgress._step_resumed,
    "StepFinished": JobProgress._step_finished,
    "StepFailed": JobProgress._step_failed,
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
        case "JobCompleted":
            return f"job completed after {data.get('attempts', '?')} attempt(s)"
        case "JobFailed":
            return _clip(f"job failed: {data.get('reason', '')}")
        case "JobCancelled":
            return _clip(f"job cancelled by {data.get('by', '?')}: {data.get('reason', '')}")
        case _:
            return kind


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


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= NOTE_MAX else text[: NOTE_MAX - 1] + "…"
