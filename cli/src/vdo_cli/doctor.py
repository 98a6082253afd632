"""`vdo doctor`: which model providers are configured and reachable, which model each phase
uses, and which sandbox backend would run generated code. It never prints a key."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from vdo_kernel.settings import Settings
from vdo_models.interface import ProviderError
from vdo_models.providers import BASE_URL_VARIABLES, KEY_VARIABLES, make_client
from vdo_models.session import Models, phase_routes
from vdo_models.interface import RouteError
from vdo_kernel.steps import StepFailure

PHASES = ("planner", "builder", "tester", "reviewer")


@dataclass(frozen=True)
class ProviderStatus:
    provider: str
    configured: bool
    key_variable: str  # the variable the key was found in, or the ones to set
    base_url: str
    reachable: bool | None
    detail: str


def redact(url: str) -> str:
    """A URL without any user or password in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


async def check_providers(env: Mapping[str, str], timeout: float = 10.0) -> list[ProviderStatus]:
    statuses: list[ProviderStatus] = []
    for provider, variables in KEY_VARIABLES.items():
        found = next((v for v in variables if env.get(v)), "")
        base = next((env[v] for v in BASE_URL_VARIABLES.get(provider, ()) if env.get(v)), "")
        if not found:
            statuses.append(
                ProviderStatus(provider, False, " or ".join(variables), redact(base), None, "")
            )
            continue
        client = make_client(provider, env)
        try:
            detail = await asyncio.wait_for(client.check(), timeout)
            reachable = True
        except (ProviderError, TimeoutError) as error:
            detail = str(error) or "timed out"
            reachable = False
        finally:
            await client.close()
        statuses.append(ProviderStatus(provider, True, found, redact(base), reachable, detail))
    return statuses


def phase_table(settings: Settings, configured: set[str]) -> dict[str, str]:
    rows: dict[str, str] = {}
    for phase in PHASES:
        try:
            routes = phase_routes(phase, {}, settings, configured)
            rows[phase] = " → ".join(str(r) for r in routes)
        except (StepFailure, RouteError) as error:
            rows[phase] = f"unusable: {error}"
    return rows


def models_for(settings: Settings) -> Models:
    return Models(settings)
