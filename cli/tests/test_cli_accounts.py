"""The first start of a stack makes its first admin (the token printed once, kept owner-only),
and the `vdo user` and `vdo token` commands manage accounts through the gateway with it."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from tests.harness import start_stack
from typer.testing import CliRunner, Result

from vdo_cli.main import EXIT_FAILED, app
from vdo_cli.stack import ALL_SERVICES, Stack
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

pytestmark = pytest.mark.e2e


def vdo(home: Path, *args: str, token: str | None = None) -> Result:
    """A `vdo` command as the user at `home` runs it: the gateway's address from the running
    stack's file there, the token from VDO_TOKEN if given, else the first admin's file."""
    env = {"VDO_HOME": str(home), "VDO_TOKEN": token, "VDO_API_URL": None, "VDO_ADMIN_TOKEN": None}
    return CliRunner().invoke(app, list(args), env=env)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_first_start_makes_an_admin_whose_token_the_cli_uses(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    database_url = make_database()
    home = tmp_path / "home"
    first = start_stack(home, database_url, admin_token=None)
    try:
        kept = home / "admin-token"
        token = kept.read_text().strip()
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        said = "\n".join(first.log)
        assert said.count(token) == 1, said
        assert f"it is kept in {kept} (readable by you only)" in said

        me = vdo(home, "whoami")
        assert me.exit_code == 0, me.output
        assert one_line(me.output).startswith("admin, admin (token ")

        added = vdo(home, "user", "add", "ada", "--role", "member")
        assert added.exit_code == 0, added.output
        assert "added ada (member)" in added.output
        made = vdo(
            home, "token", "create", "--user", "ada", "--name", "laptop", "--expires-in", "30"
        )
        assert made.exit_code == 0, made.output
        ada = made.stdout.strip()
        assert ada.startswith("vdo_")
        assert "shown this once" in made.stderr
        token_id = one_line(made.stderr).split()[1]

        listed = vdo(home, "token", "list")
        assert listed.exit_code == 0, listed.output
        assert token_id in listed.output
        assert "laptop" in listed.output
        assert ada not in listed.output
        assert token not in listed.output
        users = vdo(home, "user", "list")
        assert users.exit_code == 0, users.output
        assert "ada" in users.output
        assert "first start" in users.output

        # Ada acts as herself: she submits, but may not manage accounts.
        submitted = vdo(home, "submit", "ada's", "a job of ada's", token=ada)
        assert submitted.exit_code == 0, submitted.output
        job_id = submitted.stdout.strip()
        assert one_line(vdo(home, "whoami", token=ada).output).startswith("ada, member")
        refused = vdo(home, "user", "list", token=ada)
        assert refused.exit_code == EXIT_FAILED
        assert "only an admin may do this" in one_line(refused.output)

        revoked = vdo(home, "token", "revoke", token_id)
        assert revoked.exit_code == 0, revoked.output
        assert "is revoked" in revoked.output
        gone = vdo(home, "show", job_id, token=ada)
        assert gone.exit_code == EXIT_FAILED
        assert "authentication required" in one_line(gone.output)
        active = vdo(home, "token", "list", "--active")
        assert token_id not in active.output
    finally:
        first.stack.stop()

    # A restart finds the admin: nothing is written, and the token is not shown again.
    second = start_stack(home, database_url, admin_token=None)
    try:
        said = "\n".join(second.log)
        assert token not in said
        assert f"the admin token is kept in {home / 'admin-token'}" in said
        assert (home / "admin-token").read_text().strip() == token
        assert vdo(home, "whoami").exit_code == 0
    finally:
        second.stack.stop()
    store = JobStore(database_url, pool_size=1)
    try:
        accounts = [e.type for e in store.read(after=0, limit=10_000) if not e.is_job_event]
    finally:
        store.close()
    assert accounts == [
        "UserAdded",
        "TokenCreated",
        "UserAdded",
        "TokenCreated",
        "TokenRevoked",
    ]


def test_a_bad_role_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    result = vdo(tmp_path, "user", "add", "ada", "--role", "owner")
    assert result.exit_code == 2
    assert "not one of admin, member, viewer" in one_line(result.output)


def test_no_service_the_stack_starts_is_given_an_api_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = "vdo_" + "S" * 43
    settings = Settings(
        home=tmp_path,
        database_url="postgresql://u@127.0.0.1:1/db",
        nats_url="nats://127.0.0.1:1",
        admin_token=SecretStr(given),
    )
    stack = Stack(
        settings, echo=None, environ={"VDO_ADMIN_TOKEN": given, "VDO_TOKEN": "vdo_caller", "X": "1"}
    )
    for service in ALL_SERVICES:
        env = stack._env(service)
        # Empty, so that not even a `.env` file gives it one.
        assert (env["VDO_ADMIN_TOKEN"], env["VDO_TOKEN"]) == ("", ""), service
        assert not any(given in value or "vdo_caller" in value for value in env.values()), service
        assert (env["X"], env["VDO_AUTH"]) == ("1", "on")
    # What a service makes of it: no admin token, whatever a `.env` file says.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"VDO_ADMIN_TOKEN={given}\n")
    monkeypatch.setenv("VDO_ADMIN_TOKEN", "")
    assert Settings().admin_token is None
