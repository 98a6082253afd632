"""What an AI phase service holds for its life: the model clients, the router, the price table
and the day's spend; and the choice of routes for a job's phase.

Routes for a phase come from the job (chosen at submission) or the deployment's settings
(``VDO_<PHASE>_MODEL`` and ``VDO_<PHASE>_FALLBACKS``). Routes to a provider without a key are
left out. With no provider configured at all, every phase runs on the built-in scripted model,
which says so everywhere it appears.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dotenv import dotenv_values

from vdo_kernel import logs
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure
from vdo_models.calls import DailySpend, StepCalls
from vdo_models.files import FileLimits
from vdo_models.interface import ModelClient, Route, RouteError
from vdo_models.pricing import Pricing
from vdo_models.providers import (
    BASE_URL_VARIABLES,
    KEY_VARIABLES,
    configured_providers,
    display_url,
    make_client,
)
from vdo_models.router import Router
from vdo_models.scripted import ScriptedModelClient

log = logs.get(__name__)

SCRIPTED = Route("scripted", "demo")
SCRIPTED_LABEL = "scripted (built-in; no AI model configured)"


def provider_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the values in ``.env`` (the SDKs' own variables)."""
    values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    values.update(os.environ if environ is None else environ)
    return values


def phase_routes(
    phase: str, job_routes: Mapping[str, list[str]], settings: Settings, configured: set[str]
) -> list[Route]:
    """The routes to try for a phase, in order; a clear error when none can be used."""
    chosen = job_routes.get(phase)
    if chosen:
        texts = list(chosen)
    else:
        main = str(getattr(settings, f"{phase}_model"))
        fallbacks = str(getattr(settings, f"{phase}_fallbacks"))
        texts = [main, *(t for t in fallbacks.split(",") if t.strip())]
    try:
        routes = [Route.parse(text) for text in texts]
    except RouteError as error:
        raise StepFailure(str(error)) from None
    if not configured:
        return [r for r in routes if r.provider == "scripted"] or [SCRIPTED]
    usable = [r for r in routes if r.provider == "scripted" or r.provider in configured]
    if not usable:
        missing = sorted({r.provider for r in routes})
        keys = " or ".join(v for p in missing for v in KEY_VARIABLES.get(p, ()))
        raise StepFailure(
            f"no key for the {phase}'s model ({', '.join(str(r) for r in routes)}): set {keys}, "
            f"or route the {phase} to a configured provider ({', '.join(sorted(configured))})"
        )
    return usable


class Models:
    """One per AI phase service process."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = provider_environment(environ)
        self.configured = set(configured_providers(self.env))
        self.pricing = Pricing.from_settings(settings)
        self.daily = DailySpend()
        self._clients: dict[str, ModelClient] = {}
        self.router = Router(self.client, settings)
        if self.configured:
            log.info("model providers configured", providers=sorted(self.configured))
        else:
            log.info("no model provider configured: using the built-in scripted model")

    def client(self, provider: str) -> ModelClient:
        if provider not in self._clients:
            self._clients[provider] = (
                ScriptedModelClient(delay_seconds=self.settings.scripted_delay_seconds)
                if provider == "scripted"
                else make_client(provider, self.env)
            )
        return self._clients[provider]

    def calls(self, ctx: StepContext, phase: str) -> StepCalls:
        routes = phase_routes(phase, ctx.job.routes, self.settings, self.configured)
        return StepCalls(
            ctx,
            phase=phase,
            routes=routes,
            router=self.router,
            pricing=self.pricing,
            daily=self.daily,
        )

    def report(self, phase: str) -> dict[str, Any]:
        """What the phase's service says of its models, for the API (`vdo_kernel.reports`):
        each provider, whether it has a key and the variable it was found in (never the key),
        the base URL without credentials, and the phase's routes as this deployment sets them."""
        providers = []
        for provider, variables in KEY_VARIABLES.items():
            found = next((v for v in variables if self.env.get(v, "").strip()), None)
            base = next((self.env[v] for v in BASE_URL_VARIABLES[provider] if self.env.get(v)), "")
            providers.append(
                {
                    "name": provider,
                    "configured": found is not None,
                    "key_source": found,
                    "base_url": display_url(base) if base else None,
                }
            )
        try:
            routes = [str(r) for r in phase_routes(phase, {}, self.settings, self.configured)]
            problem = None
        except StepFailure as error:
            routes, problem = [], str(error)
        return {
            "phase": phase,
            "providers": providers,
            "routes": routes,
            "scripted": not self.configured,
            "problem": problem,
        }

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


def label(route: Route | None) -> str:
    if route is None or route.provider == "scripted":
        return SCRIPTED_LABEL
    return str(route)


def tag(model: str) -> str:
    """The prefix a step's summary gets when the scripted model made it."""
    return "[scripted model] " if model.startswith("scripted") else ""


def file_limits(settings: Settings) -> FileLimits:
    return FileLimits(
        max_files=settings.max_generated_files,
        max_file_bytes=settings.max_generated_file_bytes,
        max_total_bytes=settings.max_generated_total_bytes,
    )


def render_files(files: Mapping[str, str]) -> str:
    """Files as a model reads them: each under a header with its path."""
    return "\n".join(f"=== {path} ===\n{content}" for path, content in sorted(files.items()))


def attempt_line(attempt: int, max_attempts: int) -> str:
    return f"This is attempt {attempt} of at most {max_attempts}."
