"""Every error the API answers, as JSON ``{"detail": "..."}`` with a message a person can act
on. Validation errors also list each problem under ``errors`` (never echoing the input back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vdo_kernel import logs
from vdo_kernel.domain import DomainError
from vdo_kernel.readmodels import OutdatedReadModelsError
from vdo_kernel.store import JobNotFoundError

log = logs.get(__name__)

# A key named in an error is cut to this many characters.
KEY_SHOWN = 40
UNAVAILABLE = "the database is unavailable; try again shortly"
REBUILDING = (
    "the read models are being rebuilt for this version of VDO (the projector does it when it "
    "starts); try again shortly"
)


def describe(errors: Sequence[Any]) -> tuple[int, str]:
    """The status and one readable sentence for a list of validation errors."""
    messages: list[str] = []
    status = 422
    for error in errors:
        kind = str(error.get("type", ""))
        loc = [str(part) for part in error.get("loc", ())]
        where, path = (loc[0], ".".join(loc[1:])) if loc else ("", "")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            at = f" at character {path}" if path else ""
            return 400, f"request body is not valid JSON: {reason}{at}"
        if where == "body" and not path:
            if kind == "missing":
                messages.append("request body is required: a JSON object")
            else:
                messages.append(
                    "request body must be a JSON object (sent as Content-Type: application/json)"
                )
        elif kind == "extra_forbidden":
            messages.append(f"unknown field '{path}'")
        elif len(loc) > 2 and loc[-1] == "[key]":
            # A mapping's key that is not one of those allowed (a phase of `routes`, say).
            parent, key = ".".join(loc[1:-2]), loc[-2]
            shown = key if len(key) <= KEY_SHOWN else key[: KEY_SHOWN - 1] + "…"
            message = str(error.get("msg", "invalid"))
            messages.append(
                f"{_place(where, parent)} has a key that is not allowed ('{shown}'): {message}"
            )
        elif kind == "missing":
            messages.append(f"{_place(where, path)} is required")
        else:
            # Pydantic prefixes a validator's own message; the message says enough alone.
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            messages.append(f"{_place(where, path)}: {message}")
    return status, "; ".join(messages) or "invalid request"


def _place(where: str, path: str) -> str:
    if where == "body":
        return f"field '{path}'"
    if where in ("query", "path", "header"):
        return f"{where} parameter '{path}'"
    return path or where


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        status, detail = describe(error.errors())
        problems = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        return JSONResponse({"detail": detail, "errors": problems}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return JSONResponse(
            {"detail": str(error.detail)},
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(DomainError)
    async def refused(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(OutdatedReadModelsError)
    async def rebuilding(request: Request, error: Exception) -> JSONResponse:
        log.warning("read models of another version", path=request.url.path, error=str(error))
        return JSONResponse({"detail": REBUILDING}, status_code=503)

    @app.exception_handler(JobNotFoundError)
    async def not_found(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"job {error} not found"}, status_code=404)

    async def unavailable(request: Request, error: Exception) -> JSONResponse:
        log.warning("database error", path=request.url.path, error=repr(error))
        return JSONResponse({"detail": UNAVAILABLE}, status_code=503)

    for kind in (psycopg.Error, psycopg_pool.PoolTimeout, PersistenceError):
        app.add_exception_handler(kind, unavailable)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)
