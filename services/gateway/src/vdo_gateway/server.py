"""Serving the API with uvicorn, on the host and port from the settings."""

from __future__ import annotations

import uvicorn

from vdo_gateway.app import create_app
from vdo_kernel import logs
from vdo_kernel.settings import Settings


def serve(settings: Settings) -> None:
    logs.configure("gateway", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        # Live updates send the same frames to every client: compressed, each connection would
        # deflate each frame again (its own zlib context), and the CPU would grow with them.
        ws_per_message_deflate=False,
    )
