"""Model-client benchmark: what the adapters add over the raw SDKs, against the fake provider.

Run by hand: ``uv run python bench/models`` (``--calls 200``). For each provider it times, over
the same in-process fake server and interleaved call by call:

- the raw SDK, non-streaming and streaming (reading every event);
- the adapter (``ModelClient.complete``), without and with an ``on_text`` sink;

and prints p50/p95 per variant and the adapter's overhead: per iteration, the adapter call
minus the raw streaming call made just before it (the adapters always stream). Then the
delivery latency of streamed text: from the server writing a delta (``time.perf_counter()``
just before it is handed to the server) to ``on_text`` receiving it. The server runs in a
thread of the same process, so both share the GIL: figures include that contention and are an
upper bound on the adapters' own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anthropic
import openai
from google import genai
from google.genai import types

from vdo_models.interface import Message, ModelRequest
from vdo_models.providers import make_client

if TYPE_CHECKING:
    from tests.fakeprovider import FakeProvider

KEY = "bench-key"
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1", "google": "gemini-2.5-pro"}
TEXT = '{"summary": "' + "a plan that is long enough to be streamed in pieces " * 8 + '"}'
REQUEST = ModelRequest(
    phase="planner",
    system="You plan programs.",
    messages=(Message("user", "Plan a word-count tool."),),
    max_output_tokens=1000,
)
Call = Callable[[], Awaitable[object]]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.3f} ms"


async def ignore(_: str) -> None:
    pass


class RawCalls:
    """The same requests the adapters make, through each SDK directly."""

    def __init__(self, fake: FakeProvider) -> None:
        self.anthropic = anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.url, max_retries=0)
        self.openai = openai.AsyncOpenAI(api_key=KEY, base_url=f"{fake.url}/v1", max_retries=0)
        self.google = genai.Client(
            api_key=KEY, vertexai=False, http_options=types.HttpOptions(base_url=fake.url)
        )

    def calls(self, provider: str) -> tuple[Call, Call]:
        """(non-streaming, streaming) for `provider`."""
        model = MODELS[provider]
        if provider == "anthropic":
            return (lambda: self._anthropic(model)), (lambda: self._anthropic_stream(model))
        if provider == "openai":
            return (lambda: self._openai(model)), (lambda: self._openai_stream(model))
        return (lambda: self._google(model)), (lambda: self._google_stream(model))

    async def _anthropic(self, model: str) -> str:
        message = await self.anthropic.messages.create(
            model=model,
            max_tokens=1000,
            system="You plan programs.",
            messages=[{"role": "user", "content": "Plan a word-count tool."}],
        )
        return "".join(b.text for b in message.content if b.type == "text")

    async def _anthropic_stream(self, model: str) -> str:
        parts = []
        stream = await self.anthropic.messages.create(
            model=model,
            max_tokens=1000,
            system="You plan programs.",
            messages=[{"role": "user", "content": "Plan a word-count tool."}],
            stream=True,
        )
        async with stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    parts.append(event.delta.text)
        return "".join(parts)

    async def _openai(self, model: str) -> str:
        completion = await self.openai.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "You plan programs."},
                {"role": "user", "content": "Plan a word-count tool."},
            ],
        )
        return completion.choices[0].message.content or ""

    async def _openai_stream(self, model: str) -> str:
        parts = []
        stream = await self.openai.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "You plan programs."},
                {"role": "user", "content": "Plan a word-count tool."},
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
        return "".join(parts)

    def _google_config(self) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(system_instruction="You plan programs.")

    async def _google(self, model: str) -> str:
        response = await self.google.aio.models.generate_content(
            model=model, contents="Plan a word-count tool.", config=self._google_config()
        )
        return response.text or ""

    async def _google_stream(self, model: str) -> str:
        parts = []
        stream = await self.google.aio.models.generate_content_stream(
            model=model, contents="Plan a word-count tool.", config=self._google_config()
        )
        try:
            async for chunk in stream:
                parts.append(chunk.text or "")
        finally:
            await cast(AsyncGenerator[types.GenerateContentResponse, None], stream).aclose()
        return "".join(parts)

    async def close(self) -> None:
        await self.anthropic.close()
        await self.openai.close()
        await self.google.aio.aclose()
        self.google.close()


async def overhead(fake: FakeProvider, provider: str, calls: int) -> None:
    from tests.fakeprovider import Reply

    fake.set_responder(lambda p, m, b: Reply(text=TEXT, input_tokens=100, output_tokens=120))
    raw = RawCalls(fake)
    client = make_client(provider, fake.env(KEY))
    plain, streamed = raw.calls(provider)
    model = MODELS[provider]
    variants: dict[str, Call] = {
        "raw SDK, not streamed": plain,
        "raw SDK, streamed": streamed,
        "adapter, no on_text": lambda: client.complete(model, REQUEST),
        "adapter, on_text": lambda: client.complete(model, REQUEST, ignore),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i in range(calls + 20):
            for name, call in variants.items():
                started = time.perf_counter()
                await call()
                if i >= 20:  # the first calls warm connections and imports
                    times[name].append(time.perf_counter() - started)
    finally:
        await client.close()
        await raw.close()

    print(f"\n{provider}: {calls} calls per variant ({len(TEXT)} characters in 4 deltas)")
    for name, values in times.items():
        print(f"  {name:24} p50 {ms(pct(values, 50))}   p95 {ms(pct(values, 95))}")
    # Each adapter call minus the raw streamed call made just before it: pairs cancel most of
    # the drift a busy machine adds.
    base = times["raw SDK, streamed"]
    for name in ("adapter, no on_text", "adapter, on_text"):
        extra = [a - b for a, b in zip(times[name], base, strict=True)]
        print(
            f"  {'+ ' + name:24} p50 {ms(pct(extra, 50))}   p95 {ms(pct(extra, 95))}"
            "   (paired, over raw SDK streamed)"
        )


async def delivery(fake: FakeProvider, provider: str, calls: int) -> None:
    from tests.fakeprovider import Reply

    deltas = 8
    fake.reset()
    fake.set_responder(lambda p, m, b: Reply(text=TEXT, deltas=deltas, delta_delay=0.002))
    client = make_client(provider, fake.env(KEY))
    received: list[float] = []

    async def sink(_: str) -> None:
        received.append(time.perf_counter())

    lags: list[float] = []
    try:
        for _ in range(calls):
            received.clear()
            await client.complete(MODELS[provider], REQUEST, sink)
            sent = fake.requests(provider)[-1].delta_sent_at
            assert len(sent) == len(received) == deltas
            lags += [r - s for s, r in zip(sent, received, strict=True)]
    finally:
        await client.close()
    print(
        f"  {provider:9} {len(lags)} deltas   p50 {ms(pct(lags, 50))}   p95 {ms(pct(lags, 95))}"
        f"   max {ms(max(lags))}   mean {ms(statistics.fmean(lags))}"
    )


async def run(calls: int) -> None:
    from tests.fakeprovider import FakeProvider

    with FakeProvider() as fake:
        for provider in MODELS:
            fake.reset()
            await overhead(fake, provider, calls)
        print("\nstreamed delta: written by the server -> on_text")
        for provider in MODELS:
            await delivery(fake, provider, max(10, calls // 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    # Run as a path (`python bench/models`): make the repository's `tests` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    asyncio.run(run(args.calls))


if __name__ == "__main__":
    main()
