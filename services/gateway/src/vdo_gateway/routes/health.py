"""Health: is each part of the stack reachable, and how far behind the store are the relay
(what has been published) and the projector (what the read models show)?

Lag is reported, not judged harshly: a busy stack is briefly behind all the time. Only a part
that cannot be reached makes the answer 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from nats.js.errors import NotFoundError

from vdo_gateway.deps import ResourcesDep
from vdo_gateway.models import ComponentHealth, HealthPublic
from vdo_gateway.resources import Resources
from vdo_kernel import readmodels
from vdo_kernel.relay import last_published_position

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_SECONDS = 3.0
# More events than this behind the store counts as lagging (a degraded, not a down, stack).
LAG_TOLERANCE = 100


@router.get(
    "",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "a component is down"}},
)
async def get_health(resources: ResourcesDep) -> JSONResponse:
    database, store_position, projected = await _database(resources)
    nats, published = await _nats(resources)
    components = {
        "database": database,
        "nats": nats,
        "relay": _lag("relay", store_position, published),
        "projector": _lag("projector", store_position, projected),
    }
    health = HealthPublic(
        status="ok" if all(c.status == "ok" for c in components.values()) else "degraded",
        position=store_position,
        components=components,
    )
    down = any(c.status == "down" for c in components.values())
    return JSONResponse(health.model_dump(mode="json"), status_code=503 if down else 200)


async def _database(resources: Resources) -> tuple[ComponentHealth, int | None, int | None]:
    def check() -> tuple[int, int]:
        store_position = resources.store.max_position()
        with resources.read_pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
            return store_position, readmodels.projector_position(conn)

    try:
        store_position, projected = await asyncio.wait_for(
            asyncio.to_thread(check), timeout=CHECK_TIMEOUT_SECONDS
        )
    except Exception as error:
        return ComponentHealth(status="down", detail=_reason(error)), None, None
    return ComponentHealth(status="ok", position=store_position), store_position, projected


async def _nats(resources: Resources) -> tuple[ComponentHealth, int | None]:
    js = resources.bus.jetstream()
    if js is None:
        return ComponentHealth(status="down", detail="not connected"), None
    try:
        published = await asyncio.wait_for(
            last_published_position(js), timeout=CHECK_TIMEOUT_SECONDS
        )
    except NotFoundError:
        published = 0  # no stream yet: nothing was ever published
    except Exception as error:
        return ComponentHealth(status="down", detail=_reason(error)), None
    return ComponentHealth(status="ok"), published


def _lag(name: str, store_position: int | None, position: int | None) -> ComponentHealth:
    if store_position is None or position is None:
        return ComponentHealth(
            status="unknown", position=position, detail=f"cannot measure the {name}'s lag"
        )
    lag = max(store_position - position, 0)
    return ComponentHealth(
        status="ok" if lag <= LAG_TOLERANCE else "lagging", position=position, lag=lag
    )


def _reason(error: Any) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    return str(error) or type(error).__name__
