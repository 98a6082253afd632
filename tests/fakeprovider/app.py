"""The fake provider's HTTP application: the three providers' endpoints and the control API."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .script import (
    PROVIDERS,
    Bill,
    Fault,
    RecordedRequest,
    Reply,
    Script,
    answer_from_json,
    estimate_tokens,
)
from .wire import WIRES, Outcome, Tokens, Wire, split

DEFAULT_MODELS: dict[str, list[str]] = {
    "anthropic": ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"],
    "openai": ["gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"],
    "google": ["gemini-2.5-pro", "gemini-2.5-flash"],
}


class StreamCut(Exception):
    """Raised mid-response to make the server drop the connection (a scripted fault)."""


class _QuietCuts(logging.Filter):
    """Drops the server's traceback for a scripted cut; it is the point, not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, StreamCut):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_QuietCuts())


class _CutBody(Response):
    """Announces a full JSON body, sends part of it, then drops the connection."""

    def __init__(self, body: dict[str, Any], status_code: int = 200) -> None:
        self._full = json.dumps(body).encode()
        super().__init__(status_code=status_code, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._full)).encode()),
        ]
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        half = self._full[: len(self._full) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise StreamCut


@dataclass(frozen=True)
class _Stop:
    """Where a scripted stream stops: after so many pieces, with an error event (`ending`) or,
    when there is none, by dropping the connection."""

    after_deltas: int
    ending: bytes | None


def _provider_of(request: Request) -> str:
    """`GET /v1/models` is shared by three providers; their SDKs' headers tell them apart."""
    headers = request.headers
    if "anthropic-version" in headers:
        return "anthropic"
    if (
        "x-goog-api-key" in headers
        or "x-goog-api-client" in headers
        or "key" in request.query_params
    ):
        return "google"
    return "openai"


def _key_of(provider: str, request: Request) -> str:
    headers = request.headers
    bearer = headers.get("authorization", "")
    bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
    if provider == "anthropic":
        return headers.get("x-api-key", "") or bearer
    if provider == "google":
        return headers.get("x-goog-api-key", "") or request.query_params.get("key", "")
    return bearer


def _checked(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A control endpoint that answers 400 with the reason for a request it cannot use."""

    async def checked(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return checked


class FakeApp:
    """The ASGI application. `script` is shared with whoever drives the server."""

    def __init__(self, script: Script, models: Mapping[str, list[str]] | None = None) -> None:
        self.script = script
        self.models = {**DEFAULT_MODELS, **(models or {})}
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self.anthropic_messages, methods=["POST"]),
                Route("/v1/chat/completions", self.openai_chat, methods=["POST"]),
                Route("/{version}/models", self.list_models, methods=["GET"]),
                Route("/{version}/models/{rest:path}", self.google_generate, methods=["POST"]),
                Route("/_control/script", _checked(self.control_script), methods=["POST"]),
                Route("/_control/default", _checked(self.control_default), methods=["POST"]),
                Route("/_control/keys", _checked(self.control_keys), methods=["POST"]),
                Route("/_control/requests", self.control_requests, methods=["GET"]),
                Route("/_control/reset", self.control_reset, methods=["POST"]),
                Route("/_control/health", self.control_health, methods=["GET"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # ---- provider endpoints ------------------------------------------------------------

    async def anthropic_messages(self, request: Request) -> Response:
        return await self._complete("anthropic", request, None, None)

    async def openai_chat(self, request: Request) -> Response:
        return await self._complete("openai", request, None, None)

    async def google_generate(self, request: Request) -> Response:
        model, _, method = request.path_params["rest"].rpartition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return JSONResponse(WIRES["google"].error(404, "unknown method", None), 404)
        return await self._complete("google", request, model, method == "streamGenerateContent")

    async def list_models(self, request: Request) -> Response:
        provider = _provider_of(request)
        wire = WIRES[provider]
        recorded = self._record(provider, "", request, None, stream=False)
        if not self.script.key_accepted(provider, _key_of(provider, request)):
            return self._unauthorized(provider, recorded)
        recorded.status = 200
        return JSONResponse(wire.models(self.models.get(provider, [])))

    async def _complete(
        self, provider: str, request: Request, model: str | None, stream: bool | None
    ) -> Response:
        wire = WIRES[provider]
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse(wire.error(400, "the request body is not a JSON object", None), 400)
        model = model or str(body.get("model", ""))
        stream = bool(body.get("stream")) if stream is None else stream
        recorded = self._record(provider, model, request, body, stream=stream)
        if not self.script.key_accepted(provider, _key_of(provider, request)):
            return self._unauthorized(provider, recorded)

        answer = self.script.next_answer(provider, model, body)
        if isinstance(answer, Fault) and answer.kind in ("status", "stream_error"):
            status = 503 if answer.status == 529 and provider != "anthropic" else answer.status
            error = wire.error(status, answer.message or "fault", answer.retry_after)
            if answer.kind == "stream_error" and stream:
                # The reply starts (200), then an error event ends it part way.
                recorded.status = 200
                outcome = self._outcome(model, body, answer)
                ending = _Stop(answer.after_deltas, wire.stream_error(error))
                return StreamingResponse(
                    self._send(wire, outcome, body, answer, ending, recorded),
                    media_type="text/event-stream",
                )
            headers = {}
            if answer.retry_after is not None:
                headers["retry-after"] = f"{answer.retry_after:g}"
            recorded.status = status
            return JSONResponse(error, status, headers=headers)
        if isinstance(answer, Fault) and answer.kind == "timeout":
            await self._hang(request, answer.seconds)
            recorded.status = 504
            return JSONResponse(wire.error(504, "deadline exceeded", None), 504)

        outcome = self._outcome(model, body, answer)
        recorded.status = 200
        cut = isinstance(answer, Fault) and answer.kind == "stream_cut"
        if not stream:
            tokens = outcome.tokens
            output = tokens.output // 2 if cut else tokens.output
            recorded.billed = Bill(tokens.input, output, tokens.cached, tokens.cache_write)
            return _CutBody(wire.body(outcome)) if cut else JSONResponse(wire.body(outcome))
        stop = _Stop(answer.after_deltas, None) if isinstance(answer, Fault) and cut else None
        return StreamingResponse(
            self._send(wire, outcome, body, answer, stop, recorded),
            media_type="text/event-stream",
        )

    def _outcome(self, model: str, body: Any, answer: Reply | Fault) -> Outcome:
        if isinstance(answer, Fault):
            pieces = max(4, answer.after_deltas + 2)
            text = answer.text
            tokens = Tokens(estimate_tokens(json.dumps(body)), estimate_tokens(text))
            return Outcome(model, split(text, pieces), tokens, refused=answer.kind == "refusal")
        tokens = Tokens(
            input=(
                answer.input_tokens
                if answer.input_tokens is not None
                else estimate_tokens(json.dumps(body))
            ),
            output=(
                answer.output_tokens
                if answer.output_tokens is not None
                else estimate_tokens(answer.text)
            ),
            cached=answer.cached_tokens,
            cache_write=answer.cache_write_tokens,
        )
        return Outcome(
            answer.model or model,
            split(answer.text, answer.deltas),
            tokens,
            stop_reason=answer.stop_reason,
            truncated=answer.truncated,
        )

    async def _send(
        self,
        wire: Wire,
        outcome: Outcome,
        body: Any,
        answer: Reply | Fault,
        stop: _Stop | None,
        recorded: RecordedRequest,
    ) -> AsyncIterator[bytes]:
        frames = wire.frames(outcome, body)
        pieces = sum(1 for frame in frames if frame.text)
        tokens = outcome.tokens
        # The request was taken: its prompt is billed, and its output as it is sent.
        recorded.billed = Bill(tokens.input, 0, tokens.cached, tokens.cache_write)
        ping = wire.ping() if answer.ping_every > 0 else None
        sent = 0
        if answer.pause and answer.pause_after is None:
            async for beat in self._wait(answer.pause, ping, answer.ping_every):
                yield beat
        for frame in frames:
            if frame.text:
                if stop is not None and sent >= stop.after_deltas:
                    if stop.ending is None:
                        raise StreamCut
                    yield stop.ending
                    return
                if answer.pause and answer.pause_after == sent:
                    async for beat in self._wait(answer.pause, ping, answer.ping_every):
                        yield beat
                if answer.delta_delay:
                    async for beat in self._wait(answer.delta_delay, ping, answer.ping_every):
                        yield beat
                recorded.delta_sent_at.append(time.perf_counter())
                recorded.text_sent += outcome.pieces[sent] if sent < len(outcome.pieces) else ""
                sent += 1
                recorded.billed.output = math.ceil(tokens.output * sent / pieces)
            yield frame.data
        recorded.billed.output = tokens.output

    @staticmethod
    async def _wait(seconds: float, ping: bytes | None, every: float) -> AsyncIterator[bytes]:
        """Send nothing for `seconds`, but for a keep-alive every `every` seconds (if any)."""
        if ping is None:
            await asyncio.sleep(seconds)
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(every, left))
            if end - time.monotonic() > 0:
                yield ping

    async def _hang(self, request: Request, seconds: float) -> None:
        """Answer nothing for `seconds`, unless the client gives up or the server stops."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.script.closing:
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.02)

    def _record(
        self, provider: str, model: str, request: Request, body: Any, *, stream: bool
    ) -> RecordedRequest:
        recorded = RecordedRequest(
            provider=provider,
            model=model,
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            stream=stream,
        )
        self.script.record(recorded)
        return recorded

    def _unauthorized(self, provider: str, recorded: RecordedRequest) -> Response:
        recorded.status = 401
        message = "missing or invalid API key"
        return JSONResponse(WIRES[provider].error(401, message, None), 401)

    # ---- control API -------------------------------------------------------------------

    async def control_script(self, request: Request) -> Response:
        data = await request.json()
        provider = data["provider"]
        answers = [answer_from_json(item) for item in data.get("items", [])]
        if data.get("replace"):
            self.script.clear_queue(provider)
        self.script.push(provider, *answers)
        return JSONResponse({"pending": self.script.pending(provider)})

    async def control_default(self, request: Request) -> Response:
        data = await request.json()
        provider = data.get("provider")
        providers = [provider] if provider else list(PROVIDERS)
        if data.get("reply") is None:
            for name in providers:
                self.script.set_responder(None, name)
        else:
            answer = answer_from_json({"reply": data["reply"]})

            def responder(provider: str, model: str, body: Any) -> Reply | Fault:
                return answer

            for name in providers:
                self.script.set_responder(responder, name)
        return JSONResponse({"ok": True})

    async def control_keys(self, request: Request) -> Response:
        data = await request.json()
        self.script.require_key(data["provider"], data.get("key"))
        return JSONResponse({"ok": True})

    async def control_requests(self, request: Request) -> Response:
        provider = request.query_params.get("provider")
        return JSONResponse([r.to_json() for r in self.script.requests(provider)])

    async def control_reset(self, request: Request) -> Response:
        self.script.reset()
        return JSONResponse({"ok": True})

    async def control_health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "providers": list(PROVIDERS)})
