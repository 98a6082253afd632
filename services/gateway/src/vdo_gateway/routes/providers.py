"""The model providers: which the AI phases run with and why, and (for admins) the keys and
base URLs entered in Settings.

The effective routes come from what each AI phase's service reports (`vdo_kernel.reports`):
only they hold the keys of the environment. Keys entered here go into the secret store
(`vdo_kernel.secrets`: encrypted, outside the event store and backups); the AI services are told
at once and use them for the next step, no restart. No key is ever answered: only where it
comes from and, for a stored one, its last four characters.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path

from vdo_gateway.auth import AdminDep, PrincipalDep, require_admin
from vdo_gateway.deps import ResourcesDep
from vdo_gateway.models import (
    ErrorPublic,
    ModelDefaultsPublic,
    PhaseDefaultPublic,
    PhaseModelsPublic,
    ProviderKeyIn,
    ProviderPublic,
    ProvidersPublic,
    ProviderTestPublic,
)
from vdo_gateway.resources import NoAnswerError, Resources
from vdo_kernel import logs
from vdo_kernel.domain import AI_PHASES, MODEL_PROVIDERS
from vdo_kernel.reports import read_reports
from vdo_kernel.secrets import (
    PROVIDER_PREFIX,
    SecretInfo,
    display_url,
    provider_base_url,
    provider_key,
)
from vdo_kernel.subjects import PROVIDER_TEST, SECRETS_CHANGED

log = logs.get(__name__)

router = APIRouter(tags=["providers"])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

READ_TIMEOUT_SECONDS = 10.0
# The AI service tries the key for up to 30 s; a little more for the round trip.
TEST_TIMEOUT_SECONDS = 40.0
PROVIDERS = tuple(p for p in MODEL_PROVIDERS if p != "scripted")
ProviderName = Annotated[
    str, Path(description="anthropic, openai or google", pattern="^[a-z]{1,20}$")
]
ADMIN = "\n\nAn admin endpoint."
# Of the stored secrets: what may be shown of each, and the base URLs without credentials.
Stored = tuple[dict[str, SecretInfo], dict[str, str]]
_UNREACHABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorPublic, "description": "NATS is not reachable"}
}


async def _reports(resources: Resources) -> dict[str, dict[str, Any]]:
    js = resources.bus.jetstream()
    if js is None:
        raise HTTPException(status_code=503, detail="NATS is not reachable: try again shortly")
    try:
        return await asyncio.wait_for(read_reports(js), timeout=READ_TIMEOUT_SECONDS)
    except Exception as error:
        raise HTTPException(
            status_code=503, detail=f"the services' reports cannot be read: {error}"
        ) from None


@router.get(
    "/providers",
    responses=_UNREACHABLE,
    description="What a new job gets unless it chooses otherwise: each AI phase's models and "
    "why (the deployment's default, a setting, or a configured provider's model when the "
    "default's provider has no key), whether only the built-in scripted model is there, and the "
    "default budget and attempts. No key or key source is shown.",
)
async def get_model_defaults(
    resources: ResourcesDep, _principal: PrincipalDep
) -> ModelDefaultsPublic:
    view = providers_view(await _reports(resources), ({}, {}))
    settings = resources.settings
    return ModelDefaultsPublic(
        phases=[
            PhaseDefaultPublic(
                phase=p.phase, routes=p.routes, source=p.source, why=p.why, problem=p.problem
            )
            for p in view.phases
        ],
        scripted=view.scripted,
        providers=[p.name for p in view.providers if p.configured],
        budget_usd=settings.default_budget_usd,
        max_attempts=settings.default_max_attempts,
        max_output_tokens=settings.model_max_output_tokens,
        reported_at=view.reported_at,
    )


@admin.get(
    "/providers",
    responses=_UNREACHABLE,
    description="The model providers each AI phase can use and the routes it takes, with why, "
    "as the phase's service reported them (at its start, and again whenever a key is added or "
    "removed here; a phase whose service has not started yet is listed with `reported_at` "
    "null). A provider is configured when some phase has its key; the key itself is never "
    "shown, only the variable it was found in, or for a key entered in Settings its last four "
    "characters." + ADMIN,
)
async def get_providers(resources: ResourcesDep) -> ProvidersPublic:
    reports = await _reports(resources)
    stored = await asyncio.to_thread(_stored, resources, PROVIDER_PREFIX)
    return providers_view(reports, stored)


def _stored(resources: Resources, prefix: str) -> Stored:
    """What may be shown of the stored keys and base URLs under `prefix`."""
    infos = resources.secrets.describe(prefix)
    urls = {
        name: display_url(value)
        for name, value in resources.secrets.read(prefix).items()
        if name.endswith("/base_url")
    }
    return infos, urls


def _check_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise HTTPException(
            status_code=404, detail=f"no provider {name!r} (known: {', '.join(PROVIDERS)})"
        )
    return name


async def _announce(resources: Resources) -> None:
    """Tell the AI services that the stored keys changed (they also read them at each step)."""
    client = resources.bus.client
    if client is None or not client.is_connected:
        log.warning("NATS unreachable: the AI services take the change at their next step")
        return
    try:
        await client.publish(SECRETS_CHANGED, b"{}")
        await client.flush(timeout=5)
    except Exception as error:
        log.warning("could not announce the change of keys", error=repr(error))


@admin.put(
    "/providers/{provider}",
    responses={
        404: {"model": ErrorPublic, "description": "no such provider"},
        422: {"model": ErrorPublic, "description": "a key or address that cannot be used"},
    },
    description="Enter a provider's API key and/or base URL. The key is kept encrypted in the "
    "deployment's secret store (never in the event log or a backup), never answered again "
    "(only its last four characters), and used by the AI services from their next step, with "
    "no restart. A key set in the environment (ANTHROPIC_API_KEY, …) wins over one entered "
    "here. A field left out is unchanged; an empty `base_url` removes it." + ADMIN,
)
async def put_provider(
    provider: ProviderName, body: ProviderKeyIn, resources: ResourcesDep, principal: AdminDep
) -> ProviderPublic:
    _check_provider(provider)
    if body.api_key is None and body.base_url is None:
        raise HTTPException(status_code=422, detail="give api_key, base_url or both")
    secrets = resources.secrets

    def save() -> None:
        if body.api_key is not None:
            secrets.put(provider_key(provider), body.api_key.get_secret_value(), by=principal.name)
        if body.base_url == "":
            secrets.delete(provider_base_url(provider))
        elif body.base_url is not None:
            secrets.put(provider_base_url(provider), body.base_url, by=principal.name)

    await asyncio.to_thread(save)
    log.info("provider settings changed", provider=provider, by=principal.name)
    await _announce(resources)
    stored = await asyncio.to_thread(_stored, resources, f"{PROVIDER_PREFIX}{provider}/")
    view = _stored_view(provider, stored)
    # Whether the environment's key wins, as the AI services said (they alone see it).
    try:
        reports = await _reports(resources)
    except HTTPException:
        reports = {}
    environment = next(
        (
            entry.key_source
            for phase in providers_view(reports, stored).phases
            for entry in phase.providers
            if entry.name == provider and entry.key_source not in (None, "settings")
        ),
        None,
    )
    if environment is not None:
        view = view.model_copy(update={"key_source": environment, "environment_wins": True})
    return view


@admin.delete(
    "/providers/{provider}",
    status_code=204,
    responses={404: {"model": ErrorPublic, "description": "no such provider"}},
    description="Remove the key and base URL entered in Settings for a provider (nothing to "
    "remove is no error). A key set in the environment is not touched (remove it there)." + ADMIN,
)
async def delete_provider(
    provider: ProviderName, resources: ResourcesDep, principal: AdminDep
) -> None:
    _check_provider(provider)
    removed = await asyncio.to_thread(
        resources.secrets.delete, provider_key(provider), provider_base_url(provider)
    )
    if removed:
        log.info("provider settings removed", provider=provider, by=principal.name)
        await _announce(resources)


@admin.post(
    "/providers/{provider}/test",
    responses={
        404: {"model": ErrorPublic, "description": "no such provider"},
        503: {"model": ErrorPublic, "description": "no AI service is running to try it"},
        504: {"model": ErrorPublic, "description": "no answer in time"},
    },
    description="Send one tiny request (a few tokens) to the provider with the key the AI "
    "services have for it now, and answer what it said or its error. `ok` false with an "
    "`error` is an answer too: a wrong key, an unknown model, an unreachable address." + ADMIN,
)
async def test_provider(provider: ProviderName, resources: ResourcesDep) -> ProviderTestPublic:
    _check_provider(provider)
    try:
        answer = await resources.bus.request(
            PROVIDER_TEST,
            json.dumps({"provider": provider}).encode(),
            wait_seconds=TEST_TIMEOUT_SECONDS,
            who="AI service (planner, builder, tester or reviewer)",
        )
    except NoAnswerError as exc:
        raise HTTPException(
            status_code=504 if exc.timed_out else 503, detail=f"the key was not tried: {exc}"
        ) from None
    try:
        raw = json.loads(answer)
        return ProviderTestPublic(
            provider=provider,
            ok=bool(raw.get("ok")),
            model=_text(raw.get("model")),
            key_source=_text(raw.get("key_source")),
            answer=str(raw.get("answer") or ""),
            error=_text(raw.get("error")),
            latency_ms=raw.get("latency_ms") if isinstance(raw.get("latency_ms"), float) else None,
        )
    except (ValueError, AttributeError):
        raise HTTPException(status_code=500, detail="the AI service's answer is not one") from None


def _stored_view(name: str, stored: Stored) -> ProviderPublic:
    infos, urls = stored
    key = infos.get(provider_key(name))
    base = infos.get(provider_base_url(name))
    return ProviderPublic(
        name=name,
        configured=key is not None,
        key_source="settings" if key is not None else None,
        base_url=None,
        phases=[],
        stored_key=f"…{key.last4}" if key is not None else None,
        stored_base_url=urls.get(provider_base_url(name)),
        stored_at=key.updated_at if key else (base.updated_at if base else None),
        stored_by=key.updated_by if key else (base.updated_by if base else None),
    )


def providers_view(reports: dict[str, dict[str, Any]], stored: Stored) -> ProvidersPublic:
    phases = [phase_view(phase, reports.get(phase)) for phase in AI_PHASES]
    providers = []
    for name in PROVIDERS:
        seen = [
            (phase.phase, entry)
            for phase in phases
            for entry in phase.providers
            if entry.name == name and entry.configured
        ]
        mine = _stored_view(name, stored)
        ignored = any(
            entry.environment_wins
            for phase in phases
            for entry in phase.providers
            if entry.name == name
        )
        providers.append(
            ProviderPublic(
                name=name,
                configured=bool(seen),
                key_source=seen[0][1].key_source if seen else None,
                base_url=seen[0][1].base_url if seen else None,
                phases=[phase for phase, _ in seen],
                stored_key=mine.stored_key,
                stored_base_url=mine.stored_base_url,
                stored_at=mine.stored_at,
                stored_by=mine.stored_by,
                environment_wins=ignored,
            )
        )
    times = [p.reported_at for p in phases if p.reported_at]
    return ProvidersPublic(
        providers=providers,
        phases=phases,
        scripted=all(p.scripted for p in phases if p.reported_at) and bool(times),
        reported_at=max(times) if times else None,
    )


def phase_view(phase: str, report: dict[str, Any] | None) -> PhaseModelsPublic:
    if report is None:
        return PhaseModelsPublic(phase=phase)
    providers = []
    for raw in report.get("providers") or []:
        if not isinstance(raw, dict) or raw.get("name") not in MODEL_PROVIDERS:
            continue
        providers.append(
            ProviderPublic(
                name=str(raw["name"]),
                configured=bool(raw.get("configured")),
                key_source=_text(raw.get("key_source")),
                base_url=_text(raw.get("base_url")),
                phases=[phase] if raw.get("configured") else [],
                environment_wins=bool(raw.get("stored_key_ignored")),
            )
        )
    return PhaseModelsPublic(
        phase=phase,
        routes=[str(r) for r in report.get("routes") or [] if isinstance(r, str)],
        source=_text(report.get("source")),
        why=_text(report.get("why")),
        scripted=bool(report.get("scripted")),
        problem=_text(report.get("problem")),
        providers=providers,
        reported_at=_text(report.get("reported_at")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
