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

DEFAULT_IDLE_TIMEOUT_SECONDS = 120.0

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
class TimeLimit:
    """The most one try of a call may take in all: a base, plus the time its output limit takes
    at the slowest rate a healthy stream is expected to keep. A long reply streamed steadily is
    never cut short; one that crawls, or never ends, is."""

    base_seconds: float
    output_tokens: int
    tokens_per_second: float

    @property
    def seconds(self) -> float:
        return self.base_seconds + self.output_tokens / self.tokens_per_second

    def __str__(self) -> str:
        return (
            f"{self.seconds:g}s ({self.base_seconds:g}s plus {self.output_tokens} output tokens "
            f"at {self.tokens_per_second:g} tokens/s)"
        )


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
    # How long the provider may send nothing at all before the try is given up as stalled,
    # counted from the request (the wait for the first byte counts too), and how long the try
    # may take in all. The router sets both from its policy (VDO_MODEL_IDLE_TIMEOUT_SECONDS,
    # VDO_MODEL_TIMEOUT_SECONDS and VDO_MODEL_MIN_TOKENS_PER_SECOND).
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    time_limit: TimeLimit | None = None

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
    # The reply stopped because it reached the request's max_output_tokens (Anthropic
    # stop_reason max_tokens, OpenAI finish_reason length, Gemini finishReason MAX_TOKENS):
    # its text is cut off wherever the limit fell.
    truncated: bool = False


class ProviderError(Exception):
    """A call that did not produce a reply.

    `retryable` errors (429, 5xx, timeouts, a stream cut mid-reply) may succeed if tried again;
    the others (a bad key, a refused request, an unknown model) will not.

    What the failed try may still be billed for: `accepted` says the provider took the request
    (its reply had begun: an answer of 200, then whatever came of it) rather than answering with
    an error status or not being reached; `usage` is what it reported before it failed, if
    anything; `streamed_chars` how much reply text had arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str = "error",
        accepted: bool = False,
        usage: Usage | None = None,
        streamed_chars: int = 0,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        # rate_limited | server_error | timeout | stream_cut | refused | auth | unreachable
        self.kind = kind
        self.accepted = accepted
        self.usage = usage
        self.streamed_chars = streamed_chars


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
