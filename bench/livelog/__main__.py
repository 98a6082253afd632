"""Live-log benchmark: how long a streamed model token takes to reach a watcher of the job's
live log.

Run by hand: `uv run python bench/livelog --calls 50`. Starts PostgreSQL and NATS (embedded, in a
temporary directory) and the fake model provider in this process; each call goes through the
real SDK (OpenAI's, streaming), the router and the call bracket (its events stored), and each
piece of text through the live log to a NATS subscriber. The latency of a piece is the time from
the fake provider writing it to the subscriber receiving it (one process, one clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import openai
from nats.aio.msg import Msg

from vdo_cli.embedded import EmbeddedNats, EmbeddedPostgres
from vdo_kernel.blobs import BlobStore
from vdo_kernel.domain import Job, Step
from vdo_kernel.livelog import LiveLog
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext
from vdo_kernel.store import JobStore
from vdo_kernel.subjects import LIVE_LOG_PREFIX
from vdo_models.calls import StepCalls
from vdo_models.interface import Message, ModelRequest, Route
from vdo_models.session import Models

# The fake provider lives with the tests, at the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.fakeprovider import FakeProvider, Reply

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(calls: int, deltas: int, home: Path) -> None:
    postgres = EmbeddedPostgres(home / "postgres", durable=False)
    postgres.start()
    nats_server = EmbeddedNats(home / "nats")
    nats_server.start()
    store = await asyncio.to_thread(JobStore, postgres.url)
    nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
    received: list[tuple[float, str]] = []

    async def on_line(msg: Msg) -> None:
        received.append((time.perf_counter(), json.loads(msg.data)["text"]))

    await nc.subscribe(f"{LIVE_LOG_PREFIX}.>", cb=on_line)
    live = LiveLog(nc)
    latencies: list[float] = []
    asks: list[float] = []
    raws: list[float] = []
    try:
        with FakeProvider() as fake:
            settings = Settings(home=home, model_backoff_seconds=0.0)
            models = Models(settings, environ=fake.env("bench-key-0123456789"))
            text = json.dumps({"text": "word " * 200})
            for _ in range(calls):
                fake.push("openai", Reply(text=text, deltas=deltas, delta_delay=0.002))
                job = Job.submit(title="bench", description="live log latency")
                job.admit(by="scheduler", causation_id="test")
                due = job.is_due(Step.PLAN)
                assert due is not None
                job.start_step(due, worker="bench", causation_id="bench")
                store.save(job)
                ctx = StepContext(
                    job=job,
                    due=due,
                    blobs=BlobStore(settings.blobs_dir),
                    settings=settings,
                    store=store,
                    live=live,
                    cause="bench",
                )
                step = StepCalls(
                    ctx,
                    phase="planner",
                    routes=[Route("openai", "gpt-4.1")],
                    router=models.router,
                    pricing=models.pricing,
                    daily=models.daily,
                )
                received.clear()
                request = ModelRequest(
                    phase="planner", system="bench", messages=(Message("user", "go"),)
                )
                began = time.perf_counter()
                await step.ask(request, SCHEMA)
                asks.append((time.perf_counter() - began) * 1000)
                await nc.flush()
                await asyncio.sleep(0.05)
                pieces = [(at, t) for at, t in received if not t.startswith("[planner]")]
                sent = fake.requests("openai")[-1].delta_sent_at
                latencies += [(at - s) * 1000 for (at, _), s in zip(pieces, sent, strict=False)]
            # The same call straight through the SDK: what the bracket adds is the difference.
            client = openai.AsyncOpenAI(
                api_key="bench-key-0123456789", base_url=f"{fake.url}/v1", max_retries=0
            )
            for _ in range(calls):
                fake.push("openai", Reply(text=text, deltas=deltas, delta_delay=0.002))
                began = time.perf_counter()
                stream = await client.chat.completions.create(
                    model="gpt-4.1",
                    messages=[
                        {"role": "system", "content": "bench"},
                        {"role": "user", "content": "go"},
                    ],
                    stream=True,
                )
                async for _chunk in stream:
                    pass
                raws.append((time.perf_counter() - began) * 1000)
            await client.close()
            await models.close()
    finally:
        await live.close()
        await nc.close()
        store.close()
        nats_server.stop()
        postgres.stop()
    print(f"calls: {calls}, pieces: {len(latencies)}")
    raw, ask = statistics.median(raws), statistics.median(asks)
    print(
        f"one call through the bracket (2 events stored, reply blob, live log): p50 {ask:.2f} ms; "
        f"the raw SDK call: p50 {raw:.2f} ms; added p50 {ask - raw:.2f} ms"
    )
    print(
        "streamed piece → live log subscriber: "
        f"p50 {statistics.median(latencies):.2f} ms, p95 {percentile(latencies, 0.95):.2f} ms, "
        f"max {max(latencies):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--deltas", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(run(args.calls, args.deltas, Path(home)))


if __name__ == "__main__":
    main()
