"""Anthropic Messages API through the official SDK (streamed, with prompt caching)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic
from anthropic.types import (
    AssistantMessageParam,
    MessageParam,
    OutputConfigParam,
    TextBlockParam,
    UserMessageParam,
)

from vdo_models.interface import (
    Message,
    ModelReply,
    ModelRequest,
    ProviderError,
    TextSink,
    Usage,
)
from vdo_models.providers import describe_models, display_url, failures
from vdo_models.providers.json_output import Mode, OutputModes, with_fallback
from vdo_models.providers.streaming import StreamWatch, response_hooks, sdk_timeout

DEFAULT_BASE_URL = "https://api.anthropic.com"
# The API allows four cache breakpoints per request; one goes on the system prompt.
_MAX_MESSAGE_BREAKPOINTS = 3
_EPHEMERAL: anthropic.types.CacheControlEphemeralParam = {"type": "ephemeral"}
# The status each error type has as an answer, for the same error sent mid-stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicClient:
    """`ModelClient` for Anthropic. The system prompt, and every message marked ``cache``, carry
    a cache breakpoint, so repeated context is read from the prompt cache on the next call.
    `ModelRequest.temperature` is not sent: the Messages API (as this SDK describes it) has no
    such parameter."""

    provider = "anthropic"

    def __init__(
        self, api_key: str, *, base_url: str | None = None, timeout: float = 600.0
    ) -> None:
        self.base_url = base_url or DEFAULT_BASE_URL
        self._scrub = failures.Scrubber(api_key)
        self._output = OutputModes(("json_schema", None))
        self._timeout = timeout
        # The router retries; the SDK's own retries would hide tries from it.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=anthropic.DefaultAsyncHttpxClient(event_hooks=response_hooks()),
        )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, *, timeout: float = 600.0
    ) -> AnthropicClient:
        key = env.get("ANTHROPIC_API_KEY", "").strip()
        if not key:
            raise ProviderError("ANTHROPIC_API_KEY is not set", retryable=False, kind="auth")
        return cls(key, base_url=env.get("ANTHROPIC_BASE_URL") or None, timeout=timeout)

    def __repr__(self) -> str:
        return f"AnthropicClient(base_url={display_url(self.base_url)!r})"

    async def complete(
        self, model: str, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply:
        modes = self._output.to_try(model) if request.json_schema is not None else (None,)
        reply, mode = await with_fallback(
            modes, lambda mode: self._stream(model, request, mode, on_text)
        )
        if request.json_schema is not None:
            self._output.accepted(model, mode)
        return reply

    async def _stream(
        self, model: str, request: ModelRequest, mode: Mode, on_text: TextSink | None
    ) -> ModelReply:
        output_config: OutputConfigParam | anthropic.Omit = anthropic.omit
        if mode == "json_schema" and request.json_schema is not None:
            schema = anthropic.transform_schema(request.json_schema)
            output_config = {"format": {"type": "json_schema", "schema": schema}}
        system: list[TextBlockParam] = []
        if request.system:
            system = [{"type": "text", "text": request.system, "cache_control": _EPHEMERAL}]

        parts: list[str] = []
        read = written = uncached = output = 0
        reply_model, stop_reason, complete = model, "", False
        async with StreamWatch.of(self.provider, request) as watch:
            try:
                stream = await self._client.messages.create(
                    model=model,
                    max_tokens=request.max_output_tokens,
                    system=system or anthropic.omit,
                    messages=_messages(request.messages),
                    output_config=output_config,
                    stream=True,
                    timeout=sdk_timeout(self._timeout, request.idle_timeout_seconds),
                )
                watch.accepted = True
                async with stream:
                    async for event in stream:
                        if event.type == "message_start":
                            reply_model = event.message.model
                            u = event.message.usage
                            uncached, output = u.input_tokens, u.output_tokens
                            read = u.cache_read_input_tokens or 0
                            written = u.cache_creation_input_tokens or 0
                        elif (
                            event.type == "content_block_delta" and event.delta.type == "text_delta"
                        ):
                            parts.append(event.delta.text)
                            watch.text(event.delta.text)
                            if on_text is not None and event.delta.text:
                                await on_text(event.delta.text)
                        elif event.type == "message_delta":
                            stop_reason = event.delta.stop_reason or ""
                            # Cumulative totals; the optional ones are sent only when they
                            # changed.
                            d = event.usage
                            output = d.output_tokens
                            if d.input_tokens is not None:
                                uncached = d.input_tokens
                            if d.cache_read_input_tokens is not None:
                                read = d.cache_read_input_tokens
                            if d.cache_creation_input_tokens is not None:
                                written = d.cache_creation_input_tokens
                        elif event.type == "message_stop":
                            complete = True
                        if event.type in ("message_start", "message_delta"):
                            # What a failed try is billed for is at least what was reported.
                            watch.usage = Usage(uncached, output, read, written)
            except anthropic.APIStatusError as exc:
                raise self._status_error(exc) from None
            except anthropic.APIConnectionError as exc:
                raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
            except Exception as exc:
                if failures.is_transport_error(exc):
                    raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
                raise
            if not complete:
                raise failures.stream_cut(self.provider, "no message_stop")
            if stop_reason == "refusal":
                raise failures.refused(
                    self.provider, model, "stop_reason refusal", scrub=self._scrub
                )
        usage = Usage(
            input_tokens=uncached,
            output_tokens=output,
            cached_input_tokens=read,
            cache_write_tokens=written,
        )
        return ModelReply(
            text="".join(parts),
            usage=usage,
            model=reply_model,
            stop_reason=stop_reason,
            truncated=stop_reason == "max_tokens",
        )

    def _status_error(self, exc: anthropic.APIStatusError) -> ProviderError:
        detail = exc.api_message or exc.message
        status = exc.status_code
        in_stream = status < 400  # an `error` event in a stream that began with 200
        if in_stream:
            status = _ERROR_STATUS.get(exc.type or "", 500)
        return failures.status_error(
            self.provider,
            status,
            f"{exc.type or 'error'}: {detail}",
            scrub=self._scrub,
            retry_after=failures.parse_retry_after(exc.response.headers),
            in_stream=in_stream,
        )

    async def check(self) -> str:
        try:
            page = await self._client.models.list(limit=100)
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from None
        except anthropic.APIConnectionError as exc:
            raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
        names = [m.id for m in page.data]
        return describe_models(self.provider, self.base_url, names)

    async def close(self) -> None:
        await self._client.close()


def _messages(messages: tuple[Message, ...]) -> list[MessageParam]:
    """The conversation, with a cache breakpoint on the last few messages marked ``cache``."""
    cached = [i for i, m in enumerate(messages) if m.cache][-_MAX_MESSAGE_BREAKPOINTS:]
    params: list[MessageParam] = []
    for i, message in enumerate(messages):
        block: TextBlockParam = {"type": "text", "text": message.content}
        if i in cached:
            block["cache_control"] = _EPHEMERAL
        param: UserMessageParam | AssistantMessageParam = (
            {"role": "user", "content": [block]}
            if message.role == "user"
            else {"role": "assistant", "content": [block]}
        )
        params.append(param)
    return params
