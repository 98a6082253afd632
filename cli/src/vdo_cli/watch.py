"""Following a job live: poll its events until it ends, shown as a live phase table on a
terminal and as one plain line per event anywhere else."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vdo_cli.client import EVENTS_PATH, EventQuery, Gateway, GatewayUnreachable
from vdo_cli.progress import JobProgress, position
from vdo_cli.views import event_line, phases_table, status_text
from vdo_kernel.figures import usd

JSON = dict[str, Any]


@dataclass(frozen=True)
class WatchOptions:
    interval_seconds: float = 0.3
    # The gateway may restart under a long watch; keep asking this long before giving up.
    outage_seconds: float = 15.0
    recent_events: int = 8


class Display(Protocol):
    def __enter__(self) -> Display: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def add(self, event: JSON) -> None: ...
    def notice(self, text: str | None) -> None: ...
    def refresh(self) -> None: ...


def watch_job(
    gateway: Gateway, job_id: str, console: Console, options: WatchOptions | None = None
) -> JobProgress:
    """Follow the job until it is completed, failed or cancelled; returns where it ended."""
    options = options or WatchOptions()
    progress = JobProgress(job_id)
    # Without server-side filtering every poll returns the whole history; the position filter
    # below makes that correct, asking for less only makes it cheaper.
    ask_after = gateway.accepts_query(EVENTS_PATH, "after")
    display: Display = (
        LiveDisplay(console, progress, options) if console.is_terminal else LineDisplay(console)
    )
    with display:
        while True:
            query = EventQuery(job_id, after=progress.last_position if ask_after else None)
            events = _fetch(gateway, query, display, options)
            for event in sorted((e for e in events if progress.is_new(e)), key=position):
                progress.apply(event)
                display.add(event)
            display.refresh()
            if progress.finished:
                return progress
            time.sleep(options.interval_seconds)


def _fetch(
    gateway: Gateway, query: EventQuery, display: Display, options: WatchOptions
) -> list[JSON]:
    down_since: float | None = None
    while True:
        try:
            events = gateway.events(query)
        except GatewayUnreachable:
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= options.outage_seconds:
                raise
            display.notice(f"gateway not reachable at {gateway.url}; retrying")
            display.refresh()
            time.sleep(options.interval_seconds)
            continue
        if down_since is not None:
            display.notice(None)
        return events


def cost_line(progress: JobProgress) -> str:
    """The running cost: what the finished model calls cost, against the budget."""
    text = f"cost {usd(progress.cost_usd)}"
    if progress.budget_usd is not None:
        text += f" of {usd(progress.budget_usd)}"
    if progress.calls or progress.open_calls:
        text += f" ({progress.calls} call(s)"
        text += f", {len(progress.open_calls)} running)" if progress.open_calls else ")"
    return text


class LineDisplay:
    """One line per new event: for pipes, files and logs."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._notice: str | None = None

    def __enter__(self) -> LineDisplay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def add(self, event: JSON) -> None:
        self._console.print(event_line(event), markup=False, soft_wrap=True)

    def notice(self, text: str | None) -> None:
        # Said once per outage, not once per retry.
        if text and text != self._notice:
            self._console.print(text, markup=False, soft_wrap=True)
        self._notice = text

    def refresh(self) -> None:
        return None


class LiveDisplay:
    """A table of the phases redrawn in place, with the latest events under it."""

    def __init__(self, console: Console, progress: JobProgress, options: WatchOptions) -> None:
        self._progress = progress
        self._recent: deque[JSON] = deque(maxlen=options.recent_events)
        self._notice: str | None = None
        self._started = time.monotonic()
        # Redrawn by the poll loop, not by a timer thread, so the progress it reads never
        # changes under it.
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.refresh()
        self._live.__exit__(exc_type, exc, tb)

    def add(self, event: JSON) -> None:
        self._recent.append(event)

    def notice(self, text: str | None) -> None:
        self._notice = text

    def refresh(self) -> None:
        self._live.update(self._render(), refresh=True)

    def _render(self) -> RenderableType:
        progress = self._progress
        header = Text.assemble(
            ("job ", "bold"),
            progress.job_id,
            "  ",
            status_text(progress.status),
            f"  attempt {progress.attempt}",
            f"/{progress.max_attempts}" if progress.max_attempts else "",
            f"  {cost_line(progress)}",
            f"  {time.monotonic() - self._started:.0f}s",
        )
        parts: list[RenderableType] = [header]
        if progress.title:
            parts.append(Text(progress.title, style="dim"))
        parts.append(phases_table(progress, expand=True))
        recent = Table.grid(padding=(0, 1))
        recent.add_column(no_wrap=True, overflow="ellipsis")
        for event in self._recent:
            recent.add_row(escape(event_line(event)))
        parts.append(recent)
        if progress.finished_reason:
            parts.append(Text(progress.finished_reason, style="red"))
        if self._notice:
            parts.append(Text(self._notice, style="yellow"))
        return Group(*parts)
