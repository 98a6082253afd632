"""`vdo token ...`, `vdo user ...` and `vdo whoami`: the accounts, through the gateway's API (as
an admin: the token from VDO_TOKEN, else the first admin's that `vdo up` keeps)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from vdo_cli.client import Gateway
from vdo_cli.views import make_console

JSON = dict[str, Any]
Connect = Callable[[str | None], AbstractContextManager[Gateway]]
Reporting = Callable[[], AbstractContextManager[None]]
ROLES = ("admin", "member", "viewer")

Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="VDO_API_URL",
        help="Gateway URL (default: the running stack's, else http://VDO_HOST:VDO_PORT).",
        show_default=False,
    ),
]


def register(app: typer.Typer, connect: Connect, reporting: Reporting) -> None:
    """Add the commands to `app`; they reach the gateway with `connect` and report errors with
    `reporting` (the main module's)."""
    token_app = typer.Typer(
        help="API tokens: make one for a user (shown once), list them, revoke one.",
        no_args_is_help=True,
    )
    user_app = typer.Typer(
        help="Users and their roles (admin, member, viewer).", no_args_is_help=True
    )
    app.add_typer(token_app, name="token")
    app.add_typer(user_app, name="user")

    @token_app.command("create")
    def token_create(
        user: Annotated[
            str | None, typer.Option("--user", help="The user it acts for (default: you).")
        ] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="A label: where the token is used.")
        ] = None,
        expires_in: Annotated[
            int | None,
            typer.Option(
                "--expires-in", min=1, max=3650, metavar="DAYS", help="Days until it expires."
            ),
        ] = None,
        api: Api = None,
    ) -> None:
        """Make a token and print it (on stdout, alone: `t=$(vdo token create ...)`). It is
        shown this once: only its digest is kept."""
        with reporting(), connect(api) as gateway:
            made = gateway.create_token(user=user, name=name, expires_in_days=expires_in)
            typer.echo(str(made.get("token", "")))
            expires = made.get("expires_at")
            make_console(stderr=True).print(
                f"token {made.get('id')} for {made.get('user')} ({made.get('name')}), "
                f"{'expires ' + _when(expires) if expires else 'does not expire'}: "
                "shown this once, keep it secret; revoke it with "
                f"`vdo token revoke {made.get('id')}`",
                markup=False,
            )

    @token_app.command("list")
    def token_list(
        user: Annotated[str | None, typer.Option("--user", help="Only this user's.")] = None,
        active: Annotated[bool, typer.Option("--active", help="Leave revoked tokens out.")] = False,
        api: Api = None,
    ) -> None:
        """The tokens (never the tokens themselves: their ids and first characters)."""
        with reporting(), connect(api) as gateway:
            items = gateway.tokens(user=user, revoked=not active)
            console = make_console()
            if not items:
                console.print("no tokens")
                return
            console.print(tokens_table(items))

    @token_app.command("revoke")
    def token_revoke(
        token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
        api: Api = None,
    ) -> None:
        """Revoke a token: it stops working at once."""
        with reporting(), connect(api) as gateway:
            token = gateway.revoke_token(token_id)
            make_console().print(
                f"token {token.get('id')} of {token.get('user')} ({token.get('name')}) is "
                f"revoked (since {_when(token.get('revoked_at'))})",
                markup=False,
            )

    @user_app.command("add")
    def user_add(
        name: Annotated[str, typer.Argument(help="Lower case: letters, digits, '.', '_', '-'.")],
        role: Annotated[
            str, typer.Option("--role", help="admin, member or viewer.", case_sensitive=False)
        ] = "member",
        api: Api = None,
    ) -> None:
        """Add a user; then make them a token with `vdo token create --user NAME`."""
        role = _role(role)
        with reporting(), connect(api) as gateway:
            user = gateway.add_user(name, role)
            make_console().print(
                f"added {user.get('name')} ({user.get('role')}); make them a token with "
                f"`vdo token create --user {user.get('name')}`",
                markup=False,
            )

    @user_app.command("list")
    def user_list(api: Api = None) -> None:
        """Every user and their role."""
        with reporting(), connect(api) as gateway:
            items = gateway.users()
            console = make_console()
            if not items:
                console.print("no users")
                return
            console.print(users_table(items))

    @user_app.command("set-role")
    def user_set_role(
        name: Annotated[str, typer.Argument(help="The user.")],
        role: Annotated[str, typer.Argument(help="admin, member or viewer.")],
        api: Api = None,
    ) -> None:
        """Change a user's role (not your own: another admin can)."""
        role = _role(role)
        with reporting(), connect(api) as gateway:
            user = gateway.set_role(name, role)
            make_console().print(f"{user.get('name')} is a {user.get('role')}", markup=False)

    @app.command()
    def whoami(api: Api = None) -> None:
        """Who the gateway takes you for: the token's user and role."""
        with reporting(), connect(api) as gateway:
            me = gateway.me()
            token = me.get("token")
            via = (
                f" (token {token.get('id')}, {token.get('name')})"
                if isinstance(token, dict)
                else " (authentication is off)"
            )
            make_console().print(f"{me.get('name')}, {me.get('role')}{via}", markup=False)


def _role(value: str) -> str:
    role = value.strip().lower()
    if role not in ROLES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ROLES)}", param_hint="role")
    return role


def _when(value: object) -> str:
    if not isinstance(value, str) or not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def tokens_table(items: list[JSON]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "prefix", "user", "name", "status", "created", "expires"):
        table.add_column(column, no_wrap=True)
    for token in items:
        status = str(token.get("status", "?"))
        style = {"active": "green", "expired": "yellow", "revoked": "red"}.get(status, "")
        table.add_row(
            escape(str(token.get("id", "?"))),
            escape(str(token.get("prefix", ""))) + "…",
            escape(str(token.get("user", ""))),
            escape(str(token.get("name", ""))),
            f"[{style}]{escape(status)}[/]" if style else escape(status),
            _when(token.get("created_at")),
            _when(token.get("expires_at")) if token.get("expires_at") else "never",
        )
    return table


def users_table(items: list[JSON]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("name", "role", "added", "by"):
        table.add_column(column, no_wrap=True)
    for user in items:
        table.add_row(
            escape(str(user.get("name", "?"))),
            escape(str(user.get("role", ""))),
            _when(user.get("created_at")),
            escape(str(user.get("created_by", ""))),
        )
    return table
