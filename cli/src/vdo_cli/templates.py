"""`vdo templates ...`: the template library through the gateway's API: list the built-in and
the users' templates, show one, make one (by hand, from a job, or as a copy of another) and
delete one. `vdo submit --template NAME` submits a job from one."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from vdo_cli.client import Gateway, parse_routes
from vdo_cli.views import make_console, routes_text
from vdo_kernel.domain import MAX_ATTEMPTS_LIMIT, PRIORITY_MAX, PRIORITY_MIN

JSON = dict[str, Any]
Connect = Callable[[str | None], AbstractContextManager[Gateway]]
Reporting = Callable[[], AbstractContextManager[None]]

Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="VDO_API_URL",
        help="Gateway URL (default: the running stack's, else http://VDO_HOST:VDO_PORT).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print what the gateway answered, as JSON.")]
Ref = Annotated[str, typer.Argument(metavar="TEMPLATE", help="The template's name or id.")]


def register(app: typer.Typer, connect: Connect, reporting: Reporting) -> None:
    """Add the commands to `app`; they reach the gateway with `connect` and report errors with
    `reporting` (the main module's)."""
    templates_app = typer.Typer(
        help="Job templates: the built-in ones and your own. Submit one with "
        "`vdo submit --template NAME`.",
        no_args_is_help=True,
    )
    app.add_typer(templates_app, name="templates")

    @templates_app.command("list")
    def list_templates(
        builtin: Annotated[
            bool | None,
            typer.Option(
                "--builtin/--mine",
                help="Only the built-in templates, or only the users' (default: both).",
                show_default=False,
            ),
        ] = None,
        limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
        offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
        as_json: AsJson = False,
        api: Api = None,
    ) -> None:
        """List the templates: the built-in ones first, then the users' by name."""
        with reporting(), connect(api) as gateway:
            page = gateway.templates(limit=limit, offset=offset, builtin=builtin)
        if as_json:
            typer.echo(json.dumps({"items": page.items, "total": page.total}, indent=2))
            return
        console = make_console()
        console.print(templates_table(page.items))
        shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
        console.print(f"[dim]{shown} of {page.total}[/]")

    @templates_app.command("show")
    def show_template(ref: Ref, as_json: AsJson = False, api: Api = None) -> None:
        """Show one template."""
        with reporting(), connect(api) as gateway:
            template = gateway.template(ref)
        if as_json:
            typer.echo(json.dumps(template, indent=2))
            return
        make_console().print(template_detail(template))

    @templates_app.command("create")
    def create_template(
        name: Annotated[
            str,
            typer.Option(
                "--name",
                help="Its name (lower-case letters, digits, '.', '_' or '-'), unique.",
                show_default=False,
            ),
        ],
        from_job: Annotated[
            str | None,
            typer.Option(
                "--from-job",
                metavar="JOB",
                help="Start from a job: its title, description, models, budget, attempts and "
                "priority as submitted.",
                show_default=False,
            ),
        ] = None,
        from_template: Annotated[
            str | None,
            typer.Option(
                "--from-template",
                metavar="TEMPLATE",
                help="Start from a copy of another template (a built-in one, say).",
                show_default=False,
            ),
        ] = None,
        title: Annotated[
            str | None, typer.Option(help="The jobs' title.", show_default=False)
        ] = None,
        description: Annotated[
            str | None,
            typer.Option(
                help="What to build, in plain language; `-` reads it from stdin.",
                show_default=False,
            ),
        ] = None,
        summary: Annotated[
            str | None,
            typer.Option(help="What the template is for, shown in lists.", show_default=False),
        ] = None,
        max_attempts: Annotated[
            int | None,
            typer.Option(min=1, max=MAX_ATTEMPTS_LIMIT, help="Build/test/review rounds at most."),
        ] = None,
        budget: Annotated[
            float | None, typer.Option(help="Spending cap for model calls, in USD.")
        ] = None,
        priority: Annotated[
            int | None,
            typer.Option(min=PRIORITY_MIN, max=PRIORITY_MAX, help="Its jobs' place in the queue."),
        ] = None,
        model: Annotated[
            list[str] | None,
            typer.Option(
                "--model",
                "-m",
                metavar="PHASE=PROVIDER:MODEL[,FALLBACK...]",
                help="The model of an AI phase, then its fallbacks (as for `vdo submit`).",
            ),
        ] = None,
        as_json: AsJson = False,
        api: Api = None,
    ) -> None:
        """Make a template: by hand (--title and --description), from a job (--from-job) or as
        a copy of another (--from-template); options given override what it starts from."""
        try:
            routes = parse_routes(model or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--model'") from None
        if description == "-":
            description = sys.stdin.read()
        given = {
            "name": name,
            "from_job": from_job,
            "from_template": from_template,
            "title": title,
            "description": description,
            "summary": summary,
            "max_attempts": max_attempts,
            "budget_usd": budget,
            "priority": priority,
            "routes": routes or None,
        }
        body = {key: value for key, value in given.items() if value is not None}
        with reporting(), connect(api) as gateway:
            template = gateway.create_template(body)
        if as_json:
            typer.echo(json.dumps(template, indent=2))
            return
        # The id alone on stdout, so that `id=$(vdo templates create ...)` works.
        typer.echo(str(template.get("id", "")))

    @templates_app.command("delete")
    def delete_template(ref: Ref, api: Api = None) -> None:
        """Delete one of your templates (built-in ones cannot be deleted)."""
        with reporting(), connect(api) as gateway:
            gateway.delete_template(ref)
        make_console(stderr=True).print(f"deleted template {escape(ref)}")


def templates_table(items: list[JSON]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=50)
    table.add_column("kind", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("about", overflow="fold", max_width=70)
    for item in items:
        table.add_row(
            escape(str(item.get("name", "?"))),
            escape(str(item.get("title", ""))),
            _kind(item),
            escape(str(item.get("created_by") or "")),
            escape(str(item.get("summary") or "")),
        )
    return table


def template_detail(template: JSON) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, object]] = [
        ("name", template.get("name")),
        ("id", template.get("id")),
        ("kind", _kind(template)),
        ("title", template.get("title")),
        ("description", template.get("description")),
        ("summary", template.get("summary")),
        ("models", routes_text(template.get("routes") or {}) or "the deployment's"),
        ("max attempts", _or_default(template.get("max_attempts"))),
        ("budget", _or_default(template.get("budget_usd"), "$")),
        ("priority", _or_default(template.get("priority"))),
        ("made from", template.get("from_job") or template.get("from_template")),
        ("made by", template.get("created_by")),
        ("changed", template.get("updated_at")),
    ]
    for label, value in rows:
        if value not in (None, ""):
            table.add_row(label, escape(str(value)))
    return table


def _kind(template: JSON) -> str:
    if not template.get("builtin"):
        return "user"
    return "built-in (scripted demo)" if template.get("scripted") else "built-in"


def _or_default(value: object, prefix: str = "") -> str:
    return f"{prefix}{value}" if value is not None else "the deployment's default"
