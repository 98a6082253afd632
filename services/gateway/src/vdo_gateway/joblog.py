"""A job's log, read back from its history: one line per event (each step's start, result or
failure with its summary, each model call's try with its outcome, error and cost, the job's
own milestones), and after a run's result the run's output (the ``output`` blob of a
``run_tests`` or ``sandbox_run`` step) line by line, and, when asked, each model reply's text
(the ``reply`` blob of a ``ModelCallFinished``).

The live log (`vdo logs`, the WebSocket) shows the same lines as they happen; this is what is
kept of them, so it can be read at any time and comes out the same every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from vdo_kernel.blobs import BlobNotFoundError, BlobStore
from vdo_kernel.domain import REJECTING_OUTCOMES, STEP_PHASE, Step
from vdo_kernel.store import StoredJobEvent

Stream = Literal["event", "model", "sandbox"]
Level = Literal["info", "warning", "error"]

# The steps whose ``output`` artifact is a run's output.
RUN_STEPS: Final = frozenset({Step.RUN_TESTS.value, Step.SANDBOX_RUN.value})
MODEL_EVENTS: Final = frozenset({"ModelCallStarted", "ModelCallFinished"})


@dataclass(frozen=True)
class LogLine:
    position: int
    # The line's number in a run's output or a reply (None for an event's own line).
    line: int | None
    timestamp: datetime
    phase: str | None
    step: str | None
    attempt: int | None
    stream: Stream
    level: Level
    text: str


@dataclass(frozen=True)
class LogFilter:
    phase: str | None = None
    attempt: int | None = None
    stream: Stream | None = None
    replies: bool = False

    def admits(self, phase: str | None, attempt: int | None) -> bool:
        return (self.phase is None or phase == self.phase) and (
            self.attempt is None or attempt == self.attempt
        )

    def shows(self, stream: Stream) -> bool:
        return self.stream is None or stream == self.stream


def job_log(events: list[StoredJobEvent], blobs: BlobStore, only: LogFilter) -> list[LogLine]:
    """The job's log lines in the history's order, those `only` admits. Blobs are read only
    for the events it admits."""
    log = _Collector(only)
    for event in events:
        data = event.data
        step = data.get("step") if isinstance(data.get("step"), str) else None
        attempt = data.get("attempt") if isinstance(data.get("attempt"), int) else None
        where = _Where(event, _phase(step), step, attempt)
        if not only.admits(where.phase, attempt):
            continue
        text, level = describe(event.type, data)
        log.add(where, "model" if event.type in MODEL_EVENTS else "event", text, level)
        if event.type == "StepFinished" and step in RUN_STEPS and only.shows("sandbox"):
            output = (data.get("artifacts") or {}).get("output")
            for number, (content, content_level) in enumerate(_blob_lines(blobs, output), 1):
                log.add(where, "sandbox", content, content_level, number)
        reply = data.get("reply")
        if event.type == "ModelCallFinished" and reply and only.replies and only.shows("model"):
            for number, (content, content_level) in enumerate(_blob_lines(blobs, reply), 1):
                log.add(where, "model", content, content_level, number)
    return log.lines


@dataclass(frozen=True)
class _Where:
    event: StoredJobEvent
    phase: str | None
    step: str | None
    attempt: int | None


class _Collector:
    def __init__(self, only: LogFilter) -> None:
        self.only = only
        self.lines: list[LogLine] = []

    def add(
        self, where: _Where, stream: Stream, text: str, level: Level, number: int | None = None
    ) -> None:
        if self.only.shows(stream):
            self.lines.append(
                LogLine(
                    position=where.event.position,
                    line=number,
                    timestamp=where.event.timestamp,
                    phase=where.phase,
                    step=where.step,
                    attempt=where.attempt,
                    stream=stream,
                    level=level,
                    text=text,
                )
            )


def describe(kind: str, data: dict[str, Any]) -> tuple[str, Level]:
    """One event as a log line: its text and level."""
    step = str(data.get("step", ""))
    match kind:
        case "JobSubmitted":
            priority = data.get("priority")
            return (
                f"submitted by {data.get('submitted_by')}: {data.get('title')} (at most "
                f"{data.get('max_attempts')} attempts, budget ${_money(data.get('budget_usd'))}"
                + (f", priority {priority}" if priority is not None else "")
                + ")",
                "info",
            )
        case "AttemptStarted":
            return f"attempt {data.get('attempt')} started: {data.get('reason')}", "info"
        case "StepStarted":
            return f"{step} started on {data.get('worker')}", "info"
        case "StepResumed":
            return f"{step} resumed on {data.get('worker')}: {data.get('reason')}", "warning"
        case "StepFinished":
            outcome = str(data.get("outcome"))
            summary = str(data.get("summary") or "")
            level: Level = "warning" if outcome in REJECTING_OUTCOMES.values() else "info"
            return f"{step} {outcome}" + (f": {summary}" if summary else ""), level
        case "StepFailed":
            return f"{step} could not be done: {data.get('reason')}", "error"
        case "ModelCallStarted":
            note = str(data.get("note") or "")
            return (
                f"model call {data.get('call')}, try {data.get('try_number')}: "
                f"{data.get('provider')}:{data.get('model')}, holding up to "
                f"${_money(data.get('reserved_usd'))}" + (f" ({note})" if note else ""),
                "info",
            )
        case "ModelCallFinished":
            outcome = str(data.get("outcome"))
            error = str(data.get("error") or "")
            return (
                f"model call {data.get('call')}, try {data.get('try_number')}: {outcome}, "
                f"{data.get('input_tokens', 0)} tokens in, {data.get('output_tokens', 0)} out, "
                f"${_money(data.get('cost_usd'))}, {_number(data.get('latency_ms'))} ms"
                + (f": {error}" if error else ""),
                "info" if outcome == "ok" else "warning",
            )
        case "JobCompleted":
            return f"completed in {data.get('attempts')} attempt(s)", "info"
        case "JobFailed":
            return f"failed: {data.get('reason')}", "error"
        case "JobCancelled":
            return f"cancelled by {data.get('by')}: {data.get('reason')}", "warning"
        case _:
            # An event this version names no words for (the queue's, say): its type and who.
            by = data.get("by")
            reason = data.get("reason")
            return (
                kind
                + (f" by {by}" if by else "")
                + (f" (step {step}, attempt {data.get('attempt')})" if step else "")
                + (f": {reason}" if reason else ""),
                "info",
            )


def _blob_lines(blobs: BlobStore, digest: object) -> list[tuple[str, Level]]:
    if not isinstance(digest, str) or not digest:
        return []
    try:
        text = blobs.get(digest).decode("utf-8", errors="replace")
    except BlobNotFoundError:
        return [(f"[blob {digest} is not in this deployment's blob store]", "warning")]
    except ValueError as error:
        return [(f"[{error}]", "warning")]
    return [(content, "info") for content in text.splitlines()]


def _phase(step: str | None) -> str | None:
    try:
        return STEP_PHASE[Step(step)].value if step else None
    except ValueError:
        return None


def _money(value: object) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else "?"


def _number(value: object) -> str:
    return f"{float(value):.0f}" if isinstance(value, int | float) else "?"
