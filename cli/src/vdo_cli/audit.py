"""`vdo audit JOB`: the complete history of one job, told from the event log itself (not the
read models): who submitted it, every step of every attempt with its worker, times, outcome and
summary, resumes, retries with their feedback, the end, and the artifacts' blob digests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vdo_cli.client import ClientError, redact_url
from vdo_kernel.store import JobStore, StoredJobEvent

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


@dataclass
class JobAudit:
    job_id: UUID
    events: list[StoredJobEvent]
    submitted: StoredJobEvent
    steps: list[StepRun]
    ending: str

    @property
    def data(self) -> JSON:
        return self.submitted.data


def load(database_url: str, job_id: str) -> JobAudit:
    """The job's events from the store, read into an audit; a clear error when there are none."""
    try:
        job = UUID(job_id.strip())
    except ValueError:
        raise ClientError(f"{job_id!r} is not a job id (a UUID is expected)") from None
    try:
        store = JobStore(database_url, pool_size=1)
        try:
            events = store.job_events(job)
        finally:
            store.close()
    except Exception as exc:
        message = str(exc).replace(database_url, redact_url(database_url))
        raise ClientError(f"reading the event log failed: {message}") from exc
    if not events:
        raise ClientError(f"there is no job {job} in the event log")
    return audit(events)


def audit(events: list[StoredJobEvent]) -> JobAudit:
    """What a job's events say, gathered by step (pure)."""
    steps: dict[tuple[str, int], StepRun] = {}
    ending = "queued"
    for event in events:
        data = event.data
        if "step" in data and "attempt" in data:
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
    )


def describe(event: StoredJobEvent) -> str:
    """One event in a sentence."""
    data = event.data
    step = f"{data.get('step')} (attempt {data.get('attempt')})"
    match event.type:
        case "JobSubmitted":
            return (
                f"submitted by {data.get('submitted_by')}: {data.get('title')!r} "
                f"(at most {data.get('max_attempts')} attempts, budget ${data.get('budget_usd')})"
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


# ---- layouts ---------------------------------------------------------------------------------


def render(job: JobAudit, console: Console) -> None:
    """A rich layout on a terminal; plain lines (for files, pipes, tickets) otherwise."""
    if console.is_terminal:
        console.print(rich_layout(job))
    else:
        for line in plain_lines(job):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def rich_layout(job: JobAudit) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    for name, value in facts(job):
        head.add_row(name, escape(value))

    steps = Table(title="steps", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("attempt", "phase", "step", "worker", "started", "finished", "took"):
        steps.add_column(column, no_wrap=True)
    steps.add_column("result", no_wrap=True)
    steps.add_column("summary", overflow="fold", min_width=24, ratio=1)
    for run in job.steps:
        result = run.result + (f" (resumed {run.resumed}x)" if run.resumed else "")
        steps.add_row(
            str(run.attempt),
            escape(run.phase),
            escape(run.step),
            escape(", ".join(run.workers) or "-"),
            when(run.started),
            when(run.finished),
            took(run.started, run.finished),
            Text(result, style="red" if run.failed_reason is not None else ""),
            escape(run.failed_reason if run.failed_reason is not None else run.summary),
        )

    history = Table(title="history", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    history.add_column("position", justify="right", no_wrap=True)
    history.add_column("time", no_wrap=True)
    history.add_column("+", justify="right", no_wrap=True)
    history.add_column("event", no_wrap=True)
    history.add_column("what", overflow="fold", ratio=1)
    start = job.events[0].timestamp
    for event in job.events:
        history.add_row(
            str(event.position),
            when(event.timestamp),
            took(start, event.timestamp),
            event.type,
            escape(describe(event)),
        )

    parts: list[RenderableType] = [head, steps, history]
    found = artifacts(job)
    if found:
        blobs = Table(title="artifacts", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("step", "name", "sha256"):
            blobs.add_column(column, no_wrap=True)
        for row in found:
            blobs.add_row(*(escape(value) for value in row))
        parts.append(blobs)
    return Group(*parts)


def plain_lines(job: JobAudit) -> list[str]:
    width = max(len(name) for name, _ in facts(job))
    lines = [f"{name:<{width}}  {value}" for name, value in facts(job)]
    lines += ["", "steps:"]
    for run in job.steps:
        resumed = f", resumed {run.resumed}x" if run.resumed else ""
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


def _continued(text: str, indent: str) -> str:
    # A summary can run over several lines; its continuation stays under its entry.
    return f"\n{indent}".join(text.splitlines()) or text
