"""The three providers' wire formats: reply bodies, streamed events, errors and model lists.

Shapes follow the official SDKs' types (anthropic.types, openai.types.chat, google.genai.types)
and the providers' API references.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Tokens:
    input: int  # not read from the cache
    output: int
    cached: int = 0
    cache_write: int = 0


@dataclass(frozen=True)
class Frame:
    data: bytes
    text: bool = False  # carries a piece of the reply's text


@dataclass(frozen=True)
class Outcome:
    """What a reply says, whichever provider renders it."""

    model: str
    pieces: tuple[str, ...]
    tokens: Tokens
    stop_reason: str | None = None  # the provider's own value, when scripted
    refused: bool = False
    truncated: bool = False  # ended at the output limit

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Wire(Protocol):
    provider: str

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]: ...

    def body(self, outcome: Outcome) -> dict[str, Any]: ...

    def stream_error(self, error: dict[str, Any]) -> bytes:
        """An error sent inside a stream that has already begun."""
        ...

    def frames(self, outcome: Outcome, request: Any) -> list[Frame]: ...

    def models(self, names: list[str]) -> dict[str, Any]: ...

    def ping(self) -> bytes | None:
        """The keep-alive the provider sends while a stream is quiet, if it has one."""
        ...


def split(text: str, pieces: int) -> tuple[str, ...]:
    """`text` in `pieces` nearly equal parts (fewer when it is shorter)."""
    if not text:
        return ()
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    parts, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return tuple(parts)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


class AnthropicWire:
    provider = "anthropic"
    _ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        504: "timeout_error",
        529: "overloaded_error",
    }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind = self._ERROR_TYPES.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": _id("req_"),
        }

    def stream_error(self, error: dict[str, Any]) -> bytes:
        return _sse(error, "error")

    def _usage(self, tokens: Tokens, output: int) -> dict[str, Any]:
        return {
            "input_tokens": tokens.input,
            "output_tokens": output,
            "cache_read_input_tokens": tokens.cached,
            "cache_creation_input_tokens": tokens.cache_write,
        }

    def _stop(self, outcome: Outcome) -> str:
        if outcome.stop_reason:
            return outcome.stop_reason
        if outcome.truncated:
            return "max_tokens"
        return "refusal" if outcome.refused else "end_turn"

    def ping(self) -> bytes | None:
        return _sse({"type": "ping"}, "ping")

    def body(self, outcome: Outcome) -> dict[str, Any]:
        return {
            "id": _id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": outcome.model,
            "content": [{"type": "text", "text": outcome.text}] if outcome.text else [],
            "stop_reason": self._stop(outcome),
            "stop_sequence": None,
            "usage": self._usage(outcome.tokens, outcome.tokens.output),
        }

    def frames(self, outcome: Outcome, request: Any) -> list[Frame]:
        start = {**self.body(outcome), "content": [], "stop_reason": None}
        start["usage"] = self._usage(outcome.tokens, 1)
        frames = [Frame(_sse({"type": "message_start", "message": start}, "message_start"))]
        if outcome.pieces:
            block = {"type": "text", "text": ""}
            frames.append(
                Frame(
                    _sse(
                        {"type": "content_block_start", "index": 0, "content_block": block},
                        "content_block_start",
                    )
                )
            )
            frames.append(Frame(_sse({"type": "ping"}, "ping")))
            for piece in outcome.pieces:
                delta = {"type": "text_delta", "text": piece}
                event = {"type": "content_block_delta", "index": 0, "delta": delta}
                frames.append(Frame(_sse(event, "content_block_delta"), text=True))
            stop = {"type": "content_block_stop", "index": 0}
            frames.append(Frame(_sse(stop, "content_block_stop")))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop(outcome), "stop_sequence": None},
            "usage": self._usage(outcome.tokens, outcome.tokens.output),
        }
        frames.append(Frame(_sse(message_delta, "message_delta")))
        frames.append(Frame(_sse({"type": "message_stop"}, "message_stop")))
        return frames

    def models(self, names: list[str]) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z",
                "lifecycle": "active",
            }
            for name in names
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }


class OpenAIWire:
    provider = "openai"
    _ERRORS = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind, code = self._ERRORS.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def stream_error(self, error: dict[str, Any]) -> bytes:
        return _sse(error)

    def _usage(self, tokens: Tokens) -> dict[str, Any]:
        prompt = tokens.input + tokens.cached
        return {
            "prompt_tokens": prompt,
            "completion_tokens": tokens.output,
            "total_tokens": prompt + tokens.output,
            "prompt_tokens_details": {"cached_tokens": tokens.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def _finish(self, outcome: Outcome) -> str:
        return outcome.stop_reason or ("length" if outcome.truncated else "stop")

    def ping(self) -> bytes | None:
        return None

    def body(self, outcome: Outcome) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": outcome.text, "refusal": None}
        if outcome.refused:
            message.update(content=None, refusal=outcome.text or "I can't help with that.")
        return {
            "id": _id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": outcome.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self._finish(outcome),
                    "logprobs": None,
                }
            ],
            "usage": self._usage(outcome.tokens),
            "system_fingerprint": "fp_fake",
        }

    def frames(self, outcome: Outcome, request: Any) -> list[Frame]:
        include_usage = bool(((request or {}).get("stream_options") or {}).get("include_usage"))
        base = {
            "id": _id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": outcome.model,
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _sse({**base, "choices": [choice]})

        field = "refusal" if outcome.refused else "content"
        pieces = outcome.pieces
        if outcome.refused and not pieces:
            pieces = ("I can't help with that.",)
        frames = [Frame(chunk({"role": "assistant", "content": "", "refusal": None}))]
        frames += [Frame(chunk({field: piece}), text=True) for piece in pieces]
        frames.append(Frame(chunk({}, self._finish(outcome))))
        if include_usage:
            frames.append(
                Frame(_sse({**base, "choices": [], "usage": self._usage(outcome.tokens)}))
            )
        frames.append(Frame(b"data: [DONE]\n\n"))
        return frames

    def models(self, names: list[str]) -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for name in names
        ]
        return {"object": "list", "data": data}


class GoogleWire:
    provider = "google"
    _STATUSES = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": self._STATUSES.get(status, "UNKNOWN"),
        }
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after}s",
                }
            ]
        return {"error": error}

    def stream_error(self, error: dict[str, Any]) -> bytes:
        return _sse(error)

    def _usage(self, tokens: Tokens, output: int) -> dict[str, Any]:
        prompt = tokens.input + tokens.cached
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if tokens.cached:
            usage["cachedContentTokenCount"] = tokens.cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": tokens.cached}]
        return usage

    def _candidate(self, text: str | None, finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"index": 0}
        if text is not None:
            candidate["content"] = {"parts": [{"text": text}], "role": "model"}
        if finish:
            candidate["finishReason"] = finish
        if finish == "SAFETY":
            candidate["safetyRatings"] = [
                {
                    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "probability": "HIGH",
                    "blocked": True,
                }
            ]
        return candidate

    def _finish(self, outcome: Outcome) -> str:
        if outcome.stop_reason:
            return outcome.stop_reason
        if outcome.truncated:
            return "MAX_TOKENS"
        return "SAFETY" if outcome.refused else "STOP"

    def ping(self) -> bytes | None:
        return None

    def _response(self, outcome: Outcome, candidate: dict[str, Any], output: int) -> dict[str, Any]:
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(outcome.tokens, output),
            "modelVersion": outcome.model,
            "responseId": _id(""),
        }

    def body(self, outcome: Outcome) -> dict[str, Any]:
        text = None if outcome.refused else outcome.text
        candidate = self._candidate(text, self._finish(outcome))
        return self._response(outcome, candidate, outcome.tokens.output)

    def frames(self, outcome: Outcome, request: Any) -> list[Frame]:
        pieces = () if outcome.refused else outcome.pieces
        frames = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            candidate = self._candidate(piece, self._finish(outcome) if last else None)
            output = outcome.tokens.output if last else 0
            frames.append(Frame(_sse(self._response(outcome, candidate, output)), text=True))
        if not pieces:
            candidate = self._candidate(None, self._finish(outcome))
            frames.append(Frame(_sse(self._response(outcome, candidate, outcome.tokens.output))))
        return frames

    def models(self, names: list[str]) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": f"models/{name}",
                    "version": "001",
                    "displayName": name,
                    "inputTokenLimit": 1_048_576,
                    "outputTokenLimit": 65_536,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for name in names
            ]
        }


WIRES: dict[str, Wire] = {w.provider: w for w in (AnthropicWire(), OpenAIWire(), GoogleWire())}
