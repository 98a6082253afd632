"""What an AI phase service holds for its life: the model clients, the router, the price table
and the day's spend; and the choice of routes for a job's phase.

Routes for a phase come from the job (chosen at submission) or the deployment's settings
(``VDO_<PHASE>_MODEL`` and ``VDO_<PHASE>_FALLBACKS``). Routes to a provider without a key are
left out; when the deployment's default for a phase (not set by anyone) names a provider without
a key, the phase takes a configured provider's model for its role, so one key runs every phase.
With no provider configured at all, every phase runs on the built-in scripted model, which says
so everywhere it appears.

Keys come from the environment (and ``.env``) or from the secret store (entered in the
dashboard); the environment's win. Stored keys are read again before each step and whenever the
gateway says they changed, so a key added in Settings serves the next job with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dotenv import dotenv_values
from nats.aio.msg import Msg

from vdo_kernel import logs
from vdo_kernel.domain import AI_PHASES
from vdo_kernel.reports import publish_report
from vdo_kernel.secrets import PROVIDER_PREFIX, SecretStore, provider_base_url, provider_key
from vdo_kernel.service import Started
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure
from vdo_kernel.subjects import PROVIDER_TEST, PROVIDER_TEST_QUEUE, SECRETS_CHANGED
from vdo_models.calls import DailySpend, StepCalls
from vdo_models.files import FileLimits
from vdo_models.interface import (
    Message,
    ModelClient,
    ModelRequest,
    ProviderError,
    Route,
    RouteError,
)
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
PROVIDER_TEST_SECONDS = 30.0
PROVIDER_TEST_TOKENS = 64


def provider_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the values in ``.env`` (the SDKs' own variables)."""
    values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    values.update(os.environ if environ is None else environ)
    return values


# Each provider's model for each role, used when the deployment's default for a phase names a
# provider without a key: a strong model plans, builds and writes tests; a cheaper one reviews
# where the provider has one.
PROVIDER_MODELS: dict[str, dict[str, str]] = {
    "anthropic": {
        "planner": "claude-sonnet-4-6",
        "builder": "claude-sonnet-4-6",
        "tester": "claude-sonnet-4-6",
        "reviewer": "claude-haiku-4-5",
    },
    "openai": {
        "planner": "gpt-4.1",
        "builder": "gpt-4.1",
        "tester": "gpt-4.1",
        "reviewer": "gpt-4.1-mini",
    },
    "google": {
        "planner": "gemini-2.5-pro",
        "builder": "gemini-2.5-pro",
        "tester": "gemini-2.5-pro",
        "reviewer": "gemini-2.5-flash",
    },
}
# The model a key is tried with from Settings: the provider's cheapest listed one.
TEST_MODELS: dict[str, str] = {p: models["reviewer"] for p, models in PROVIDER_MODELS.items()}
WHERE_KEYS_GO = (
    "add a key in Settings → Model providers (it takes effect at once), or set {variables} in "
    "the environment or .env and restart VDO; one provider's key is enough"
)


@dataclass(frozen=True)
class PhaseRouting:
    """The routes a phase takes and why: `source` is job (chosen at submission), setting
    (``VDO_<PHASE>_MODEL``), default (the deployment's default), fallback (the default's
    provider has no key, so a configured provider's model for the role) or scripted."""

    phase: str
    routes: tuple[Route, ...]
    source: str
    why: str


def where_keys_go(providers: Iterable[str] = ()) -> str:
    names = list(providers) or list(KEY_VARIABLES)
    variables = [v for p in names for v in KEY_VARIABLES.get(p, ())[:1]]
    shown = (
        ", ".join(variables[:-1]) + f" or {variables[-1]}" if len(variables) > 1 else variables[0]
    )
    return WHERE_KEYS_GO.format(variables=shown)


def resolve_routes(
    phase: str, job_routes: Mapping[str, list[str]], settings: Settings, configured: set[str]
) -> PhaseRouting:
    """The routes to try for a phase, in order, with the reason; a StepFailure that says what
    to do when none can be used."""
    chosen = job_routes.get(phase)
    setting = f"VDO_{phase.upper()}_MODEL"
    explicit = f"{phase}_model" in settings.model_fields_set
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
        scripted = tuple(r for r in routes if r.provider == "scripted") or (SCRIPTED,)
        return PhaseRouting(
            phase,
            scripted,
            "scripted",
            "no AI provider is configured: the built-in scripted model (demo jobs only)",
        )
    usable = [r for r in routes if r.provider == "scripted" or r.provider in configured]
    if usable:
        dropped = [r for r in routes if r not in usable]
        source = "job" if chosen else ("setting" if explicit else "default")
        why = {
            "job": "chosen for this job",
            "setting": f"set by {setting}",
            "default": "the deployment's default",
        }[source]
        if usable[0].provider == "scripted":
            why += " (the built-in scripted model: demo jobs only)"
        if dropped:
            why += f"; left out for want of a key: {', '.join(str(r) for r in dropped)}"
        return PhaseRouting(phase, tuple(usable), source, why)
    missing = sorted({r.provider for r in routes})
    if chosen or explicit:
        whose = "this job's choice" if chosen else f"set by {setting}"
        raise StepFailure(
            f"no key for the {phase}'s model ({', '.join(str(r) for r in routes)}; {whose}): "
            f"{where_keys_go(missing)}; or choose a model of a configured provider "
            f"({', '.join(sorted(configured))})"
        )
    provider = next(p for p in PROVIDER_MODELS if p in configured)
    route = Route(provider, PROVIDER_MODELS[provider][phase])
    variables = " or ".join(v for p in missing for v in KEY_VARIABLES.get(p, ()))
    return PhaseRouting(
        phase,
        (route,),
        "fallback",
        f"the default {routes[0]} needs {variables}, which is not set; {provider} is "
        f"configured, so its model for the {phase} is used",
    )


