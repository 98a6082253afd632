"""What the fake provider answers: scripted replies and faults, and the requests it received."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PROVIDERS = ("anthropic", "openai", "google")

FaultKind = Literal["status", "timeout", "stream_cut", "stream_error", "refusal"]
CUT_TEXT = "a reply that is cut short before it ends"


@dataclass(frozen=True)
class Reply:
    """A successful answer. Token counts left as None are estimated from the request and text.

    `input_tokens` are prompt tokens *not* read from the cache, as in `vdo_models.Usage`; the
    server adds `cached_tokens` back where the provider reports a total (OpenAI, Gemini).
    """

    text: str = "fake reply"
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # Anthropic only
    model: str | None = None  # the model the reply names; default: the one asked for
    stop_reason: str | None = None  # the provider's own value; default: its normal end
    # The reply ends because it hit the request's output limit, with each provider's own stop
    # value (Anthropic max_tokens, OpenAI length, Gemini MAX_TOKENS).
    truncated: bool = False
    deltas: int = 4  # a streamed reply is sent in this many pieces
    delta_delay: float = 0.0  # seconds before each piece
    # A quiet spell in a streamed reply: `pause` seconds with nothing sent, after `pause_after`
    # pieces of text (None: before anything, once the headers are out), then the rest.
    pause: float = 0.0
    pause_after: int | None = None
    # Anthropic only: while it waits (delta_delay, pause), a `ping` event this often, as
    # Anthropic keeps a slow stream alive.
    ping_every: float = 0.0


@dataclass(frozen=True)
class Fault:
    """A failure. Build one with the class methods rather than by hand."""

    kind: FaultKind
    status: int = 500
    message: str = ""
    retry_after: float | None = None  # seconds, sent as a Retry-After header
    seconds: float = 30.0  # timeout: how long the server hangs before answering
    text: str = ""  # stream_cut/stream_error: the reply that is cut; refusal: its message
    after_deltas: int = 2  # stream_cut/stream_error: pieces sent before the stream stops
    delta_delay: float = 0.0  # seconds before each piece

    # A quiet spell while it streams, as in `Reply`.
    pause: float = 0.0
    pause_after: int | None = None
    ping_every: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Fault:
        return cls("status", status=429, retry_after=retry_after, message="rate limit exceeded")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls("status", status=status, message="internal server error")

    @classmethod
    def overloaded(cls) -> Fault:
        """529 on Anthropic, 503 elsewhere."""
        return cls("status", status=529, message="overloaded")

    @classmethod
    def http(cls, status: int, message: str = "fault", retry_after: float | None = None) -> Fault:
        return cls("status", status=status, message=message, retry_after=retry_after)

    @classmethod
    def timeout(cls, seconds: float = 30.0) -> Fault:
        return cls("timeout", seconds=seconds)

    @classmethod
    def stream_cut(cls, text: str = "", after_deltas: int = 2, delta_delay: float = 0.0) -> Fault:
        return cls(
            "stream_cut",
            text=text or CUT_TEXT,
            after_deltas=after_deltas,
            delta_delay=delta_delay,
        )

    @classmethod
    def stream_error(
        cls, status: int = 529, after_deltas: int = 2, message: str = "overloaded"
    ) -> Fault:
        """A stream that starts (200) and ends part way with the provider's error event; the
        error is the one `status` would have (529 becomes 503 outside Anthropic). A request
        that is not streamed gets that error status instead."""
        return cls(
            "stream_error", status=status, message=message, text=CUT_TEXT, after_deltas=after_deltas
        )

    @classmethod
    def refusal(cls, text: str = "") -> Fault:
        """The provider's refusal: Anthropic stop_reason "refusal", OpenAI's `refusal` field,
        Gemini finishReason SAFETY with no text."""
        return cls("refusal", text=text)


Answer = Reply | Fault
# Called when a provider's queue is empty: (provider, model, request body) -> what to answer.
Responder = Callable[[str, str, Any], Answer]


def default_responder(provider: str, model: str, body: Any) -> Answer:
    return Reply(text=f"fake reply from {provider}:{model}")


@dataclass
class Bill:
    """Tokens a provider bills for one request (`input`: prompt tokens not read from the
    cache, as in `Reply`)."""

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0


@dataclass
class RecordedRequest:
    provider: str
    model: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names, every header as received (keys included)
    body: Any
    stream: bool
    status: int = 0  # the status answered (0 while in flight)
    # time.perf_counter() just before each streamed piece of text was written (in-process
    # servers only: the clock is the process's).
    delta_sent_at: list[float] = field(default_factory=list)
    text_sent: str = ""  # the reply's text as far as it was streamed
    # What a real provider would bill for it: nothing for an answer with an error status (or a
    # hang that ends in one); for a reply that began, the whole prompt and the output sent (all
    # of the reply's output tokens once it is complete, else the share of its pieces sent
    # before a cut, an error event or the client leaving).
    billed: Bill = field(default_factory=Bill)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class Script:
    """Per-provider queues of answers, the fallback responder, accepted keys and the record of
    requests. Shared between the server's thread and the test's, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Answer]] = {p: deque() for p in PROVIDERS}
        self._defaults: dict[str, Responder] = {}
        self._keys: dict[str, str] = {}
        self._requests: list[RecordedRequest] = []
        self.closing = False  # set when the server stops: hanging requests give up

    def push(self, provider: str, *answers: Answer) -> None:
        _check_provider(provider)
        with self._lock:
            self._queues[provider].extend(answers)

    def clear_queue(self, provider: str) -> None:
        _check_provider(provider)
        with self._lock:
            self._queues[provider].clear()

    def set_responder(self, responder: Responder | None, provider: str | None = None) -> None:
        """The responder for one provider, or for all (`provider=None`); None restores the
        built-in one."""
        with self._lock:
            for name in [provider] if provider else PROVIDERS:
                _check_provider(name)
                if responder is None:
                    self._defaults.pop(name, None)
                else:
                    self._defaults[name] = responder

    def require_key(self, provider: str, key: str | None) -> None:
        """Accept only `key` for `provider` (None: any non-empty key)."""
        _check_provider(provider)
        with self._lock:
            if key is None:
                self._keys.pop(provider, None)
            else:
                self._keys[provider] = key

    def key_accepted(self, provider: str, key: str) -> bool:
        with self._lock:
            wanted = self._keys.get(provider)
        return bool(key) and (wanted is None or key == wanted)

    def next_answer(self, provider: str, model: str, body: Any) -> Answer:
        with self._lock:
            queue = self._queues[provider]
            if queue:
                return queue.popleft()
            responder = self._defaults.get(provider, default_responder)
        return responder(provider, model, body)

    def pending(self, provider: str) -> int:
        with self._lock:
            return len(self._queues[provider])

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self, provider: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if provider is None or r.provider == provider]

    def reset(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._defaults.clear()
            self._keys.clear()
            self._requests.clear()


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")


_FAULTS: dict[str, Callable[..., Fault]] = {
    "rate_limited": Fault.rate_limited,
    "server_error": Fault.server_error,
    "overloaded": Fault.overloaded,
    "http": Fault.http,
    "timeout": Fault.timeout,
    "stream_cut": Fault.stream_cut,
    "stream_error": Fault.stream_error,
    "refusal": Fault.refusal,
}


def answer_from_json(data: Mapping[str, Any]) -> Answer:
    """`{"reply": {...Reply fields}}` or `{"fault": {"kind": ..., ...Fault fields}}`."""
    if "reply" in data:
        return Reply(**data["reply"])
    if "fault" in data:
        fault = dict(data["fault"])
        kind = fault.pop("kind")
        build = _FAULTS.get(kind)
        return build(**fault) if build else Fault(kind=kind, **fault)
    raise ValueError('each item is {"reply": {...}} or {"fault": {"kind": ...}}')
