"""OpenAI Chat Completions through the official SDK (streamed), for OpenAI itself and for any
OpenAI-compatible server (``OPENAI_BASE_URL``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from vdo_models.interface import ModelReply, ModelRequest, ProviderError, TextSink, Usage
from vdo_models.providers import describe_models, display_url, failures
from vdo_models.providers.json_output import Mode, OutputModes, with_fallback
from vdo_models.providers.streaming import StreamWatch, response_hooks, sdk_timeout

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIClient:
    """`ModelClient` for OpenAI's Chat Completions API. OpenAI caches repeated prompt prefixes
    by itself, so `Message.cache` needs no marking here.

    OpenAI's own API takes ``max_completion_tokens`` (its reasoning models refuse
    ``max_tokens``); other servers get the long-standing ``max_tokens``, which they all know."""

    provider = "openai"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._official = self.base_url == DEFAULT_BASE_URL
        self._scrub = failures.Scrubber(api_key)
        self._output = OutputModes(("json_schema", "json_object", None))
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            organization=organization,
            project=project,
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks=response_hooks()),
        )
        self._timeout = timeout

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, *, timeout: float = 600.0
    ) -> OpenAIClient:
        key = env.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise ProviderError("OPENAI_API_KEY is not set", retryable=False, kind="auth")
        return cls(
            key,
            base_url=env.get("OPENAI_BASE_URL") or None,
            organization=env.get("OPENAI_ORG_ID") or None,
            project=env.get("OPENAI_PROJECT_ID") or None,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"OpenAIClient(base_url={display_url(self.base_url)!r})"

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
        messages: list[ChatCompletionMessageParam] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            if message.role == "user":
                messages.append({"role": "user", "content": message.content})
            else:
                messages.append({"role": "assistant", "content": message.content})

        parts: list[str] = []
        refusal: list[str] = []
        usage: Usage | None = None
        reply_model, finish = model, ""
        limit = request.max_output_tokens
        async with StreamWatch.of(self.provider, request) as watch:
            try:
                stream = await self._client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    max_completion_tokens=limit if self._official else openai.omit,
                    max_tokens=openai.omit if self._official else limit,
                    temperature=(
                        request.temperature if request.temperature is not None else openai.omit
                    ),
                    response_format=_response_format(request, mode),
                    timeout=sdk_timeout(self._timeout, request.idle_timeout_seconds),
                )
                watch.accepted = True
                async with stream:
                    async for chunk in stream:
                        reply_model = chunk.model or reply_model
                        if chunk.usage is not None:
                            u = chunk.usage
                            details = u.prompt_tokens_details
                            cached = (details.cached_tokens or 0) if details else 0
                            written = (details.cache_write_tokens or 0) if details else 0
                            usage = watch.usage = Usage(
                                input_tokens=max(0, u.prompt_tokens - cached - written),
                                output_tokens=u.completion_tokens,
                                cached_input_tokens=cached,
                                cache_write_tokens=written,
                            )
                        for choice in chunk.choices[:1]:
                            if choice.delta.refusal:
                                refusal.append(choice.delta.refusal)
                            text = choice.delta.content
                            if text:
                                parts.append(text)
                                watch.text(text)
                                if on_text is not None:
                                    await on_text(text)
                            if choice.finish_reason:
                                finish = choice.finish_reason
            except openai.APIStatusError as exc:
                raise self._status_error(exc) from None
            except openai.APIConnectionError as exc:
                raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
            except openai.APIError as exc:
                raise self._stream_error(exc) from None
            except Exception as exc:
                if failures.is_transport_error(exc):
                    raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
                raise
            if not finish:
                raise failures.stream_cut(self.provider, "no finish_reason")
            if refusal or finish == "content_filter":
                detail = "".join(refusal) or f"finish_reason {finish}"
                raise failures.refused(self.provider, model, detail, scrub=self._scrub)
        return ModelReply(
            text="".join(parts),
            usage=usage or Usage(),
            model=reply_model,
            stop_reason=finish,
            truncated=finish == "length",
        )

    def _status_error(self, exc: openai.APIStatusError) -> ProviderError:
        # The SDK's exception body is the error object ({"message", "type", "code"}).
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = str(body.get("message") or exc.message)
        if body.get("code"):
            detail = f"{body['code']}: {detail}"
        return failures.status_error(
            self.provider,
            exc.status_code,
            detail,
            scrub=self._scrub,
            retry_after=failures.parse_retry_after(exc.response.headers),
        )

    def _stream_error(self, exc: openai.APIError) -> ProviderError:
        """An error chunk in a stream that had begun with 200."""
        body = exc.body if isinstance(exc.body, dict) else {}
        limited = body.get("code") == "rate_limit_exceeded" or body.get("type") == "requests"
        return failures.status_error(
            self.provider,
            429 if limited else 500,
            str(body.get("message") or exc.message),
            scrub=self._scrub,
            in_stream=True,
        )

    async def check(self) -> str:
        try:
            page = await self._client.models.list()
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:
            raise failures.transport_error(self.provider, exc, scrub=self._scrub) from None
        return describe_models(self.provider, self.base_url, [m.id for m in page.data])

    async def close(self) -> None:
        await self._client.close()


def _response_format(request: ModelRequest, mode: Mode) -> ResponseFormat | openai.Omit:
    if request.json_schema is None or mode is None:
        return openai.omit
    if mode == "json_object":
        return {"type": "json_object"}
    # Not strict: strict mode accepts only a subset of JSON Schema (no oneOf, no string
    # lengths), and the reply is validated against the whole schema afterwards anyway.
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", request.phase or "reply")[:64]
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": request.json_schema, "strict": False},
    }