def phase_routes(
    phase: str, job_routes: Mapping[str, list[str]], settings: Settings, configured: set[str]
) -> list[Route]:
    """The routes to try for a phase, in order (see `resolve_routes`)."""
    return list(resolve_routes(phase, job_routes, settings, configured).routes)


@dataclass(frozen=True)
class ProviderSource:
    """Where a provider's key and base URL come from: the environment (which wins) or the
    secret store (entered in Settings)."""

    name: str
    key_source: str | None  # the variable it was found in, "settings", or None
    base_url: str  # as given, possibly with credentials: never shown as it is
    stored_key_ignored: bool  # a stored key that the environment's overrides


def provider_sources(env: Mapping[str, str], stored: Mapping[str, str]) -> list[ProviderSource]:
    sources = []
    for provider, variables in KEY_VARIABLES.items():
        found = next((v for v in variables if env.get(v, "").strip()), None)
        stored_key = stored.get(provider_key(provider), "").strip()
        if found:
            base = next((env[v] for v in BASE_URL_VARIABLES[provider] if env.get(v)), "")
            sources.append(ProviderSource(provider, found, base, bool(stored_key)))
        elif stored_key:
            base = stored.get(provider_base_url(provider), "")
            sources.append(ProviderSource(provider, "settings", base, False))
        else:
            sources.append(ProviderSource(provider, None, "", False))
    return sources


