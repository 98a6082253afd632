"""The gateway's composition root: `create_app(settings)` wires the routes, the error answers,
authentication (with its rate limit), CORS, the body limit, the resources opened for the
app's lifetime and the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from vdo_gateway import errors
from vdo_gateway.auth import Authentication, RateLimiter
from vdo_gateway.binding import require_safe_bind
from vdo_gateway.dashboard import dashboard_fallback
from vdo_gateway.limits import BodySizeLimit
from vdo_gateway.live import LiveHub
from vdo_gateway.resources import Resources
from vdo_gateway.routes import (
    accounts,
    admin,
    artifacts,
    control,
    health,
    joblogs,
    jobs,
    pipeline,
    plans,
    providers,
    stats,
    templates,
    ws,
)
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.settings import Settings

API_PREFIX = "/api"
# The one endpoint that answers without a token (with the API's schema and its docs page).
HEALTH_PATH = f"{API_PREFIX}/health"


def create_app(
    settings: Settings | None = None, gateway_settings: GatewaySettings | None = None
) -> FastAPI:
    """The API app. Refuses (UnsafeBindError) settings whose host is not a loopback address
    while authentication is off, and needs the store and bus URLs set."""
    settings = settings or Settings()
    gateway_settings = gateway_settings or GatewaySettings()
    require_safe_bind(settings.host, auth=settings.auth)
    _, database_url = settings.require_urls()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        app.state.resources = resources
        try:
            app.state.live = await LiveHub.open(
                resources.store,
                resources.bus,
                database_url,
                poll_seconds=gateway_settings.ws_poll_seconds,
            )
            try:
                yield
            finally:
                await app.state.live.close()
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
    app.state.gateway_settings = gateway_settings
    ws.hide_tokens_in_server_logs()
    errors.install(app)
    bundle_uploads = {
        f"{API_PREFIX}{admin.router.prefix}{path}": gateway_settings.max_bundle_bytes
        for path in admin.UPLOAD_PATHS
    }
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, per_path=bundle_uploads)
    # Outside the body limit: a caller without a valid token is answered before any of the
    # body is read.
    app.add_middleware(
        Authentication,
        prefix=API_PREFIX,
        public=frozenset(path for path in (HEALTH_PATH, app.openapi_url, app.docs_url) if path),
        limiter=RateLimiter(gateway_settings.rate_limit_per_minute),
    )
    origins = gateway_settings.cors_origin_list
    if origins:
        # Outermost, so that refusals (401, 429) carry the headers a browser needs to read them.
        # Without origins, no CORS headers at all: browsers let only the gateway's own origin
        # (the dashboard it serves) read its answers.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[
                "Location",
                "Retry-After",
                "X-VDO-Last-Position",
                # A download's name and version (a result's files and zip).
                "Content-Disposition",
                "ETag",
            ],
            max_age=600,
        )
    for router in (
        health.router,
        jobs.router,
        control.router,
        stats.router,
        admin.router,
        providers.router,
        providers.admin,
        accounts.router,
        ws.router,
        templates.router,
        artifacts.router,
        joblogs.router,
        plans.router,
        pipeline.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    # What no route matches: the dashboard's pages and files (never a path under /api).
    app.router.default = dashboard_fallback(gateway_settings.dashboard_dir, api_prefix=API_PREFIX)
    return app
