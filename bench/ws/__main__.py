"""Live-updates benchmark: many WebSocket clients on a running stack, and the job list under load.

Run by hand: `uv run python bench/ws --clients 100 --jobs 20`. Starts the whole stack (every
service a process, embedded NATS and PostgreSQL) in a temporary directory, or uses a running one
(`--url` and `--token`). Then:

1. connects N clients to `/api/ws` (every job, from the log's start), submits jobs, and waits
   until every client has every event of every job; the latency of a frame is the time it was
   received (time.time()) less its event's `timestamp` (set when the event is made, just before
   it is committed; same machine, same clock);
2. with the clients still connected, runs C concurrent `GET /api/jobs` loops for a while and
   prints requests per second and their latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats
from nats.aio.msg import Msg
from pydantic import SecretStr

from vdo_cli.embedded import free_port
from vdo_cli.stack import Stack
from vdo_kernel.settings import Settings
from vdo_kernel.subjects import ALL_EVENTS, HEADER_POSITION

# The test helpers live at the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.live_client import LiveClient, ended, ws_url

# The first admin's token of the stack this benchmark starts (it is thrown away with it).
BENCH_TOKEN = "vdo_bench-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"
WORD_COUNT = "a command-line word-count tool"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def figures(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} p50 {pct(values, 50):7.1f} ms  p95 {pct(values, 95):7.1f} ms  "
        f"p99 {pct(values, 99):7.1f} ms  max {max(values, default=float('nan')):7.1f} ms  "
        f"(n={len(values)})"
    )


async def tap(nats_url: str, stack: contextlib.AsyncExitStack) -> dict[int, float]:
    """When each event reached the bus (as the gateway's own subscription sees it)."""
    seen: dict[int, float] = {}

    async def on_event(msg: Msg) -> None:
        seen.setdefault(int((msg.headers or {}).get(HEADER_POSITION, "0")), time.time())

    nc = await nats.connect(nats_url)
    stack.push_async_callback(nc.close)
    await nc.subscribe(ALL_EVENTS, cb=on_event)
    return seen


async def live_latency(
    url: str, token: str, nats_url: str | None, clients: int, jobs: int, parallel: int
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        on_bus = await tap(nats_url, stack) if nats_url else {}
        started = time.monotonic()
        watchers = await asyncio.gather(
            *(
                stack.enter_async_context(
                    LiveClient.connect(ws_url(url, after=0), additional_headers=headers)
                )
                for _ in range(clients)
            )
        )
        await asyncio.gather(
            *(w.until(lambda m: m["type"] == "caught_up", timeout=120) for w in watchers)
        )
        live_from = [len(w.events) for w in watchers]
        print(f"clients connected     {clients} in {time.monotonic() - started:.2f} s")

        gate = asyncio.Semaphore(parallel)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as api:

            async def submit(n: int) -> str:
                async with gate:
                    response = await api.post(
                        "/api/jobs", json={"title": f"bench {n}", "description": WORD_COUNT}
                    )
                    response.raise_for_status()
                    job_id: str = response.json()["id"]
                    return job_id

            started = time.monotonic()
            job_ids = set(await asyncio.gather(*(submit(n) for n in range(jobs))))

            async def all_ended(watcher: LiveClient) -> None:
                left = set(job_ids)
                for event in watcher.events:
                    if ended({"type": "event", "event": event}):
                        left.discard(event["job_id"])
                while left:
                    message = await watcher.receive(timeout=600)
                    if ended(message):
                        left.discard(message["event"]["job_id"])

            await asyncio.gather(*(all_ended(w) for w in watchers))
            elapsed = time.monotonic() - started
    latencies: list[float] = []
    through_gateway: list[float] = []
    spread: dict[int, list[float]] = {}
    made: dict[int, float] = {}
    for watcher, first in zip(watchers, live_from, strict=True):
        for event, at in zip(watcher.events[first:], watcher.received_at[first:], strict=True):
            position = event["position"]
            made[position] = datetime.fromisoformat(event["timestamp"]).timestamp()
            latencies.append((at - made[position]) * 1000)
            if position in on_bus:
                through_gateway.append((at - on_bus[position]) * 1000)
            spread.setdefault(position, []).append(at)
    fan_out = [(max(times) - min(times)) * 1000 for times in spread.values()]
    print(f"jobs                  {jobs} ({parallel} submissions in flight), {elapsed:.2f} s")
    print(f"events                {len(spread)}; frames received {len(latencies)}")
    print(figures("event made → frame received", latencies))
    if on_bus:
        to_bus = [(on_bus[p] - made[p]) * 1000 for p in made if p in on_bus]
        print(figures("  event made → on the bus", to_bus))
        print(figures("  on the bus → frame received", through_gateway))
    print(figures("first → last client, per event", fan_out))


async def jobs_under_load(url: str, token: str, concurrency: int, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as api:
        await api.get("/api/jobs")  # warm up
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    response = await api.get("/api/jobs", params={"limit": 50})
                except httpx.HTTPError as error:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                    continue
                if response.status_code == 200:
                    latencies.append((time.perf_counter() - began) * 1000)
                else:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    print(
        f"GET /api/jobs         {len(latencies)} answered in {elapsed:.1f} s "
        f"({concurrency} in flight): {len(latencies) / elapsed:.0f} requests/s"
        + (f"; errors {errors}" if errors else "")
    )
    print(figures("GET /api/jobs?limit=50", latencies))
    if latencies:
        print(f"{'':<34} mean {statistics.fmean(latencies):.1f} ms")


async def bench(
    args: argparse.Namespace, url: str, token: str, nats_url: str | None = None
) -> None:
    await live_latency(url, token, nats_url, args.clients, args.jobs, args.parallel)
    await jobs_under_load(url, token, args.concurrency, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients")
    parser.add_argument("--jobs", type=int, default=20, help="jobs submitted while they watch")
    parser.add_argument("--parallel", type=int, default=5, help="submissions in flight")
    parser.add_argument("--concurrency", type=int, default=32, help="GET /api/jobs in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the load lasts")
    parser.add_argument("--url", help="a running gateway (default: start a stack)")
    parser.add_argument("--token", help="an API token for --url")
    parser.add_argument("--nats-url", help="its NATS, to split the latency at the bus")
    args = parser.parse_args()
    if args.url:
        if not args.token:
            parser.error("--url needs --token")
        asyncio.run(bench(args, args.url.rstrip("/"), args.token, args.nats_url))
        return
    with tempfile.TemporaryDirectory(prefix="vdo-bench-") as home:
        settings = Settings(
            home=Path(home),
            port=free_port(),
            log_level="WARNING",
            admin_token=SecretStr(BENCH_TOKEN),
        )
        # No rate limit: the load generator is one token asking as fast as it can.
        environ = {**os.environ, "VDO_RATE_LIMIT_PER_MINUTE": "0"}
        stack = Stack(settings, echo=None, environ=environ)
        stack.start()
        try:
            asyncio.run(bench(args, stack.gateway_url, BENCH_TOKEN, stack.nats_url))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