def effective_environment(env: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """`env` with the stored keys (and base URLs) of the providers it has no key for, under
    the providers' own variables, so that the SDK adapters read them the one way."""
    merged = dict(env)
    for source in provider_sources(env, stored):
        if source.key_source == "settings":
            merged[KEY_VARIABLES[source.name][0]] = stored[provider_key(source.name)].strip()
            for variable in BASE_URL_VARIABLES[source.name]:
                merged.pop(variable, None)
            if source.base_url:
                merged[BASE_URL_VARIABLES[source.name][0]] = source.base_url
    return merged


def routing_summary(
    settings: Settings, env: Mapping[str, str], stored: Mapping[str, str]
) -> list[str]:
    """What is in force, in a few lines: where each provider's key comes from, and each
    phase's models with why (for the stack's start-up line and `vdo doctor`)."""
    sources = [s for s in provider_sources(env, stored) if s.key_source]
    configured = {s.name for s in sources}
    if not configured:
        return [
            "no AI provider configured: every phase uses the built-in scripted model (demo "
            f"jobs only); to run other jobs, {where_keys_go()}"
        ]
    keys = ", ".join(
        f"{s.name} from {'Settings' if s.key_source == 'settings' else s.key_source}"
        + (f" at {display_url(s.base_url)}" if s.base_url else "")
        for s in sources
    )
    lines = [f"model providers: {keys}"]
    for phase in AI_PHASES:
        try:
            routing = resolve_routes(phase, {}, settings, configured)
        except StepFailure as error:
            lines.append(f"{phase}: unusable: {error}")
            continue
        lines.append(f"{phase}: {' → '.join(str(r) for r in routing.routes)} ({routing.why})")
    return lines


class Models:
    """One per AI phase service process."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.base_env = provider_environment(environ)
        self.stored: dict[str, str] = {}
        self.secrets: SecretStore | None = None
        self.env = dict(self.base_env)
        self.configured = set(configured_providers(self.env))
        self.pricing = Pricing.from_settings(settings)
        self.daily = DailySpend()
        self._clients: dict[str, ModelClient] = {}
        self._retired: list[ModelClient] = []
        self.router = Router(self.client, settings)
        self._log_configuration()

    def _log_configuration(self) -> None:
        if self.configured:
            log.info("model providers configured", providers=sorted(self.configured))
        else:
            log.info("no model provider configured: using the built-in scripted model")

    def use_secrets(self, secrets: SecretStore) -> None:
        """Take provider keys from the secret store too (the environment's win)."""
        self.secrets = secrets
        self.refresh()

    def refresh(self) -> bool:
        """Read the stored keys again; True when what the providers are given changed (the
        clients of changed providers are made again at their next use)."""
        if self.secrets is None:
            return False
        try:
            stored = self.secrets.read(PROVIDER_PREFIX)
        except Exception as error:
            log.warning("could not read the stored provider keys", error=repr(error))
            return False
        env = effective_environment(self.base_env, stored)
        if env == self.env:
            self.stored = stored
            return False
        for provider in list(self._clients):
            if provider != "scripted":
                self._retired.append(self._clients.pop(provider))
        self.stored, self.env = stored, env
        self.configured = set(configured_providers(env))
        self._log_configuration()
        return True

    def client(self, provider: str) -> ModelClient:
        if provider not in self._clients:
            self._clients[provider] = (
                ScriptedModelClient(delay_seconds=self.settings.scripted_delay_seconds)
                if provider == "scripted"
                else make_client(provider, self.env)
            )
        return self._clients[provider]

    def calls(self, ctx: StepContext, phase: str) -> StepCalls:
        self.refresh()
        routing = resolve_routes(phase, ctx.job.routes, self.settings, self.configured)
        if routing.source == "fallback":
            ctx.emit("model", f"[{phase}] {routing.why}\n")
        return StepCalls(
            ctx,
            phase=phase,
            routes=list(routing.routes),
            router=self.router,
            pricing=self.pricing,
            daily=self.daily,
        )

    def report(self, phase: str) -> dict[str, Any]:
        """What the phase's service says of its models, for the API (`vdo_kernel.reports`):
        each provider, whether it has a key and where it was found (a variable's name, or
        "settings" for the secret store; never the key), the base URL without credentials, and
        the routes the phase takes by default, with why."""
        providers = [
            {
                "name": source.name,
                "configured": source.key_source is not None,
                "key_source": source.key_source,
                "base_url": display_url(source.base_url) if source.base_url else None,
                "stored_key_ignored": source.stored_key_ignored,
            }
            for source in provider_sources(self.base_env, self.stored)
        ]
        try:
            routing = resolve_routes(phase, {}, self.settings, self.configured)
            routes, source, why, problem = (
                [str(r) for r in routing.routes],
                routing.source,
                routing.why,
                None,
            )
        except StepFailure as error:
            routes, source, why, problem = [], "none", "", str(error)
        return {
            "phase": phase,
            "providers": providers,
            "routes": routes,
            "source": source,
            "why": why,
            "scripted": not self.configured,
            "problem": problem,
        }

    async def serve(self, phase: str, up: Started) -> None:
        """While the service runs: keep its report current (at start, and each time the stored
        keys change) and answer requests to try a provider's key (`PROVIDER_TEST`)."""
        self.use_secrets(SecretStore.open(up.store.connection, self.settings.secret_key_file))
        replicas = self.settings.stream_replicas

        async def publish() -> None:
            try:
                await publish_report(up.js, phase, self.report(phase), replicas=replicas)
            except Exception as error:
                log.warning("could not publish the service's report", error=repr(error))

        async def changed(_msg: Msg) -> None:
            await asyncio.to_thread(self.refresh)
            await publish()

        async def test(msg: Msg) -> None:
            answer = await self.try_provider(msg.data)
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps(answer).encode())

        await publish()
        subscriptions = [
            await up.nc.subscribe(SECRETS_CHANGED, cb=changed),
            await up.nc.subscribe(PROVIDER_TEST, queue=PROVIDER_TEST_QUEUE, cb=test),
        ]
        try:
            await up.stop.wait()
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def try_provider(self, request: bytes) -> dict[str, Any]:
        """One tiny request to a provider with the key it has now: its answer or its error."""
        try:
            asked = json.loads(request)
            provider = str(asked["provider"])
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "the request names no provider"}
        if provider not in PROVIDER_MODELS:
            return {"ok": False, "provider": provider, "error": f"unknown provider {provider!r}"}
        await asyncio.to_thread(self.refresh)
        source = next(s for s in provider_sources(self.base_env, self.stored) if s.name == provider)
        model = str(asked.get("model") or TEST_MODELS[provider])
        answer: dict[str, Any] = {
            "ok": False,
            "provider": provider,
            "model": model,
            "key_source": source.key_source,
            "answer": "",
            "error": None,
            "latency_ms": None,
        }
        if source.key_source is None:
            answer["error"] = f"{provider} has no key: {where_keys_go([provider])}"
            return answer
        started = time.monotonic()
        client: ModelClient | None = None
        try:
            client = make_client(provider, self.env, timeout=PROVIDER_TEST_SECONDS)
            async with asyncio.timeout(PROVIDER_TEST_SECONDS):
                reply = await client.complete(
                    model,
                    ModelRequest(
                        phase="test",
                        system="",
                        messages=(Message("user", "Reply with the single word OK."),),
                        max_output_tokens=PROVIDER_TEST_TOKENS,
                    ),
                )
            answer.update(ok=True, answer=reply.text.strip()[:200], model=reply.model or model)
        except ProviderError as error:
            answer["error"] = str(error)[:500]
        except TimeoutError:
            answer["error"] = f"{provider} gave no answer within {PROVIDER_TEST_SECONDS:g}s"
        finally:
            answer["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
        return answer

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
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
