"""Cluster benchmark: the same jobs on a three-node NATS cluster (the stream on all three),
first with one replica of each service, then with two, and the scaling factor between them.

Run by hand: `uv run python bench/cluster --jobs 50`. Each replica takes `--concurrency`
messages at once and runs that many sandbox runs at once, so that a replica's capacity, not the
queue, bounds the work; the scripted model takes `--model-seconds` per call, as a real model
takes a while. Throughput is the jobs over the time from the first submission to the last
completion, read from the jobs' own histories.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster import NatsCluster, step_workers
from tests.harness import TERMINAL_EVENTS, WORD_COUNT, RunningStack, start_stack

from vdo_cli.embedded import EmbeddedPostgres

SCALED = ("relay", "projector", "scheduler", "planner", "builder", "tester", "reviewer", "sandbox")


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def run(
    root: Path, postgres: EmbeddedPostgres, replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    cluster = NatsCluster(root / f"nats-{replicas}")
    cluster.start()
    database = f"bench_{replicas}"
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    running: RunningStack | None = None
    try:
        running = start_stack(
            root / f"home-{replicas}",
            f"postgresql://postgres@127.0.0.1:{postgres.port}/{database}",
            replicas=dict.fromkeys(SCALED, replicas),
            nats_url=cluster.url,
            stream_replicas=3,
            consumer_concurrency=args.concurrency,
            sandbox_concurrency=args.concurrency,
            scripted_delay_seconds=args.model_seconds,
        )
        job_ids = [running.submit(f"bench {i}", WORD_COUNT) for i in range(args.jobs)]
        histories: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            for job_id in job_ids:
                if job_id not in histories or histories[job_id][-1]["type"] not in TERMINAL_EVENTS:
                    histories[job_id] = running.events(job_id)
            if all(h and h[-1]["type"] in TERMINAL_EVENTS for h in histories.values()):
                break
            time.sleep(1.0)
        else:
            raise SystemExit(f"the jobs did not end in {args.timeout:g}s")
    finally:
        if running is not None:
            running.stack.stop()
        cluster.stop()
    failed = [j for j, h in histories.items() if h[-1]["type"] != "JobCompleted"]
    first = min(ts(h[0]) for h in histories.values())
    last = max(ts(h[-1]) for h in histories.values())
    latencies = sorted(ts(h[-1]) - ts(h[0]) for h in histories.values())
    return {
        "replicas": replicas,
        "failed": len(failed),
        "seconds": last - first,
        "per_minute": len(histories) / (last - first) * 60,
        "p50_latency": latencies[len(latencies) // 2],
        "split": step_workers(histories.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--model-seconds", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdo-bench-cluster-") as tmp:
        root = Path(tmp)
        postgres = EmbeddedPostgres(root / "postgres", durable=False)
        postgres.start()
        try:
            results = [run(root, postgres, replicas, args) for replicas in (1, 2)]
        finally:
            postgres.stop()
    print(
        f"{args.jobs} word-count jobs, 3-node NATS cluster (R3), {args.concurrency} messages "
        f"at once per replica, {args.model_seconds:g}s per model call"
    )
    for result in results:
        print(
            f"  {result['replicas']} replica(s) of each service: {result['seconds']:6.1f} s, "
            f"{result['per_minute']:5.1f} jobs/min, p50 submit→completed "
            f"{result['p50_latency']:5.1f} s, {result['failed']} failed"
        )
        for step, workers in sorted(result["split"].items()):
            shares = ", ".join(str(n) for _, n in workers.most_common())
            print(f"      {step:<12} per replica: {shares}")
    factor = results[1]["per_minute"] / results[0]["per_minute"]
    print(f"scaling factor (2 replicas over 1): {factor:.2f}x")


if __name__ == "__main__":
    main()
