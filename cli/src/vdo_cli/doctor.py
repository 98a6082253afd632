"""`vdo doctor`: which model providers are configured (in the environment, or entered in
Settings when the deployment's database answers) and reachable, which model each phase would use
and why, and which sandbox backend would run generated code. It never prints a key: only the
name of the variable a key was found in, or "Settings"."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from vdo_cli.client import ClientError, database_url
from vdo_cli.stack import read_stored_secrets
from vdo_kernel.domain import AI_PHASES
from vdo_kernel.secrets import SecretStoreError
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepFailure
from vdo_models.interface import ProviderError
from vdo_models.providers import BASE_URL_VARIABLES, KEY_VARIABLES, display_url, make_client
from vdo_models.session import (
    effective_environment,
    provider_environment,
    provider_sources,
    resolve_routes,
)


@dataclass(frozen=True)
class ProviderStatus:
    provider: str
    configured: bool
    key_variable: str  # where the key was found, or the variables that would hold it
    base_url: str  # without any credentials in it; empty for the provider's default
    reachable: bool | None  # None when not configured (not tried)
    detail: str


async def check_providers(
    env: Mapping[str, str], wait: float = 10.0, stored: Mapping[str, str] | None = None
) -> list[ProviderStatus]:
    """Each provider's key and address, tried. `env` is the environment; `stored` the keys
    entered in Settings (the environment's win)."""
    stored = stored or {}
    sources = {s.name: s for s in provider_sources(env, stored)}
    env = effective_environment(env, stored)

    async def one(provider: str, variables: tuple[str, ...]) -> ProviderStatus:
        found = next((v for v in variables if env.get(v, "").strip()), "")
        if found and sources[provider].key_source == "settings":
            found = "Settings"
        base = next((env[v] for v in BASE_URL_VARIABLES.get(provider, ()) if env.get(v)), "")
        shown = display_url(base) if base else ""
        if not found:
            return ProviderStatus(provider, False, " or ".join(variables), shown, None, "")
        client = make_client(provider, env, timeout=wait)
        try:
            detail = await asyncio.wait_for(client.check(), wait)
            reachable = True
        except ProviderError as error:
            detail, reachable = str(error), False
        except TimeoutError:
            detail, reachable = f"no answer within {wait:g}s", False
        finally:
            await client.close()
        return ProviderStatus(provider, True, found, shown, reachable, detail)

    return list(await asyncio.gather(*(one(p, v) for p, v in KEY_VARIABLES.items())))


def phase_routes_table(
    settings: Settings, configured: set[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each phase's routes (main → fallbacks), and why."""
    rows: dict[str, str] = {}
    why: dict[str, str] = {}
    for phase in AI_PHASES:
        try:
            routing = resolve_routes(phase, {}, settings, configured)
        except StepFailure as error:
            rows[phase] = f"unusable: {error}"
            why[phase] = ""
            continue
        rows[phase] = " → ".join(str(r) for r in routing.routes)
        why[phase] = routing.why
    return rows, why


def stored_keys(settings: Settings) -> tuple[dict[str, str], str]:
    """The keys entered in Settings, when the deployment's database answers, and a note on
    them for the report."""
    if not settings.secret_key_file.exists():
        return {}, "no key has been entered in Settings (no secret store here yet)"
    try:
        url = database_url(settings)
        stored = read_stored_secrets(url, settings)
    except (ClientError, OSError, psycopg.Error, SecretStoreError) as error:
        return {}, f"the keys entered in Settings were not read: {error}"
    return stored, ""


def sandbox_status(settings: Settings) -> tuple[bool, str]:
    from vdo_sandbox.backend import SandboxUnavailableError
    from vdo_sandbox.choose import choose_backend

    try:
        backend = choose_backend(settings)
    except SandboxUnavailableError as error:
        return False, str(error)
    return True, f"{backend.name}: {backend.describe()}"


def report(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = provider_environment(environ)
    stored, stored_note = stored_keys(settings)
    providers = asyncio.run(check_providers(env, stored=stored))
    configured = {p.provider for p in providers if p.configured}
    sandbox_ok, sandbox = sandbox_status(settings)
    routes, why = phase_routes_table(settings, configured)
    return {
        "providers": [asdict(p) for p in providers],
        "scripted_model": not configured,
        "phases": routes,
        "phases_why": why,
        "sandbox": {"ok": sandbox_ok, "detail": sandbox},
        "stored_keys": stored_note,
        "ok": sandbox_ok and all(p.reachable is not False for p in providers),
    }


def print_doctor(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="Model providers", title_justify="left")
    for column in ("provider", "key", "address", "reachable", "detail"):
        table.add_column(column)
    for p in report["providers"]:
        key = f"from {p['key_variable']}" if p["configured"] else f"not set ({p['key_variable']})"
        reachable = {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[p["reachable"]]
        table.add_row(p["provider"], key, p["base_url"] or "(default)", reachable, p["detail"])
    console.print(table)
    if report["scripted_model"]:
        console.print(
            "No provider is configured: every phase runs on the built-in [bold]scripted model[/], "
            "which does the demo jobs only."
        )
    if report.get("stored_keys"):
        console.print(report["stored_keys"], markup=False)
    phases = Table(title="Models per phase (main → fallbacks, and why)", title_justify="left")
    phases.add_column("phase")
    phases.add_column("routes")
    phases.add_column("why")
    for phase, routes in report["phases"].items():
        phases.add_row(phase, routes, report["phases_why"].get(phase, ""))
    console.print(phases)
    sandbox = report["sandbox"]
    mark = "[green]ok[/]" if sandbox["ok"] else "[red]unavailable[/]"
    console.print(f"Sandbox: {mark} {sandbox['detail']}")
