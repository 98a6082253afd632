"""Pipeline benchmark: push N jobs through the whole stack with the instant scripted model.

Run by hand: `uv run python bench/pipeline --jobs 200` (or `make bench`). Prints jobs/s,
submit → completed latency, the time per hop (an event committed → the next service starting
its step) and the orchestration overhead per job (its latency minus the time spent inside its
steps' own work, e.g. the sandbox runs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from vdo_cli.embedded import free_port
from vdo_cli.stack import Stack
from vdo_kernel.settings import Settings


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


async def submit_all(api: httpx.AsyncClient, n: int, parallel: int) -> list[str]:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> str:
        async with gate:
            r = await api.post(
                "/api/jobs",
                json={"title": f"bench {i}", "description": "a command-line word-count tool"},
            )
            r.raise_for_status()
            job_id: str = r.json()["id"]
            return job_id

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def histories(api: httpx.AsyncClient, job_ids: list[str]) -> list[list[dict[str, Any]]]:
    out = []
    for job_id in job_ids:
        r = await api.get(f"/api/jobs/{job_id}/events")
        body = r.json()
        out.append(body["items"] if isinstance(body, dict) else body)
    return out


def analyse(all_events: list[list[dict[str, Any]]]) -> dict[str, list[float]]:
    latency, overhead, hops, work = [], [], [], []
    per_step: dict[str, list[float]] = {}
    per_hop: dict[str, list[float]] = {}
    for events in all_events:
        by_position = {e["position"]: e for e in events}
        submitted = ts(events[0])
        end = events[-1]
        if end["type"] != "JobCompleted":
            continue
        total = ts(end) - submitted
        inside = 0.0
        started_at: dict[str, float] = {}
        for e in events:
            if e["type"] == "StepStarted":
                started_at[e["data"]["step"]] = ts(e)
                cause = by_position.get(int(e["causation_id"]))
                if cause is not None:
                    hops.append(ts(e) - ts(cause))
                    per_hop.setdefault(e["data"]["step"], []).append(ts(e) - ts(cause))
            elif e["type"] == "StepFinished":
                step_time = ts(e) - started_at.get(e["data"]["step"], ts(e))
                inside += step_time
                work.append(step_time)
                per_step.setdefault(e["data"]["step"], []).append(step_time)
        latency.append(total)
        overhead.append(total - inside)
    results = {"latency": latency, "overhead": overhead, "hops": hops, "work": work}
    results.update({f"step {k}": v for k, v in per_step.items()})
    results.update({f"hop to {k}": v for k, v in per_hop.items()})
    return results


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) used so far by each part of the stack."""
    parts: dict[str, list[psutil.Process]] = {}
    for name, proc in stack.procs.items():
        if proc.popen is not None:
            parts[name] = [psutil.Process(proc.popen.pid)]
    for name, server in (("nats", stack.nats), ("postgres", stack.postgres)):
        if server is not None and server.process is not None:
            root = psutil.Process(server.process.pid)
            parts[name] = [root, *root.children(recursive=True)]
    used: dict[str, float] = {}
    for name, processes in parts.items():
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        used[name] = total
    return used


async def bench(stack: Stack, jobs: int, parallel: int, limit: float) -> None:
    # The first admin's token, which the stack keeps for the CLI at its first start.
    token = (stack.home / "admin-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, headers=headers) as api:
        # Warm up every service (first requests, prepared statements, imports).
        baseline = (await api.get("/api/stats")).json()
        await submit_all(api, 3, 3)
        await wait_all_new(api, baseline, 3, limit)
        baseline = (await api.get("/api/stats")).json()
        cpu_before = cpu_seconds(stack)
        started = time.monotonic()
        if parallel == 1:
            # One job at a time: the latency of a job alone, with no queueing behind others.
            job_ids = []
            for _ in range(jobs):
                job_ids += await submit_all(api, 1, 1)
                await wait_all_new(api, baseline, len(job_ids), limit)
        else:
            job_ids = await submit_all(api, jobs, parallel)
        submitted = time.monotonic()
        await wait_all_new(api, baseline, jobs, limit)
        finished = time.monotonic()
        cpu_after = cpu_seconds(stack)
        results = analyse(await histories(api, job_ids))
    completed = len(results["latency"])
    print(f"jobs submitted        {jobs} ({parallel} requests in flight)")
    print(f"jobs completed        {completed}")
    print(f"submit time           {ms(submitted - started)}")
    print(f"wall time             {ms(finished - started)}")
    print(f"throughput            {jobs / (finished - started):8.1f} jobs/s")
    for name, label in (
        ("latency", "submit → completed"),
        ("overhead", "orchestration overhead/job"),
        ("hops", "hop: commit → next step"),
        ("work", "work inside one step"),
        *((k, k) for k in results if k.startswith(("step ", "hop to "))),
    ):
        values = results[name]
        print(
            f"{label:<27} p50 {ms(pct(values, 50))}  p95 {ms(pct(values, 95))}  "
            f"p99 {ms(pct(values, 99))}  (n={len(values)}, mean {ms(statistics.fmean(values))})"
        )
    print_cpu(cpu_before, cpu_after, jobs)


async def wait_all_new(
    api: httpx.AsyncClient, baseline: dict[str, Any], jobs: int, limit: float
) -> None:
    base = baseline.get("by_status", baseline)
    done_before = sum(int(base.get(s, 0)) for s in ("completed", "failed", "cancelled"))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        body = (await api.get("/api/stats")).json()
        counts = body.get("by_status", body)
        done = sum(int(counts.get(s, 0)) for s in ("completed", "failed", "cancelled"))
        if done - done_before >= jobs:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"jobs still running after {limit}s")


def print_cpu(before: dict[str, float], after: dict[str, float], jobs: int) -> None:
    total = 0.0
    print("CPU per job, by process (user + system; the sandbox includes its runs):")
    for name in after:
        used = after[name] - before.get(name, 0.0)
        total += used
        print(f"  {name:<10} {used / jobs * 1000:8.1f} ms")
    print(f"  {'all':<10} {total / jobs * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--parallel", type=int, default=50, help="submissions in flight (1: one job at a time)"
    )
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdo-bench-") as home:
        settings = Settings(
            home=Path(home),
            port=free_port(),
            log_level="WARNING",
            # The pipeline's throughput, not the queue's limits: every job may run at once.
            max_running_jobs=max(args.jobs, 1),
            max_running_jobs_per_user=max(args.jobs, 1),
        )
        stack = Stack(settings, echo=None)
        stack.start()
        try:
            asyncio.run(bench(stack, args.jobs, args.parallel, args.timeout))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
