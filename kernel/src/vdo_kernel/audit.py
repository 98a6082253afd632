"""A job's audit: its complete history told from the event log itself (not the read models):
who submitted it and with which models, every step of every attempt with its worker, times,
outcome and summary, resumes, retries with their feedback, every model call with its route,
tokens and cost (retries and fallbacks named as such), the end, and the artifacts' blob digests.

Pure: it turns a job's stored events into a `JobAudit`, and that into plain lines of text or a
JSON form. `vdo audit` lays it out for a terminal; `GET /api/jobs/{id}/audit` serves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from vdo_kernel.domain import STEP_ROLE
from vdo_kernel.figures import (
    SCRIPTED_LABEL,
    cost_text,
    is_scripted,
    latency,
    tokens_text,
    usd,
)
from vdo_kernel.store import StoredJobEvent

JSON = dict[str, Any]


@dataclass
class StepRun:
    """One step of one attempt, as its events tell it."""

    step: str
    attempt: int
    phase: str = ""
    workers: list[str] = field(default_factory=list)
    started: datetime | None = None
    finished: datetime | None = None
    outcome: str | None = None
    summary: str = ""
    failed_reason: str | None = None
    resumed: int = 0
    artifacts: dict[str, str] = field(default_factory=dict)
    details: JSON = field(default_factory=dict)

    @property
    def result(self) -> str:
        if self.failed_reason is not None:
            return "could not be done"
        return self.outcome or "no result"

    @property
    def scripted(self) -> bool:
        """Whether the built-in scripted model made this step (its details say so)."""
        return is_scripted(self.details.get("model"))


@dataclass
class CallTry:
    """One try of one model call, as its events tell it."""

    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    provider: str
    model: str
    reserved_usd: float = 0.0
    note: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    outcome: str | None = None
    error: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    cost_basis: str = "reported"
    latency_ms: float = 0.0
    # The try of the same call before this one, if any (this one is a retry or a fallback).
    previous: CallTry | None = None

    @property
    def route(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def role(self) -> str:
        return STEP_ROLE.get(self.step, self.step)

    @property
    def result(self) -> str:
        if self.outcome is None:
            return "no result recorded (running, or interrupted)"
        if self.outcome != "ok" and self.error:
            return f"{self.outcome}: {self.error}"
        return self.outcome

    def headline(self) -> str:
        """Which try this was and why: "planner try 2 on openai:gpt-4.1 after
        anthropic:claude-sonnet-4-5 failed: 429 rate limited"."""
        route = self.route + (f" {SCRIPTED_LABEL}" if is_scripted(self.route) else "")
        text = f"{self.role} try {self.try_number} on {route}"
        before = self.previous
        if before is None:
            return text
        reason = f": {before.error}" if before.error else ""
        match before.outcome:
            case None:
                return f"{text} after {before.route} gave no result (interrupted)"
            case "ok":
                return f"{text} after {before.route} answered"
            case "refused":
                return f"{text} after {before.route} refused{reason}"
            case "interrupted":
                return f"{text} after {before.route} was interrupted{reason}"
            case _:
                return f"{text} after {before.route} failed{reason}"

    def figures(self) -> str:
        if self.outcome is None:
            return f"held {usd(self.reserved_usd)} of the budget"
        return (
            f"{tokens_text(self.input_tokens)} in / {tokens_text(self.output_tokens)} out / "
            f"{tokens_text(self.cached_tokens)} cached tokens, "
            f"{cost_text(self.cost_usd, self.cost_basis)}, "
            f"{latency(self.latency_ms)}"
        )


