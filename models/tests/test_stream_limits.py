"""How long a try may take, on each provider's SDK through the router: a stream ends when the
provider goes quiet for the idle timeout, or at its whole-call limit, never merely because it
is long. Small numbers here; `test_long_streams` has the product's own, in real time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pytest
from tests.fakeprovider import FakeProvider, Reply

from vdo_models.interface import (
    Message,
    ModelClient,
    ModelReply,
    ModelRequest,
    ProviderError,
    Route,
)
from vdo_models.providers import make_client
from vdo_models.router import RetryPolicy, Router, RouterError

ROUTES = {
    "anthropic": Route("anthropic", "claude-sonnet-4-6"),
    "openai": Route("openai", "gpt-4.1"),
    "google": Route("google", "gemini-2.5-pro"),
}
TEXT = '{"summary": "' + "a steady reply " * 20 + '"}'
# Half a second of quiet ends a try; a try may take 0.5s plus its output limit at 1,000
# tokens/s (2.5s for the 2,000 tokens asked for below).
POLICY = RetryPolicy(
    tries_per_route=3,
    backoff_seconds=0.0,
    timeout_seconds=0.5,
    idle_timeout_seconds=0.5,
    min_tokens_per_second=1000,
)


def request(max_output_tokens: int = 2000) -> ModelRequest:
    return ModelRequest(
        phase="planner",
        system="You plan programs.",
        messages=(Message("user", "Plan a word-count tool."),),
        max_output_tokens=max_output_tokens,
    )


@dataclass
class Tries:
    """The router's observer: when each try started and how it ended."""

    started: list[float] = field(default_factory=list)
    ended: list[tuple[float, str]] = field(default_factory=list)

    async def try_started(self, route: Route, try_number: int) -> None:
        self.started.append(time.monotonic())

    async def try_finished(
        self,
        route: Route,
        try_number: int,
        reply: ModelReply | None,
        error: ProviderError | None,
        retry_in: float | None,
    ) -> None:
        self.ended.append((time.monotonic(), "ok" if error is None else str(error)))

    def took(self, index: int) -> float:
        return self.ended[index][0] - self.started[index]


async def test_a_stream_longer_than_the_timeout_that_never_goes_quiet_completes_in_one_try(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Reply(text=TEXT, deltas=10, delta_delay=0.2))  # 2 seconds in all
    tries = Tries()
    router = Router(lambda _: client, POLICY)

    reply, _ = await router.complete([ROUTES[provider]], request(), observer=tries)

    assert reply.text == TEXT
    assert len(fake.requests(provider)) == 1
    assert [outcome for _, outcome in tries.ended] == ["ok"]
    assert tries.took(0) > 4 * POLICY.timeout_seconds


async def test_a_stream_that_stalls_longer_than_the_idle_timeout_is_retried(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(
        provider,
        Reply(text=TEXT, deltas=10, pause=3.0, pause_after=3),
        Reply(text=TEXT, deltas=10),
    )
    tries = Tries()
    router = Router(lambda _: client, POLICY)

    reply, _ = await router.complete([ROUTES[provider]], request(), observer=tries)

    assert reply.text == TEXT
    assert len(fake.requests(provider)) == 2
    (_, stalled), (_, second) = tries.ended
    assert f"{provider} stalled: waited 0.5s with nothing new after" in stalled
    assert second == "ok"
    # Given up after half a second of quiet, not at the end of the three-second pause.
    assert 0.5 <= tries.took(0) < 2.0


async def test_a_stall_before_the_reply_begins_counts_too(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Reply(text=TEXT, pause=3.0), Reply(text=TEXT))
    tries = Tries()
    router = Router(lambda _: client, POLICY)

    reply, _ = await router.complete([ROUTES[provider]], request(), observer=tries)

    assert reply.text == TEXT
    assert f"{provider} stalled: waited 0.5s and no reply began" in tries.ended[0][1]
    assert tries.took(0) < 2.0


async def test_a_stream_that_outlasts_its_whole_call_limit_is_ended_and_says_why(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    # Never quiet for long, but 3 seconds in all: over 0.5s plus 500 tokens at 1,000 tokens/s.
    fake.push(provider, Reply(text=TEXT, deltas=30, delta_delay=0.1))
    tries = Tries()
    router = Router(lambda _: client, replace(POLICY, tries_per_route=1))

    with pytest.raises(RouterError) as caught:
        await router.complete([ROUTES[provider]], request(max_output_tokens=500), observer=tries)

    assert caught.value.kind == "timeout"
    assert (
        f"{provider} gave no complete reply within its time limit, 1s (0.5s plus 500 output "
        "tokens at 1000 tokens/s)"
    ) in tries.ended[0][1]
    assert 1.0 <= tries.took(0) < 2.0


async def test_anthropic_pings_keep_a_quiet_stream_alive(
    env: dict[str, str], fake: FakeProvider
) -> None:
    """Anthropic sends ``ping`` events while a reply is slow to come (its SDK drops them):
    they count as the provider being there."""
    client = make_client("anthropic", env, timeout=10)
    fake.push("anthropic", Reply(text=TEXT, pause=2.0, pause_after=2, ping_every=0.2))
    tries = Tries()
    try:
        reply, _ = await Router(lambda _: client, POLICY).complete(
            [ROUTES["anthropic"]], request(), observer=tries
        )
    finally:
        await client.close()
    assert reply.text == TEXT
    assert len(fake.requests("anthropic")) == 1
    assert tries.took(0) >= 2.0
