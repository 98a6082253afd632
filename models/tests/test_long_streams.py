"""Long replies in real time, as the product promises them (about four minutes; ``-s`` shows
the measured durations): with a 30-second idle timeout and the default whole-call limit (120s
plus 16,000 output tokens at 10 tokens/s), a healthy reply streamed for 200 seconds completes
in one try, and a stream that stalls for 31 seconds is given up after 30 and retried. Through
the router and the Anthropic SDK, against the fake provider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from models.tests.test_stream_limits import Tries
from tests.fakeprovider import FakeProvider, Reply

from vdo_kernel.settings import Settings
from vdo_models.interface import (
    Message,
    ModelClient,
    ModelRequest,
    Route,
)
from vdo_models.providers import make_client
from vdo_models.router import Router

ROUTE = Route("anthropic", "claude-sonnet-4-6")
SETTINGS = Settings(model_idle_timeout_seconds=30, model_backoff_seconds=0)
TEXT = '{"summary": "' + "a long and steady reply " * 40 + '"}'


@pytest.fixture
async def anthropic(env: dict[str, str]) -> AsyncIterator[ModelClient]:
    client = make_client("anthropic", env)
    yield client
    await client.close()


def request() -> ModelRequest:
    return ModelRequest(
        phase="builder",
        system="You write programs.",
        messages=(Message("user", "Write a word-count tool."),),
        max_output_tokens=SETTINGS.model_max_output_tokens,
    )


def test_the_settings_are_the_defaults_but_the_idle_timeout() -> None:
    assert (SETTINGS.model_timeout_seconds, SETTINGS.model_max_output_tokens) == (120, 16_000)
    assert SETTINGS.model_min_tokens_per_second == 10  # a whole-call limit of 1,720s


@pytest.mark.timeout(400)
async def test_a_healthy_200_second_stream_completes_with_a_30_second_idle_timeout(
    anthropic: ModelClient, fake: FakeProvider
) -> None:
    # A piece every half second for 200 seconds: longer than the 120s the old deadline allowed.
    fake.push("anthropic", Reply(text=TEXT, deltas=400, delta_delay=0.5))
    tries = Tries()
    started = time.monotonic()

    reply, _ = await Router(lambda _: anthropic, SETTINGS).complete(
        [ROUTE], request(), observer=tries
    )

    took = time.monotonic() - started
    print(f"\nhealthy stream: completed in {took:.1f}s, in {len(tries.ended)} try")
    assert reply.text == TEXT
    assert [outcome for _, outcome in tries.ended] == ["ok"]
    assert len(fake.requests("anthropic")) == 1
    assert 199 <= took < 260


@pytest.mark.timeout(400)
async def test_a_stream_stalled_for_31_seconds_is_retried(
    anthropic: ModelClient, fake: FakeProvider
) -> None:
    fake.push(
        "anthropic",
        Reply(text=TEXT, deltas=40, delta_delay=0.5, pause=31, pause_after=10),
        Reply(text=TEXT, deltas=40, delta_delay=0.1),
    )
    tries = Tries()
    started = time.monotonic()

    reply, _ = await Router(lambda _: anthropic, SETTINGS).complete(
        [ROUTE], request(), observer=tries
    )

    took = time.monotonic() - started
    (stalled_at, stalled), (done_at, second) = tries.ended
    first_try = stalled_at - tries.started[0]
    second_try = done_at - tries.started[1]
    print(
        f"\nstalled stream: the first try gave up after {first_try:.1f}s ({stalled}); "
        f"the second completed in {second_try:.1f}s; {took:.1f}s in all"
    )
    assert reply.text == TEXT
    assert len(fake.requests("anthropic")) == 2
    assert "anthropic stalled: waited 30.0s with nothing new after 5." in stalled
    assert second == "ok"
    # Five seconds of streaming, then thirty of silence: given up before the stall's 31st.
    assert 35 <= first_try < 36