@dataclass
class JobAudit:
    job_id: UUID
    events: list[StoredJobEvent]
    submitted: StoredJobEvent
    steps: list[StepRun]
    ending: str
    calls: list[CallTry] = field(default_factory=list)

    @property
    def data(self) -> JSON:
        return self.submitted.data

    @property
    def cost_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)

    def to_json(self) -> JSON:
        """The audit as JSON values: the facts, the steps, the model calls, every event (with
        its data and the sentence that tells it) and the artifacts."""
        first, last = self.events[0], self.events[-1]
        return {
            "job_id": str(self.job_id),
            "title": str(self.data.get("title", "")),
            "description": str(self.data.get("description", "")),
            "submitted_by": self.data.get("submitted_by"),
            "submitted_at": first.timestamp.isoformat(),
            "correlation_id": first.correlation_id,
            "max_attempts": self.data.get("max_attempts"),
            "budget_usd": self.data.get("budget_usd"),
            "priority": self.data.get("priority"),
            "models": routes_text(self.data.get("routes")),
            "status": self.ending,
            "cost_usd": self.cost_usd,
            "spending": spending(self),
            "first_position": first.position,
            "last_position": last.position,
            "steps": [_step_json(run) for run in self.steps],
            "model_calls": [_call_json(call) for call in self.calls],
            "history": [
                {
                    "position": event.position,
                    "timestamp": event.timestamp.isoformat(),
                    "type": event.type,
                    "text": describe(event),
                    "data": event.data,
                }
                for event in self.events
            ],
            "artifacts": [
                {"step": run.step, "attempt": run.attempt, "name": name, "sha256": digest}
                for run in self.steps
                for name, digest in run.artifacts.items()
            ],
        }


