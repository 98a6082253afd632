"""The `vdo` command: start the stack, submit and follow jobs, list and inspect them, manage
users and tokens and job templates, rebuild the read models, back up, restore, export and
import."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from vdo_cli.accounts import register as register_accounts
from vdo_cli.client import (
    ClientError,
    EventQuery,
    Gateway,
    GatewayConfig,
    GatewayUnreachable,
    JobQuery,
    SubmitJob,
    api_token,
    database_url,
    gateway_address,
    nats_address,
    parse_routes,
    redact_url,
)
from vdo_cli.portability import register as register_portability
from vdo_cli.sandbox_cmd import sandbox_app
from vdo_cli.templates import register as register_templates
from vdo_cli.views import history_table, job_detail, jobs_table, make_console, phases_table
from vdo_cli.watch import cost_line, watch_job

# Commands that need the event store, NATS or the sandbox import what they use when they run
# (`vdo doctor`, `logs`, `audit`, `replay`, `sandbox ...`), so the others start quickly.
from vdo_kernel import logs
from vdo_kernel.domain import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN, Status
from vdo_kernel.settings import Settings, SettingsError

# 1: the job did not complete, or the gateway refused the request. 2 is a usage error (typer).
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="vdo",
    help="Vitso Dev Orchestrator: submit software jobs and follow them through planning, "
    "building, testing, reviewing and sandboxing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(
    help="The read models (job list, details, timelines): rebuild them from the event log.",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")
app.add_typer(sandbox_app, name="sandbox")


@app.callback()
def _quiet_library_logs() -> None:
    """Commands print their own results on stdout; library lines (the projector's, say) go to
    stderr and only when they matter. `vdo up` configures each service's logging itself."""
    logs.configure("vdo", level="WARNING", fmt="console")


Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="VDO_API_URL",
        help="Gateway URL (default: the running stack's, else http://VDO_HOST:VDO_PORT).",
        show_default=False,
    ),
]


@app.command()
def up() -> None:
    """Start the whole stack (NATS, PostgreSQL, gateway, projector, services) until Ctrl-C."""
    settings = _settings()
    # Imported here: the stack pulls in the embedded servers and every service's settings,
    # which the other commands do without.
    from vdo_cli.stack import run_stack

    raise typer.Exit(run_stack(settings))


