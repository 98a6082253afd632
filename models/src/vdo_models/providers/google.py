"""Gemini (the Google GenAI Developer API) through the official ``google-genai`` SDK, streamed."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

from google import genai
from google.genai import errors, types

from vdo_models.interface import ModelReply, ModelRequest, ProviderError, TextSink, Usage
from vdo_models.providers import describe_models, display_url, failures
from vdo_models.providers.json_output import Mode, OutputModes, with_fallback
from vdo_models.providers.streaming import StreamWatch, response_hooks, sdk_timeout

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"
_REFUSALS = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})

# Gemini's `response_json_schema` accepts only these JSON Schema keywords.
_GEMINI_KEYWORDS = frozenset(
    {
        "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum",
        "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf",
        "properties", "additionalProperties", "required", "propertyOrdering",
    }
)  # fmt: skip
# Keywords that only narrow what is valid: dropped, the reply is validated against them later.
_NARROWING = frozenset(
    {
        "minLength", "maxLength", "pattern", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "uniqueItems", "minProperties", "maxProperties", "default", "examples",
        "$schema", "$comment",
    }
)  # fmt: skip


class _Unsupported(Exception):
    pass


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """`schema` in the subset Gemini accepts, or None when it cannot be said there.

    Narrowing keywords (string lengths, patterns, ...) are dropped and ``const`` becomes a
    one-value ``enum``; any other keyword outside the subset (allOf, not, if, ...) makes the
    whole schema unusable, and the request asks for JSON without one.
    """
    try:
        return _subset(schema)
    except _Unsupported:
        return None


def _subset(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise _Unsupported
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NARROWING:
            continue
        if key == "const":
            key, value = "enum", [value]
        if key not in _GEMINI_KEYWORDS:
            raise _Unsupported(key)
        if key in ("properties", "$defs"):
            value = {name: _subset(sub) for name, sub in value.items()}
        elif key in ("anyOf", "oneOf", "prefixItems"):
            value = [_subset(sub) for sub in value]
        elif key == "items" or (key == "additionalProperties" and not isinstance(value, bool)):
            value = _subset(value)
        elif key == "enum" and not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            raise _Unsupported(key)
        out[key] = value
    return out


class GoogleClient:
    """`ModelClient` for Gemini. Gemini caches repeated prompt prefixes implicitly (2.5 models
    on), so `Message.cache` needs no marking; explicit cached contents are not used."""

    provider = "google"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = base_url or DEFAULT_BASE_URL
        self._scrub = failures.Scrubber(api_key)
        self._output = OutputModes(("json_schema", "json"))
        # No retry_options: the SDK then tries once; the router retries.
        options = types.HttpOptions(
            base_url=self.base_url,
            api_version=api_version,
            timeout=int(timeout * 1000),
            async_client_args={"event_hooks": response_hooks()},
        )
        self._timeout = timeout
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, *, timeout: float = 600.0
    ) -> GoogleClient:
        # The SDK's own precedence: GOOGLE_API_KEY over GEMINI_API_KEY.
        key = (env.get("GOOGLE_API_KEY") or env.get("GEMINI_API_KEY") or "").strip()
        if not key:
            raise ProviderError(
                "GEMINI_API_KEY (or GOOGLE_API_KEY) is not set", retryable=False, kind="auth"
            )
        return cls(
            key,
            base_url=env.get("GOOGLE_GEMINI_BASE_URL") or None,
            api_version=env.get("GOOGLE_GENAI_API_VERSION") or None,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"GoogleClient(base_url={display_url(self.base_url)!r})"

    async def complete(
        self, model: str, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply:
        if request.json_schema is None:
            return await self._stream(model, request, None, None, on_text)
        schema = gemini_schema(request.json_schema)
        modes = tuple(m for m in self._output.to_try(model) if m != "json_schema" or schema)
        reply, mode = await with_fallback(
            modes, lambda mode: self._stream(model, request, mode, schema, on_text)
        )
        if schema is not None:
            self._output.accepted(model, mode)
        return reply

    async def _stream(
        self,
        model: str,
        request: ModelRequest,
        mode: Mode,
        schema: dict[str, Any] | None,
        on_text: TextSink | None,
    ) -> ModelReply:
        config = types.GenerateContentConfig(
            system_instruction=request.system or None,
            max_output_tokens=request.max_output_tokens,
            temperature=request.temperature,
            response_mime_type="application/json" if mode else None,
            response_json_schema=schema if mode == "json_schema" else None,
            http_options=types.HttpOptions(
                timeout=int(sdk_timeout(self._timeout, request.idle_timeout_seconds) * 1000)
            ),
        )
        contents: list[types.ContentUnion] = [
            types.Content(
                role="user" if m.role == "user" else "model", parts=[types.Part(text=m.content)]
            )
            for m in request.messages
        ]
        parts: list[str] = []
        metadata: types.GenerateContentResponseUsageMetadata | None = None
        reply_model, finish, blocked = model, "", ""
        async with StreamWatch.of(self.provider, request) as watch:
            try:
                stream = await self._client.aio.models.generate_content_stream(
                    model=model, contents=contents, config=config
                )
                try:
                    async for chunk in stream:
                        watch.accepted = True
                        reply_model = chunk.model_version or reply_model
                        if chunk.usage_metadata is not None:
                            metadata = chunk.usage_metadata
                            watch.usage = _usage(metadata)
                        feedback = chunk.prompt_feedback
                        if feedback is not None and feedback.block_reason is not None:
                            blocked = str(feedback.block_reason.value)
                        for candidate in (chunk.candidates or [])[:1]:
                            content = candidate.content
                            for part in (content.parts or []) if content else []:
                                if part.text and not part.thought:
                                    parts.append(part.text)
                                    watch.text(part.text)
                                    if on_text is not None:
                                        await on_text(part.text)
                            if candidate.finish_reason is not None:
                                finish = str(candidate.finish_reason.value)
                finally:
                    # The SDK's generator holds the HTTP response until it is closed.
                    await cast(AsyncGenerator[types.GenerateContentResponse, None], stream).aclose()
            except errors.APIError as exc:
                raise self._api_error(exc) from None
            except errors.UnknownApiResponseError:
                raise failures.stream_cut(self.provider, "a chunk that is not JSON") from None
            except Exception as exc:
                if failures.is_transport_error(exc):
                    raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
                raise
            if blocked or finish in _REFUSALS:
                detail = f"blocked: {blocked}" if blocked else f"finishReason {finish}"
                raise failures.refused(self.provider, model, detail, scrub=self._scrub)
            if not finish:
                raise failures.stream_cut(self.provider, "no finishReason")
        return ModelReply(
            text="".join(parts),
            usage=_usage(metadata),
            model=reply_model,
            stop_reason=finish,
            truncated=finish == "MAX_TOKENS",
        )

    def _api_error(self, exc: errors.APIError) -> ProviderError:
        detail = f"{exc.status or 'error'}: {exc.message or ''}"
        if exc.code == 400 and (
            "API_KEY_INVALID" in str(exc.details) or "API key not valid" in detail
        ):
            # Gemini answers a bad key with 400, not 401.
            return failures.auth_error(self.provider, exc.code, detail, scrub=self._scrub)
        headers = getattr(exc.response, "headers", None)
        retry_after = failures.parse_retry_after(headers) or _retry_delay(exc.details)
        return failures.status_error(
            self.provider, exc.code, detail, scrub=self._scrub, retry_after=retry_after
        )

    async def check(self) -> str:
        try:
            pager = await self._client.aio.models.list(config={"page_size": 100})
        except errors.APIError as exc:
            raise self._api_error(exc) from None
        except Exception as exc:
            if failures.is_transport_error(exc):
                raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
            raise
        names = [(m.name or "").removeprefix("models/") for m in pager.page]
        return describe_models(self.provider, self.base_url, names)

    async def close(self) -> None:
        await self._client.aio.aclose()
        self._client.close()


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    """Gemini counts cached tokens inside the prompt's, and bills thinking as output."""
    if metadata is None:
        return Usage()
    cached = metadata.cached_content_token_count or 0
    return Usage(
        input_tokens=max(0, (metadata.prompt_token_count or 0) - cached),
        output_tokens=(metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0),
        cached_input_tokens=cached,
    )


def _retry_delay(details: Any) -> float | None:
    """The wait a google.rpc.RetryInfo detail asks for ("2.5s"), if there is one."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("RetryInfo"):
            match = re.fullmatch(r"([0-9.]+)s", str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None