def _moment(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _step_json(run: StepRun) -> JSON:
    return {
        "step": run.step,
        "attempt": run.attempt,
        "phase": run.phase,
        "workers": list(run.workers),
        "started": _moment(run.started),
        "finished": _moment(run.finished),
        "result": run.result,
        "summary": run.summary,
        "failed_reason": run.failed_reason,
        "resumed": run.resumed,
        "scripted": run.scripted,
        "artifacts": dict(run.artifacts),
        "details": dict(run.details),
    }


def _call_json(call: CallTry) -> JSON:
    return {
        "key": call.key,
        "step": call.step,
        "attempt": call.attempt,
        "call": call.call,
        "try_number": call.try_number,
        "route": call.route,
        "headline": call.headline(),
        "outcome": call.outcome,
        "result": call.result,
        "reserved_usd": call.reserved_usd,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cached_tokens": call.cached_tokens,
        "cache_write_tokens": call.cache_write_tokens,
        "cost_usd": call.cost_usd,
        "cost_basis": call.cost_basis,
        "latency_ms": call.latency_ms,
        "started": _moment(call.started),
        "finished": _moment(call.finished),
        "note": call.note,
    }


def audit(events: list[StoredJobEvent]) -> JobAudit:
    """What a job's events say, gathered by step (pure)."""
    steps: dict[tuple[str, int], StepRun] = {}
    calls: dict[str, CallTry] = {}
    ending = "queued"
    for event in events:
        data = event.data
        if event.type in ("ModelCallStarted", "ModelCallFinished"):
            _call_event(calls, event)
        elif "step" in data and "attempt" in data:
            run = steps.setdefault(
                (str(data["step"]), int(data["attempt"])),
                StepRun(str(data["step"]), int(data["attempt"])),
            )
            run.phase = str(data.get("phase") or run.phase)
            if event.type == "StepStarted":
                run.started = run.started or event.timestamp
                run.workers.append(str(data.get("worker", "?")))
                ending = "running"
            elif event.type == "StepResumed":
                run.resumed += 1
                run.workers.append(str(data.get("worker", "?")))
            elif event.type == "StepFinished":
                run.finished = event.timestamp
                run.outcome = str(data.get("outcome"))
                run.summary = str(data.get("summary", ""))
                run.artifacts = {str(k): str(v) for k, v in dict(data.get("artifacts", {})).items()}
                run.details = dict(data.get("details", {}))
            elif event.type == "StepFailed":
                run.finished = event.timestamp
                run.failed_reason = str(data.get("reason", ""))
        elif event.type == "JobCompleted":
            ending = f"completed after {data.get('attempts')} attempt(s)"
        elif event.type == "JobFailed":
            ending = f"failed: {data.get('reason')}"
        elif event.type == "JobCancelled":
            ending = f"cancelled by {data.get('by')}: {data.get('reason')}"
    return JobAudit(
        job_id=events[0].job_id,
        events=events,
        submitted=events[0],
        steps=list(steps.values()),
        ending=ending,
        calls=list(calls.values()),
    )


def _call_event(calls: dict[str, CallTry], event: StoredJobEvent) -> None:
    data = event.data
    key = str(data.get("key", ""))
    call = calls.get(key)
    if call is None:
        call = calls[key] = CallTry(
            key=key,
            step=str(data.get("step", "?")),
            attempt=_int(data.get("attempt")),
            call=_int(data.get("call")),
            try_number=_int(data.get("try_number")),
            provider=str(data.get("provider", "?")),
            model=str(data.get("model", "?")),
        )
        # The try before it: the same call's latest earlier try.
        earlier = [
            c
            for c in calls.values()
            if (c.step, c.attempt, c.call) == (call.step, call.attempt, call.call)
            and c.try_number < call.try_number
        ]
        call.previous = max(earlier, key=lambda c: c.try_number, default=None)
    if event.type == "ModelCallStarted":
        call.started = event.timestamp
        call.reserved_usd = _float(data.get("reserved_usd"))
        call.note = str(data.get("note", ""))
    else:
        call.finished = event.timestamp
        call.outcome = str(data.get("outcome", "?"))
        call.error = str(data.get("error", ""))
        call.input_tokens = _int(data.get("input_tokens"))
        call.output_tokens = _int(data.get("output_tokens"))
        call.cached_tokens = _int(data.get("cached_tokens"))
        call.cache_write_tokens = _int(data.get("cache_write_tokens"))
        call.cost_usd = _float(data.get("cost_usd"))
        call.cost_basis = str(data.get("cost_basis", "reported"))
        call.latency_ms = _float(data.get("latency_ms"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def describe(event: StoredJobEvent) -> str:
    """One event in a sentence."""
    data = event.data
    step = f"{data.get('step')} (attempt {data.get('attempt')})"
    match event.type:
        case "JobSubmitted":
            return (
                f"submitted by {data.get('submitted_by')}: {data.get('title')!r} "
                f"(at most {data.get('max_attempts')} attempts, budget ${data.get('budget_usd')}, "
                f"models: {routes_text(data.get('routes'))}, priority {data.get('priority')})"
            )
        case "JobAdmitted":
            return f"admitted by {data.get('by')}: {step} is due"
        case "JobRetried":
            return (
                f"retried by {data.get('by')} from {data.get('from_step')}: attempt "
                f"{data.get('attempt')} (reusing attempt {data.get('reused_attempt')}'s earlier "
                f"steps, at most {data.get('max_attempts')} attempts, priority "
                f"{data.get('priority')}); feedback: {data.get('feedback')}"
            )
        case "ModelCallStarted":
            note = f": {data.get('note')}" if data.get("note") else ""
            return (
                f"{step} call {data.get('call')} try {data.get('try_number')} on "
                f"{data.get('provider')}:{data.get('model')} started, holding "
                f"{usd(_float(data.get('reserved_usd')))} of the budget{note}"
            )
        case "ModelCallFinished":
            outcome = str(data.get("outcome"))
            error = f": {data.get('error')}" if data.get("error") and outcome != "ok" else ""
            return (
                f"{step} call {data.get('call')} try {data.get('try_number')} on "
                f"{data.get('provider')}:{data.get('model')} {outcome}{error}; "
                f"{tokens_text(data.get('input_tokens'))} in / "
                f"{tokens_text(data.get('output_tokens'))} out / "
                f"{tokens_text(data.get('cached_tokens'))} cached tokens, "
                f"{cost_text(_float(data.get('cost_usd')), data.get('cost_basis'))}, "
                f"{latency(data.get('latency_ms'))}"
                + (f", reply sha256:{data.get('reply')}" if data.get("reply") else "")
            )
        case "StepStarted":
            return f"{step} started by {data.get('worker')} [{data.get('phase')}]"
        case "StepResumed":
            return f"{step} resumed by {data.get('worker')}: {data.get('reason')}"
        case "StepFinished":
            return f"{step} finished: {data.get('outcome')}: {data.get('summary')}"
        case "StepFailed":
            return f"{step} could not be done: {data.get('reason')}"
        case "AttemptStarted":
            return (
                f"attempt {data.get('attempt')} started ({data.get('reason')}); "
                f"feedback: {data.get('feedback')}"
            )
        case "JobCompleted":
            return f"job completed after {data.get('attempts')} attempt(s)"
        case "JobFailed":
            return f"job failed: {data.get('reason')}"
        case "JobCancelled":
            return f"job cancelled by {data.get('by')}: {data.get('reason')}"
    return json.dumps(data, ensure_ascii=False, default=str)


def routes_text(routes: object) -> str:
    """The routes chosen at submission (a version 1 submission has none)."""
    if not isinstance(routes, dict) or not routes:
        return "the deployment's defaults"
    return "; ".join(
        f"{phase} {' then '.join(str(r) for r in chain)}"
        for phase, chain in routes.items()
        if isinstance(chain, list)
    )


def spending(job: JobAudit) -> str:
    """What the job's model calls cost, against its budget."""
    failed = sum(1 for c in job.calls if c.outcome is not None and c.outcome != "ok")
    running = sum(1 for c in job.calls if c.outcome is None)
    notes = [f"{len(job.calls)} model call(s)"]
    if failed:
        notes.append(f"{failed} failed")
    if running:
        notes.append(f"{running} without a result")
    return f"{usd(job.cost_usd)} of ${job.data.get('budget_usd')} ({', '.join(notes)})"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC" if moment else "-"


def took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.1f} s"


def facts(job: JobAudit) -> list[tuple[str, str]]:
    first, last = job.events[0], job.events[-1]
    return [
        ("job", str(job.job_id)),
        ("title", str(job.data.get("title", ""))),
        ("submitted", f"by {job.data.get('submitted_by')} at {when(first.timestamp)}"),
        ("correlation", first.correlation_id),
        ("limits", f"{job.data.get('max_attempts')} attempts, ${job.data.get('budget_usd')}"),
        ("models", routes_text(job.data.get("routes"))),
        ("cost", spending(job)),
        ("status", job.ending),
        ("took", f"{took(first.timestamp, last.timestamp)} (submission to last event)"),
        ("events", f"{len(job.events)}, positions {first.position} to {last.position}"),
        ("description", str(job.data.get("description", ""))),
    ]


def artifacts(job: JobAudit) -> list[tuple[str, str, str]]:
    return [
        (f"{run.step} (attempt {run.attempt})", name, digest)
        for run in job.steps
        for name, digest in run.artifacts.items()
    ]


# ---- plain text and JSON -----------------------------------------------------------------


def plain_lines(job: JobAudit) -> list[str]:
    width = max(len(name) for name, _ in facts(job))
    lines = [f"{name:<{width}}  {value}" for name, value in facts(job)]
    lines += ["", "steps:"]
    for run in job.steps:
        resumed = f", resumed {run.resumed}x" if run.resumed else ""
        if run.scripted:
            resumed += f" {SCRIPTED_LABEL}"
        lines.append(
            f"  attempt {run.attempt}  {run.phase}/{run.step}  {run.result}{resumed}  "
            f"by {', '.join(run.workers) or '-'}  "
            f"{when(run.started)} -> {when(run.finished)} ({took(run.started, run.finished)})"
        )
        said = run.failed_reason if run.failed_reason is not None else run.summary
        if said:
            lines.append("    " + _continued(said, "    "))
        if run.details:
            lines.append(f"    details: {json.dumps(run.details, ensure_ascii=False)}")
    if job.calls:
        lines += ["", f"model calls: {spending(job)}"]
        for call in job.calls:
            lines.append(
                _continued(
                    f"  {call.step} (attempt {call.attempt}) call {call.call}: "
                    f"{call.headline()} -> {call.result}; {call.figures()}",
                    "    ",
                )
            )
            if call.note:
                lines.append("    " + _continued(f"note: {call.note}", "    "))
    lines += ["", "history:"]
    start = job.events[0].timestamp
    for event in job.events:
        lines.append(
            _continued(
                f"  #{event.position:<6} {when(event.timestamp)}  +{took(start, event.timestamp)}"
                f"  {event.type}: {describe(event)}",
                "          ",
            )
        )
    found = artifacts(job)
    if found:
        lines += ["", "artifacts:"]
        lines += [f"  {step}  {name}  sha256:{digest}" for step, name, digest in found]
    return lines


def plain_text(job: JobAudit) -> str:
    """The plain lines as one text, ending with a new line."""
    return "\n".join(plain_lines(job)) + "\n"


def _continued(text: str, indent: str) -> str:
    # A summary can run over several lines; its continuation stays under its entry.
    return f"\n{indent}".join(text.splitlines()) or text