@app.command()
def submit(
    title: Annotated[
        str | None,
        typer.Argument(
            metavar="TITLE",
            help="A short name for the job (default: the template's).",
            show_default=False,
        ),
    ] = None,
    description: Annotated[
        str | None,
        typer.Argument(
            metavar="DESCRIPTION",
            help="What to build, in plain language; `-` reads it from stdin (default: the "
            "template's).",
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            metavar="NAME",
            help="A template (its name or id; `vdo templates list`) whose fields fill in what "
            "the command leaves out.",
            show_default=False,
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(help="Build/test/review rounds before giving up (default: the gateway's)."),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="Spending cap for model calls, in USD (default: the gateway's)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="PHASE=PROVIDER:MODEL[,FALLBACK...]",
            help="The model of an AI phase (planner, builder, tester, reviewer), then its "
            "fallbacks, e.g. planner=anthropic:claude-sonnet-4-5,openai:gpt-4.1; providers: "
            "anthropic, openai, google (or gemini), scripted. Repeat for each phase; a phase "
            "left out uses the deployment's models.",
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(
            min=PRIORITY_MIN,
            max=PRIORITY_MAX,
            help=f"Its place in the queue, {PRIORITY_MIN} to {PRIORITY_MAX}: higher runs first, "
            f"first come first served within a priority (default: {DEFAULT_PRIORITY}).",
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the job live until it ends.")
    ] = False,
    api: Api = None,
) -> None:
    """Submit a job and print its id. With --watch, follow it and exit 0 only if it completes."""
    try:
        routes = parse_routes(model or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--model'") from None
    if template is None and (title is None or description is None):
        raise typer.BadParameter(
            "give a TITLE and a DESCRIPTION, or a --template that gives them",
            param_hint="'TITLE DESCRIPTION'",
        )
    if description == "-":
        description = sys.stdin.read()
    command = SubmitJob(
        title,
        description,
        max_attempts=max_attempts,
        budget_usd=budget,
        routes=routes or None,
        priority=priority,
        template=template,
    )
    with _reporting_errors(), _gateway(api) as gateway:
        job = gateway.submit(command)
        job_id = str(job.get("id", ""))
        if not job_id:
            raise ClientError("the gateway accepted the job but did not say its id")
        # The id alone on stdout, so that `id=$(vdo submit ...)` works.
        typer.echo(job_id)
        if watch:
            _follow(gateway, job_id)


@app.command("watch")
def watch_command(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    api: Api = None,
) -> None:
    """Follow a job live until it ends; exit 0 only if it completes."""
    with _reporting_errors(), _gateway(api) as gateway:
        _follow(gateway, job_id)


@app.command("logs")
def logs_command(
    job_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="The job's id; every job's if left out.")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--for", min=0.1, help="Stop after this many seconds.")
    ] = None,
    api: Api = None,
) -> None:
    """Follow the live log: model replies as they stream in, sandbox output line by line. With a
    job, through the gateway (your token's access), until the job ends; every job's at once
    needs the deployment's NATS."""
    from vdo_cli.livelog import follow_every_job, follow_job

    print_text = lambda text: typer.echo(text, nl=False)  # noqa: E731
    with _reporting_errors(), _gateway(api) as gateway:
        try:
            if job_id is not None:
                job = gateway.job(job_id)
                if job.get("status") in ("completed", "failed", "cancelled"):
                    typer.echo(f"job {job_id} has ended; its history: vdo show {job_id}")
                    return
                typer.echo(f"following the live log of {job_id} (Ctrl-C to stop)", err=True)
                ended = asyncio.run(
                    follow_job(
                        gateway.url,
                        gateway.token,
                        str(job["id"]),
                        print_text,
                        after=int(job.get("position") or 0),
                        seconds=seconds,
                    )
                )
                if ended:
                    typer.echo(f"job {job_id} has ended; its history: vdo show {job_id}", err=True)
                return
            settings = _settings()
            url = nats_address(settings)
            typer.echo("following the live log of every job (Ctrl-C to stop)", err=True)
            asyncio.run(follow_every_job(url, print_text, seconds=seconds, tls=settings.nats_tls()))
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    reason: Annotated[
        str | None, typer.Option(help="Why, for the job's history.", show_default=False)
    ] = None,
    api: Api = None,
) -> None:
    """Cancel a queued or running job: it leaves the queue, or the work in hand is stopped."""
    with _reporting_errors(), _gateway(api) as gateway:
        job = gateway.cancel(job_id, reason)
        typer.echo(f"{job.get('id', job_id)} {job.get('status', 'cancelled')}")


@app.command()
def retry(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="PHASE",
            help="Where the new attempt starts: a phase (planning, building, testing, "
            "reviewing, sandboxing) or a step (e.g. run_tests); the steps before it keep the "
            "last attempt's results.",
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option(help="What to do differently (the builder is told).", show_default=False),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(
            min=PRIORITY_MIN, max=PRIORITY_MAX, help="Its priority from now on (default: its own)."
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the job live until it ends.")
    ] = False,
    api: Api = None,
) -> None:
    """Retry a completed, failed or cancelled job from a phase: a new attempt, queued again."""
    with _reporting_errors(), _gateway(api) as gateway:
        job = gateway.retry(job_id, start, reason=reason, priority=priority)
        place = job.get("queue_position")
        queued = f", #{place} in the queue" if isinstance(place, int) else ""
        typer.echo(f"{job.get('id', job_id)} attempt {job.get('attempt', '?')} queued{queued}")
        if watch:
            _follow(gateway, job_id)


@app.command()
def jobs(
    status: Annotated[Status | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 20,
    api: Api = None,
) -> None:
    """List jobs, newest first (with --status queued: the queue, in the order jobs will run)."""
    query = JobQuery(status=status.value if status else None, limit=limit)
    with _reporting_errors(), _gateway(api) as gateway:
        page = gateway.jobs(query)
        console = make_console()
        if not page.items:
            console.print("no jobs" + (f" with status {status.value}" if status else ""))
            return
        console.print(jobs_table(page.items, page.total))


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    api: Api = None,
) -> None:
    """A job's detail (status, phase, attempts, cost, times, steps, model calls) and its
    history."""
    with _reporting_errors(), _gateway(api) as gateway:
        job = gateway.job(job_id)
        summary = job.get("model_calls")
        # A gateway that predates model calls says nothing of them: there is nothing to list.
        has_calls = isinstance(summary, dict) and bool(summary.get("count"))
        calls = gateway.calls(job_id) if has_calls else []
        events = gateway.events(EventQuery(job_id))
        console = make_console()
        console.print(job_detail(job, calls))
        console.print(history_table(events))


