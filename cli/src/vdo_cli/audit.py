"""`vdo audit JOB`: the complete history of one job, told from the event log itself (the
kernel's `vdo_kernel.audit` gathers it): laid out in tables on a terminal, as plain lines (the
text `GET /api/jobs/{id}/audit` answers) for files, pipes and tickets."""

from __future__ import annotations

from uuid import UUID

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vdo_cli.client import ClientError, redact_url
from vdo_kernel.audit import (
    JobAudit,
    artifacts,
    audit,
    describe,
    facts,
    plain_lines,
    took,
    when,
)
from vdo_kernel.figures import SCRIPTED_LABEL
from vdo_kernel.store import JobStore


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
        if run.scripted:
            result += f" {SCRIPTED_LABEL}"
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

    parts: list[RenderableType] = [head, steps]
    if job.calls:
        calls = Table(
            title="model calls", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
        )
        for column in ("step", "attempt", "call", "started", "finished"):
            calls.add_column(column, no_wrap=True)
        calls.add_column("try", overflow="fold", ratio=1)
        calls.add_column("result", overflow="fold", ratio=1)
        calls.add_column("tokens, cost, time", overflow="fold")
        for call in job.calls:
            calls.add_row(
                escape(call.step),
                str(call.attempt),
                str(call.call),
                when(call.started),
                when(call.finished),
                escape(call.headline()),
                Text(call.result, style="" if call.outcome == "ok" else "red"),
                escape(call.figures()),
            )
        parts.append(calls)
    parts.append(history)
    found = artifacts(job)
    if found:
        blobs = Table(title="artifacts", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("step", "name", "sha256"):
            blobs.add_column(column, no_wrap=True)
        for row in found:
            blobs.add_row(*(escape(value) for value in row))
        parts.append(blobs)
    return Group(*parts)
