"""The one interface every model provider is reached through.

A phase asks for a completion with a `ModelRequest` on a `Route` (``provider:model``); an
adapter over the provider's official SDK turns it into that provider's request, streams the
reply's text to `on_text` as it arrives, and returns a `ModelReply` with the provider's own token
counts. Provider failures are mapped to `ProviderError` so the router can decide: retry, fall
back, or give up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vdo_kernel.domain import MODEL_PROVIDERS

JSONSchema = dict[str, Any]

PROVIDERS = MODEL_PROVIDERS

# Called with each piece of reply text as the provider streams it.
TextSink = Callable[[str], Awaitable[None]]


class RouteError(ValueError):
    """A route that is not ``provider:model`` with a known provider."""


@dataclass(frozen=True)
class Route:
    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> Route:
        provider, sep, model = text.strip().partition(":")
        provider = provider.strip().lower()
        if provider == "gemini":
            provider = "google"
        if not sep or not model.strip():
            raise RouteError(f"model route {text!r} is not provider:model (e.g. openai:gpt-4.1)")
        if provider not in PROVIDERS:
            raise RouteError(
                f"model route {text!r} names an unknown provider {provider!r} "
                f"(known: {', '.join(PROVIDERS)})"
            )
        return cls(provider, model.strip())

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant"]
    content: str
    # Repeated context (the plan, the previous attempt): where the provider supports prompt
    # caching, everything up to and including this message is marked cacheable.
    cache: bool = False


@dataclass(frozen=True)
class ModelRequest:
    phase: str  # planner | builder | tester | reviewer (for logs, and the scripted model)
    system: str
    messages: tuple[Message, ...]
    max_output_tokens: int = 8192
    # When set, the reply must be one JSON document matching this schema; adapters ask the
    # provider for JSON output where it offers that, and the caller validates regardless.
    json_schema: JSONSchema | None = None
    temperature: float | None = None
    # What the job asks for, verbatim; only the scripted model reads it (real providers get it
    # inside the messages).
    task: str = ""
    attempt: int = 1

    def prompt_text(self) -> str:
        return self.system + "\n".join(m.content for m in self.messages)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0  # prompt tokens not served from cache
    output_tokens: int = 0
    cached_input_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_write_tokens: int = 0  # prompt tokens written to the provider's cache


@dataclass(frozen=True)
class ModelReply:
    text: str
    usage: Usage
    model: str  # as the provider reports it
    stop_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A call that did not produce a reply.

    `retryable` errors (429, 5xx, timeouts, a stream cut mid-reply) may succeed if tried again;
    the others (a bad key, a refused request, an unknown model) will not.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.kind = kind  # rate_limited | server_error | timeout | stream_cut | refused | auth


class ModelClient(Protocol):
    """One provider. Implementations never log or return a key."""

    provider: str

    async def complete(
        self, model: str, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply: ...

    async def check(self) -> str:
        """Reach the provider cheaply (list models, say); a short description of what answered.
        Raises ProviderError when it cannot be reached."""
        ...

    async def close(self) -> None: ...