@projections_app.command()
def rebuild() -> None:
    """Drop the read models and rebuild them by replaying the whole event log."""
    with _reporting_errors():
        url = database_url(_settings())
        try:
            # Imported here: only this command needs the projector, which the CLI does not
            # depend on (an install without it still has every other command).
            from vdo_projector.projection import rebuild as rebuild_read_models
        except ModuleNotFoundError as exc:
            if exc.name not in ("vdo_projector", "vdo_projector.projection"):
                raise
            raise ClientError("the projector (vdo-projector) is not installed") from exc
        console = make_console()
        console.print(f"rebuilding the read models from {redact_url(url)}", markup=False)
        try:
            summary = rebuild_read_models(url)
        except Exception as exc:
            # The URL may carry a password; the message says which database without it.
            message = str(exc).replace(url, redact_url(url))
            raise ClientError(f"rebuilding the read models failed: {message}") from exc
        console.print(_summary(summary.to_json()))


register_portability(app)


@app.command()
def replay(
    verify: Annotated[
        bool, typer.Option("--verify", help="Replay aside and compare; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
) -> None:
    """Replay the event log into the read models; with --verify, replay it aside and compare
    with the live ones table by table (exit 0 when equal, 1 when not)."""
    with _reporting_errors():
        url = database_url(_settings())
        from vdo_cli.replay import run_replay

        raise typer.Exit(run_replay(url, make_console(), verify=verify, as_json=as_json))


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Which model providers are configured and reachable, which model each phase uses, and
    which sandbox would run generated code. Keys are never shown, only where they were found."""
    from vdo_cli.doctor import print_doctor
    from vdo_cli.doctor import report as doctor_report

    report = doctor_report(_settings())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_doctor(make_console(), report)
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def audit(job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]) -> None:
    """The complete history of one job, read from the event log."""
    from vdo_cli.audit import load as load_audit
    from vdo_cli.audit import render as render_audit

    with _reporting_errors():
        render_audit(load_audit(database_url(_settings()), job_id), make_console())


def _follow(gateway: Gateway, job_id: str) -> None:
    console = make_console()
    try:
        progress = watch_job(gateway, job_id, console)
    except KeyboardInterrupt:
        make_console(stderr=True).print(
            f"stopped watching; the job goes on (follow it again with `vdo watch {job_id}`)",
            markup=False,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not console.is_terminal:
        # The live view already shows the phases; a log gets them once, at the end.
        console.print(phases_table(progress))
    ending = f"job {job_id} {progress.status.value}"
    spent = cost_line(progress)
    if progress.status is Status.COMPLETED:
        console.print(f"{ending} after {progress.attempt} attempt(s); {spent}", markup=False)
        return
    reason = f": {progress.finished_reason}" if progress.finished_reason else ""
    console.print(f"{ending}{reason}", markup=False, style="red")
    console.print(spent, markup=False)
    raise typer.Exit(EXIT_FAILED)


@contextmanager
def _gateway(api: str | None) -> Iterator[Gateway]:
    # The token comes from the environment or a file, never an option, so it never shows in
    # shell history or in the process list.
    settings = _settings()
    token = api_token(settings)
    config = GatewayConfig(
        address=gateway_address(api, settings), token=token.value, token_source=token.source
    )
    with Gateway(config) as gateway:
        yield gateway


@contextmanager
def _reporting_errors() -> Iterator[None]:
    """Turn a failure the user can act on into a clear message and an exit code."""
    try:
        yield
    except GatewayUnreachable as exc:
        _error(str(exc))
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except (ClientError, SettingsError) as exc:
        _error(str(exc))
        raise typer.Exit(EXIT_FAILED) from None


def _error(message: str) -> None:
    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"VDO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        _error(f"invalid configuration: {problems}")
        raise typer.Exit(EXIT_FAILED) from None


def _summary(values: Mapping[str, object]) -> Table:
    """A rebuild's summary as a two-column table, nested values (the checksums) one a row."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()

    def add(prefix: str, mapping: Mapping[str, object]) -> None:
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                add(f"{prefix}{key}.", value)
            else:
                table.add_row(escape(f"{prefix}{key}"), escape(str(value)))

    add("", values)
    return table


register_accounts(app, _gateway, _reporting_errors)
register_templates(app, _gateway, _reporting_errors)


if __name__ == "__main__":
    app()
