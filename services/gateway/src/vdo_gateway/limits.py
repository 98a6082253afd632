"""The request body size limit, enforced while the body arrives rather than after.

A declared ``Content-Length`` over the limit is answered with 413 before any of the body is
read; a body without one (chunked) is counted as it streams in and cut off at the limit. A few
paths (the bundle uploads) have a limit of their own.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            problem = self._check_declared(declared, limit)
            if problem is not None:
                status, detail = problem
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the route's body read, so the app's error handling turns it
                    # into the JSON answer before anything else is done with the request.
                    raise HTTPException(status_code=413, detail=too_large(limit))
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    def _check_declared(declared: str, limit: int) -> tuple[int, str] | None:
        try:
            length = int(declared)
        except ValueError:
            return 400, "Content-Length is not a number"
        if length < 0:
            return 400, "Content-Length is negative"
        if length > limit:
            return 413, too_large(limit)
        return None
