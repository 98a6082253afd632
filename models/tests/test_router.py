"""The router: retries with backoff, Retry-After, fallbacks, refusals, timeouts, the observer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from tests.fakeprovider import FakeProvider, Fault, Reply

from vdo_kernel.settings import Settings
from vdo_models.interface import (
    Message,
    ModelClient,
    ModelReply,
    ModelRequest,
    ProviderError,
    Route,
    TextSink,
    Usage,
)
from vdo_models.providers import make_client
from vdo_models.router import RetryPolicy, Router, RouterError

REQUEST = ModelRequest(phase="builder", system="s", messages=(Message("user", "build it"),))
A = Route("anthropic", "claude-sonnet-4-6")
B = Route("openai", "gpt-4.1")
C = Route("google", "gemini-2.5-pro")


def rate_limited(retry_after: float | None = None) -> ProviderError:
    return ProviderError(
        "429", retryable=True, status=429, retry_after=retry_after, kind="rate_limited"
    )


def server_error() -> ProviderError:
    return ProviderError("500", retryable=True, status=500, kind="server_error")


def auth() -> ProviderError:
    return ProviderError("401", retryable=False, status=401, kind="auth")


def refused() -> ProviderError:
    return ProviderError("no", retryable=False, kind="refused")


def ok(text: str = "done") -> ModelReply:
    return ModelReply(text=text, usage=Usage(10, 5), model="m")


Outcome = ModelReply | ProviderError | Callable[[], Awaitable[ModelReply]]


@dataclass
class ScriptedClient:
    """A `ModelClient` that answers from a list, and counts its calls."""

    provider: str
    outcomes: deque[Outcome] = field(default_factory=deque)
    calls: int = 0

    async def complete(
        self, model: str, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply:
        self.calls += 1
        outcome = self.outcomes.popleft()
        if isinstance(outcome, ProviderError):
            raise outcome
        if isinstance(outcome, ModelReply):
            if on_text is not None:
                await on_text(outcome.text)
            return outcome
        return await outcome()

    async def check(self) -> str:
        return self.provider

    async def close(self) -> None:
        pass


@dataclass
class Log:
    """The observer: every try as it starts and ends."""

    events: list[tuple[object, ...]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def try_started(self, route: Route, try_number: int) -> None:
        self.events.append(("start", str(route), try_number))

    async def try_finished(
        self,
        route: Route,
        try_number: int,
        reply: ModelReply | None,
        error: ProviderError | None,
        retry_in: float | None,
    ) -> None:
        outcome = reply.text if reply is not None else error.kind if error else None
        self.events.append(("end", str(route), try_number, outcome, retry_in))
        if error is not None:
            self.errors.append(str(error))


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


POLICY = RetryPolicy(
    tries_per_route=3, backoff_seconds=1.0, backoff_max_seconds=30.0, timeout_seconds=5.0
)


def router_for(
    *clients: ScriptedClient, policy: RetryPolicy = POLICY, jitter: float = 1.0
) -> tuple[Router, Sleeps]:
    by_provider = {c.provider: c for c in clients}

    def client(provider: str) -> ModelClient:
        if provider not in by_provider:
            raise ProviderError(f"no key for {provider}", retryable=False, kind="auth")
        return by_provider[provider]

    sleeps = Sleeps()
    return Router(client, policy, sleep=sleeps, jitter=lambda: jitter), sleeps


def scripted(provider: str, *outcomes: Outcome) -> ScriptedClient:
    return ScriptedClient(provider, deque(outcomes))


async def test_retryable_errors_are_retried_with_exponential_backoff() -> None:
    a = scripted("anthropic", server_error(), server_error(), ok())
    router, sleeps = router_for(a)
    log = Log()

    reply, route = await router.complete([A], REQUEST, observer=log)

    assert (reply.text, route) == ("done", A)
    assert sleeps.delays == [1.0, 2.0]  # jitter 1.0: the full ceiling, base * 2^(try-1)
    assert log.events == [
        ("start", str(A), 1),
        ("end", str(A), 1, "server_error", 1.0),
        ("start", str(A), 2),
        ("end", str(A), 2, "server_error", 2.0),
        ("start", str(A), 3),
        ("end", str(A), 3, "done", None),
    ]


async def test_backoff_has_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(tries_per_route=6, backoff_seconds=1.0, backoff_max_seconds=5.0)
    a = scripted("anthropic", *[server_error()] * 5, ok())
    router, sleeps = router_for(a, policy=policy, jitter=0.5)

    await router.complete([A], REQUEST)

    assert sleeps.delays == [0.5, 1.0, 2.0, 2.5, 2.5]


async def test_retry_after_is_never_cut_short() -> None:
    a = scripted("anthropic", rate_limited(retry_after=7.0), rate_limited(retry_after=0.2), ok())
    router, sleeps = router_for(a)

    await router.complete([A], REQUEST)

    assert sleeps.delays == [7.0, 2.0]  # the larger of Retry-After and the backoff


async def test_a_retry_after_beyond_the_cap_moves_to_the_next_route() -> None:
    a = scripted("anthropic", rate_limited(retry_after=120.0))
    b = scripted("openai", ok("from b"))
    router, sleeps = router_for(a, b)
    log = Log()

    reply, route = await router.complete([A, B], REQUEST, observer=log)

    assert (reply.text, route) == ("from b", B)
    assert sleeps.delays == []
    assert log.events[1] == ("end", str(A), 1, "rate_limited", None)


async def test_after_the_configured_tries_the_next_route_is_used() -> None:
    a = scripted("anthropic", server_error(), server_error(), server_error(), ok("unused"))
    b = scripted("openai", ok("from b"))
    router, sleeps = router_for(a, b)
    log = Log()

    reply, route = await router.complete([A, B], REQUEST, observer=log)

    assert (reply.text, route) == ("from b", B)
    assert a.calls == 3
    assert sleeps.delays == [1.0, 2.0]  # no wait after the last try of a route
    assert log.events[-3:] == [
        ("end", str(A), 3, "server_error", None),
        ("start", str(B), 1),
        ("end", str(B), 1, "from b", None),
    ]


async def test_a_non_retryable_error_moves_on_at_once() -> None:
    a = scripted("anthropic", auth())
    b = scripted("openai", ok("from b"))
    router, sleeps = router_for(a, b)

    _, route = await router.complete([A, B], REQUEST)

    assert route == B
    assert a.calls == 1
    assert sleeps.delays == []


async def test_a_refusal_is_not_retried_nor_sent_elsewhere() -> None:
    a = scripted("anthropic", refused())
    b = scripted("openai", ok("from b"))
    router, _ = router_for(a, b)
    log = Log()

    with pytest.raises(RouterError) as caught:
        await router.complete([A, B], REQUEST, observer=log)

    assert caught.value.kind == "refused"
    assert "refused" in str(caught.value)
    assert (a.calls, b.calls) == (1, 0)
    assert log.events == [("start", str(A), 1), ("end", str(A), 1, "refused", None)]


async def test_when_every_route_fails_the_error_says_what_happened() -> None:
    a = scripted("anthropic", server_error(), server_error(), rate_limited())
    b = scripted("openai", auth())
    router, _ = router_for(a, b)

    with pytest.raises(RouterError) as caught:
        await router.complete([A, B, C], REQUEST)

    error = caught.value
    assert [(str(f.route), f.try_number, f.error.kind) for f in error.failures] == [
        (str(A), 1, "server_error"),
        (str(A), 2, "server_error"),
        (str(A), 3, "rate_limited"),
        (str(B), 1, "auth"),
        (str(C), 0, "auth"),  # no client for google: not usable
    ]
    message = str(error)
    assert message.startswith("every model route failed")
    assert f"{A} (3 tries: server_error 500, server_error 500, rate_limited 429" in message
    assert f"{B} (1 try: auth 401" in message
    assert f"{C} (not usable: auth" in message
    assert isinstance(error, ProviderError)
    assert not error.retryable


async def test_no_routes_is_an_error() -> None:
    router, _ = router_for()
    with pytest.raises(RouterError, match="no model route"):
        await router.complete([], REQUEST)


async def test_a_call_slower_than_the_timeout_is_a_retryable_timeout() -> None:
    async def slow() -> ModelReply:
        await asyncio.sleep(10)
        return ok("too late")

    # 0.05s plus 8192 output tokens at 1,000,000 tokens/s: about 0.06s.
    policy = RetryPolicy(
        tries_per_route=2, backoff_seconds=0, timeout_seconds=0.05, min_tokens_per_second=1e6
    )
    a = scripted("anthropic", slow, ok("in time"))
    router, _ = router_for(a, policy=policy)
    log = Log()

    reply, _ = await router.complete([A], REQUEST, observer=log)

    assert reply.text == "in time"
    assert log.events[1] == ("end", str(A), 1, "timeout", 0.0)
    assert "0.058192s (0.05s plus 8192 output tokens at 1e+06 tokens/s)" in log.errors[0]


async def test_an_observer_can_stop_a_call_before_it_is_made() -> None:
    class Budget(Log):
        async def try_started(self, route: Route, try_number: int) -> None:
            raise RuntimeError("over budget")

    a = scripted("anthropic", ok())
    router, _ = router_for(a)

    with pytest.raises(RuntimeError, match="over budget"):
        await router.complete([A], REQUEST, observer=Budget())
    assert a.calls == 0


async def test_streamed_text_reaches_on_text() -> None:
    a = scripted("anthropic", ok("hello"))
    router, _ = router_for(a)
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    await router.complete([A], REQUEST, on_text=sink)
    assert pieces == ["hello"]


def test_the_policy_comes_from_settings() -> None:
    settings = Settings(
        model_retries=5,
        model_backoff_seconds=0.5,
        model_backoff_max_seconds=8,
        model_timeout_seconds=42,
        model_idle_timeout_seconds=7,
        model_min_tokens_per_second=25,
    )
    router = Router(lambda p: scripted(p), settings)
    assert router.policy == RetryPolicy(5, 0.5, 8.0, 42.0, 7.0, 25.0)


async def test_real_clients_retry_after_then_fall_back(fake: FakeProvider, key: str) -> None:
    """Through the SDK adapters and the fake server: Anthropic keeps answering 429 with
    Retry-After, OpenAI's stream is cut once, and Gemini answers."""
    env = fake.env(key)
    fake.push("anthropic", *[Fault.rate_limited(retry_after=3)] * 3)
    fake.push("openai", Fault.stream_cut(after_deltas=1), Fault.refusal())
    fake.push("google", Reply(text='{"ok": true}', input_tokens=50, output_tokens=7))
    clients = {p: make_client(p, env) for p in ("anthropic", "openai", "google")}
    sleeps = Sleeps()
    policy = RetryPolicy(tries_per_route=3, backoff_seconds=0.5, backoff_max_seconds=10)
    router = Router(clients.__getitem__, policy, sleep=sleeps, jitter=lambda: 0.0)
    log = Log()
    try:
        with pytest.raises(RouterError) as caught:
            await router.complete([A, B, C], REQUEST, observer=log)
        # the refusal stopped it before Gemini; without it, Gemini answers
        fake.push("openai", *[Fault.server_error(503)] * 3)
        fake.push("anthropic", *[Fault.http(401, "bad key")])
        reply, route = await router.complete([A, B, C], REQUEST, observer=log)
    finally:
        for client in clients.values():
            await client.close()

    assert caught.value.kind == "refused"
    assert sleeps.delays[:3] == [3.0, 3.0, 0.0]  # Retry-After honoured; then the cut stream
    assert (reply.text, route, reply.usage.input_tokens) == ('{"ok": true}', C, 50)
    assert [len(fake.requests(p)) for p in ("anthropic", "openai", "google")] == [4, 5, 1]
    assert log.events[:2] == [("start", str(A), 1), ("end", str(A), 1, "rate_limited", 3.0)]
    assert ("end", str(B), 1, "stream_cut", 0.0) in log.events
