"""Admin: which model providers the AI phases run with, as each phase's service reported it
when it started (`vdo_kernel.reports`). The gateway holds no model key and reads none: keys
reach the four AI services only, so only they can say which are set. No key is ever shown,
only the name of the variable it was found in."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from vdo_gateway.auth import require_admin
from vdo_gateway.deps import ResourcesDep
from vdo_gateway.models import ErrorPublic, PhaseModelsPublic, ProviderPublic, ProvidersPublic
from vdo_kernel.domain import AI_PHASES, MODEL_PROVIDERS
from vdo_kernel.reports import read_reports

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

READ_TIMEOUT_SECONDS = 10.0


@router.get(
    "/providers",
    responses={503: {"model": ErrorPublic, "description": "NATS is not reachable"}},
    description="The model providers each AI phase can use and the routes it takes, as the "
    "phase's service reported them at its start (a phase whose service has not started yet is "
    "listed with `reported_at` null). A provider is configured when some phase has its key; the "
    "key itself is never shown, only the variable it was found in.\n\nAn admin endpoint.",
)
async def get_providers(resources: ResourcesDep) -> ProvidersPublic:
    js = resources.bus.jetstream()
    if js is None:
        raise HTTPException(status_code=503, detail="NATS is not reachable: try again shortly")
    try:
        reports = await asyncio.wait_for(read_reports(js), timeout=READ_TIMEOUT_SECONDS)
    except Exception as error:
        raise HTTPException(
            status_code=503, detail=f"the services' reports cannot be read: {error}"
        ) from None
    return providers_view(reports)


def providers_view(reports: dict[str, dict[str, Any]]) -> ProvidersPublic:
    phases = [phase_view(phase, reports.get(phase)) for phase in AI_PHASES]
    providers = []
    for name in MODEL_PROVIDERS:
        if name == "scripted":
            continue
        seen = [
            (phase.phase, entry)
            for phase in phases
            for entry in phase.providers
            if entry.name == name and entry.configured
        ]
        providers.append(
            ProviderPublic(
                name=name,
                configured=bool(seen),
                key_source=seen[0][1].key_source if seen else None,
                base_url=seen[0][1].base_url if seen else None,
                phases=[phase for phase, _ in seen],
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
            )
        )
    return PhaseModelsPublic(
        phase=phase,
        routes=[str(r) for r in report.get("routes") or [] if isinstance(r, str)],
        scripted=bool(report.get("scripted")),
        problem=_text(report.get("problem")),
        providers=providers,
        reported_at=_text(report.get("reported_at")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
