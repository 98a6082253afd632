"""The gateway's composition root: `create_app(settings)` wires the routes, the error answers,
the body limit and the resources opened for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from vdo_gateway import errors
from vdo_gateway.binding import require_loopback
from vdo_gateway.limits import BodySizeLimit
from vdo_gateway.resources import Resources
from vdo_gateway.routes import admin, health, jobs, stats
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.settings import Settings

API_PREFIX = "/api"


def create_app(
    settings: Settings | None = None, gateway_settings: GatewaySettings | None = None
) -> FastAPI:
    """The API app. Refuses (UnsafeBindError) settings whose host is not a loopback address,
    and needs the store and bus URLs set."""
    settings = settings or Settings()
    gateway_settings = gateway_settings or GatewaySettings()
    require_loopback(settings.host)
    settings.require_urls()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        app.state.resources = resources
        try:
            yield
        finally:
            await resources.close()

    app = FastAPI(
        title="Vitso Dev Orchestrator",
        summary="Submit software jobs and follow them through plan, build, test, review and run.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    errors.install(app)
    bundle_uploads = {
        f"{API_PREFIX}{admin.router.prefix}{path}": gateway_settings.max_bundle_bytes
        for path in admin.UPLOAD_PATHS
    }
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, per_path=bundle_uploads)
    for router in (health.router, jobs.router, stats.router, admin.router):
        app.include_router(router, prefix=API_PREFIX)
    return app
