"""How the CLI shows jobs, steps, phases and events in a terminal (rich renderables)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vdo_cli.progress import JobProgress, PhaseState, describe, outcome_is_good
from vdo_kernel.domain import Phase, Status
from vdo_kernel.figures import SCRIPTED_LABEL, cost_text, is_scripted, latency, tokens_text, usd

JSON = dict[str, Any]

# Output that goes to a file or a pipe is read by tools, not people: lay tables out at their
# natural width instead of cutting ids and titles to 80 columns.
PIPE_WIDTH = 240

STATUS_STYLE = {
    Status.QUEUED: "cyan",
    Status.RUNNING: "yellow",
    Status.COMPLETED: "green",
    Status.FAILED: "red",
    Status.CANCELLED: "magenta",
}

PHASE_MARK = {
    PhaseState.PENDING: ("·", "dim"),
    PhaseState.RUNNING: ("▶", "yellow"),
    PhaseState.DONE: ("✓", "green"),
    PhaseState.FAILED: ("✗", "red"),
    PhaseState.STOPPED: ("■", "magenta"),
}


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


def status_text(status: object) -> Text:
    value = str(status or "?")
    try:
        style = STATUS_STYLE[Status(value)]
    except ValueError:
        style = ""
    if value == Status.COMPLETED:
        value = f"{value} (ready for review)"
    return Text(value, style=style)


def jobs_table(items: list[JSON], total: int, now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=60)
    table.add_column("status", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("attempt", no_wrap=True, justify="right")
    table.add_column("cost", no_wrap=True, justify="right")
    table.add_column("age", no_wrap=True, justify="right")
    for job in items:
        table.add_row(
            escape(str(job.get("id", "?"))),
            escape(str(job.get("title", ""))),
            _status_and_place(job),
            escape(str(job.get("phase") or "-")),
            _attempts(job),
            usd(_number(job.get("cost_usd"))),
            age(job.get("created_at"), now),
        )
    table.caption = f"{len(items)} of {total} job(s)"
    return table


def _status_and_place(job: JSON) -> Text:
    """The status, and for a queued job its place in the queue (#1 runs next)."""
    text = status_text(job.get("status"))
    place = job.get("queue_position")
    if isinstance(place, int):
        text.append(f" #{place}")
    return text


def job_detail(job: JSON, calls: list[JSON] | None = None) -> RenderableType:
    """A job's facts, its steps and (when given) its model calls."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("id", escape(str(job.get("id", "?"))))
    if job.get("title"):
        facts.add_row("title", escape(str(job["title"])))
    facts.add_row("status", status_text(job.get("status")))
    place, priority = job.get("queue_position"), job.get("priority")
    if isinstance(place, int):
        facts.add_row("queue", f"#{place} in the queue (priority {priority})")
    elif isinstance(priority, int):
        facts.add_row("priority", str(priority))
    if job.get("description"):
        facts.add_row("description", escape(str(job["description"])))
    phase = str(job.get("phase") or "-")
    if job.get("step"):
        phase = f"{phase} ({job['step']})"
    facts.add_row("phase", escape(phase))
    facts.add_row("attempt", _attempts(job))
    cost = _cost(job)
    if cost:
        facts.add_row("cost", escape(cost))
    routes = job.get("routes")
    if isinstance(routes, dict):
        facts.add_row("models", escape(routes_text(routes)))
    for key in ("created_at", "updated_at", "finished_at"):
        if job.get(key):
            facts.add_row(key.removesuffix("_at"), _when(job[key]))
    if job.get("finished_reason"):
        facts.add_row("reason", escape(str(job["finished_reason"])))
    steps = job.get("steps")
    parts: list[RenderableType] = [facts]
    if isinstance(steps, list) and steps:
        parts.append(steps_table([s for s in steps if isinstance(s, dict)]))
    if calls:
        parts.append(calls_table(calls))
    return Group(*parts)


def routes_text(routes: JSON) -> str:
    """The routes chosen at submission, one phase after the other."""
    chosen = [
        f"{phase}: {', then '.join(str(r) for r in chain)}"
        for phase, chain in routes.items()
        if isinstance(chain, list) and chain
    ]
    return "; ".join(chosen) if chosen else "the deployment's defaults"


def _cost(job: JSON) -> str:
    """What the job has cost, against its budget, with its model calls in figures."""
    cost, budget = _number(job.get("cost_usd")), _number(job.get("budget_usd"))
    if cost is None and budget is None:
        return ""
    text = usd(cost or 0.0) if cost is not None else "-"
    if budget is not None:
        text += f" of {usd(budget)} budget"
    calls = job.get("model_calls")
    if isinstance(calls, dict) and isinstance(calls.get("count"), int):
        count = calls["count"]
        notes = [f"{count} model call(s)"]
        for key in ("failed", "open"):
            if calls.get(key):
                notes.append(f"{calls[key]} {key}")
        text += f" ({', '.join(notes)})"
    return text


def step_model(step: JSON) -> str:
    """The model that made a step, from its details; the built-in scripted model is labelled
    as such."""
    details = step.get("details")
    model = details.get("model") if isinstance(details, dict) else None
    if not model:
        return ""
    return SCRIPTED_LABEL if is_scripted(model) else str(model)


def counts_of_tests(step: JSON) -> str:
    """A run of the tests in figures, when its details give them."""
    details = step.get("details")
    if not isinstance(details, dict) or not isinstance(details.get("total"), int):
        return ""
    counts = ", ".join(
        f"{details[key]} {key}"
        for key in ("passed", "failed", "errors")
        if isinstance(details.get(key), int)
    )
    return f"{counts} of {details['total']}" if counts else f"{details['total']} test(s)"


def calls_table(calls: list[JSON]) -> Table:
    """A job's model calls, one row per try (a retry or a fallback is another try)."""
    table = Table(title="model calls", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("phase/step", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("call", justify="right", no_wrap=True)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("in", justify="right", no_wrap=True)
    table.add_column("out", justify="right", no_wrap=True)
    table.add_column("cached", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("error / note", overflow="fold", min_width=20, ratio=1)
    for call in calls:
        route = str(call.get("route") or f"{call.get('provider')}:{call.get('model')}")
        if is_scripted(route):
            route = f"{route} {SCRIPTED_LABEL}"
        outcome = call.get("outcome")
        if outcome is None:
            shown = Text("running" if call.get("started_at") else "-", style="yellow")
        else:
            shown = Text(str(outcome), style="green" if outcome == "ok" else "red")
        table.add_row(
            escape(f"{call.get('phase') or '?'}/{call.get('step', '?')}"),
            str(call.get("attempt", "")),
            str(call.get("call", "")),
            str(call.get("try_number", "")),
            escape(route),
            shown,
            tokens_text(call.get("input_tokens")),
            tokens_text(call.get("output_tokens")),
            tokens_text(call.get("cached_tokens")),
            cost_text(_number(call.get("cost_usd")), call.get("cost_basis")),
            latency(call.get("latency_ms")),
            escape(str(call.get("error") or call.get("note") or "")),
        )
    return table


def steps_table(steps: list[JSON]) -> Table:
    table = Table(title="steps", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    # What the step said is what a reader came for: it gets the room the others leave.
    table.add_column("summary", overflow="fold", min_width=30, ratio=1)
    for step in steps:
        said = str(step.get("summary") or step.get("failed_reason") or "")
        counts = counts_of_tests(step)
        if counts:
            said = f"[{counts}] {said}".strip()
        table.add_row(
            str(step.get("attempt", "")),
            escape(str(step.get("phase") or "")),
            escape(str(step.get("step", "?"))),
            _outcome(step),
            _took(step.get("started_at"), step.get("finished_at")),
            escape(step_model(step)),
            escape(said),
        )
    return table


def history_table(events: Iterable[JSON]) -> Table:
    table = Table(title="history", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("what", overflow="fold")
    for event in events:
        table.add_row(
            str(event.get("position", "?")),
            _when(event.get("timestamp")),
            escape(str(event.get("type", "?"))),
            escape(describe(event)),
        )
    return table


def phases_table(progress: JobProgress, *, expand: bool = False) -> Table:
    # A live view expands to the terminal's width so that it does not jump as notes grow.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=expand)
    # The note gives way on a narrow terminal; the phase and its state never do.
    table.add_column("phase", no_wrap=True, min_width=max(len(p) for p in Phase))
    table.add_column("state", no_wrap=True, min_width=2 + max(len(s) for s in PhaseState))
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("last", overflow="ellipsis", no_wrap=True)
    for phase in progress.phases.values():
        mark, style = PHASE_MARK[phase.state]
        table.add_row(
            phase.phase.value,
            Text(f"{mark} {phase.state.value}", style=style),
            str(phase.attempt) if phase.attempt is not None else "-",
            escape(phase.note),
        )
    return table


def event_line(event: JSON) -> str:
    """One plain line per event, for output that is not a terminal."""
    when = _when(event.get("timestamp"), "%H:%M:%S")
    return f"{event.get('position', '?'):>6}  {when}  {describe(event)}"


def age(created_at: object, now: datetime) -> str:
    moment = _parse(created_at)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _attempts(job: JSON) -> str:
    attempt = job.get("attempt")
    most = job.get("max_attempts")
    if attempt is None:
        return "-"
    return f"{attempt}/{most}" if most is not None else str(attempt)


def _outcome(step: JSON) -> Text:
    if step.get("failed_reason"):
        return Text("failed", style="red")
    outcome = step.get("outcome")
    if outcome is None:
        # Started and not finished: running now, or interrupted and due again.
        return Text("running" if step.get("started_at") else "-", style="yellow")
    return Text(str(outcome), style="green" if outcome_is_good(str(outcome)) else "red")


def _took(started: object, finished: object) -> str:
    start, end = _parse(started), _parse(finished)
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds():.1f}s"


def _when(value: object, layout: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored time in the local time zone, to the second."""
    moment = _parse(value)
    if moment is None:
        return str(value or "-")
    return moment.astimezone().strftime(layout)


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A time without a zone is one the server wrote in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
