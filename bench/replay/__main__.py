"""Replay benchmark: a log of N events, then the read models rebuilt from it and verified.

Run by hand: `uv run python bench/replay --events 100000`. Starts its own PostgreSQL in a
temporary directory (or uses `--database-url`, which must name an empty database), writes jobs
with full histories straight through the store (completed, some after a retry; failed; resumed
steps; cancelled), then times `rebuild` (the read models dropped and replayed from the log) and
`verify` (the log replayed aside and compared with the live read models) and prints events/s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from vdo_cli.embedded import EmbeddedPostgres
from vdo_kernel.domain import PIPELINE, REJECTING_OUTCOMES, Job, Outcome, Step
from vdo_kernel.store import JobStore
from vdo_projector.projection import Projection, rebuild
from vdo_projector.verify import verify

GOOD = {
    Step.PLAN: Outcome.OK,
    Step.BUILD: Outcome.OK,
    Step.WRITE_TESTS: Outcome.OK,
    Step.RUN_TESTS: Outcome.PASSED,
    Step.REVIEW: Outcome.APPROVED,
    Step.SANDBOX_RUN: Outcome.UP,
}
# Events appended per transaction while the log is written.
WRITE_BATCH = 2000


def history(rng: random.Random, number: int) -> Job:
    """One job from submission to its end (mostly), as the services would have written it."""
    job = Job.submit(
        title=f"bench job {number}",
        description="a FastAPI todo API with SQLite and tests; " * rng.randint(1, 5),
        max_attempts=rng.randint(1, 3),
    )
    job.admit(by="scheduler", causation_id="test")
    ending = rng.random()
    if ending < 0.05:
        job.cancel(reason="not needed any more", by="bench", causation_id="bench")
        return job
    while (due := job.due()) is not None:
        job.start_step(due, worker=f"{due.step.value}-{rng.randint(1, 4)}", causation_id="bench")
        if rng.random() < 0.05:  # the worker died: the step is resumed
            job.start_step(due, worker="spare", causation_id="bench")
        if ending < 0.10 and due.step is Step.BUILD:
            job.fail_step(due, reason="the model is unreachable", causation_id="bench")
            break
        rejected = REJECTING_OUTCOMES.get(due.step)
        outcome = rejected if rejected and rng.random() < 0.2 else GOOD[due.step]
        job.finish_step(
            due,
            outcome=outcome,
            summary=f"{due.step.value} of attempt {due.attempt}: " + "fine " * rng.randint(1, 20),
            causation_id="bench",
            artifacts={"files": f"{rng.getrandbits(256):064x}"},
            details={"model": "scripted", "tokens": rng.randint(100, 5000), "cost_usd": 0.01},
        )
        if ending > 0.97 and due.step is PIPELINE[-2]:
            break  # still running
    return job


def write_log(store: JobStore, events: int, seed: int) -> int:
    rng = random.Random(seed)
    pending: list[Any] = []
    written = jobs = 0
    while written + len(pending) < events:
        pending.extend(history(rng, jobs).collect_events())
        jobs += 1
        if len(pending) >= WRITE_BATCH:
            store.app.events.put(pending)
            written += len(pending)
            pending = []
    if pending:
        store.app.events.put(pending)
        written += len(pending)
    return jobs


def run(database_url: str, events: int, seed: int) -> None:
    store = JobStore(database_url, pool_size=2)
    try:
        started = time.perf_counter()
        jobs = write_log(store, events, seed)
        total = store.max_position()
        took = time.perf_counter() - started
        print(f"log: {total} events of {jobs} jobs written in {took:.1f} s")
        projection = Projection(database_url, store, batch_size=5000)
        try:
            started = time.perf_counter()
            projection.catch_up()
            took = time.perf_counter() - started
            print(f"incremental projection: {took:6.2f} s  {total / took:9,.0f} events/s")
        finally:
            projection.close()
    finally:
        store.close()

    summary = rebuild(database_url)
    rate = summary.events_applied / summary.duration_seconds
    print(f"rebuild:                {summary.duration_seconds:6.2f} s  {rate:9,.0f} events/s")
    report = verify(database_url)
    rate = report.position / report.duration_seconds
    print(f"replay --verify:        {report.duration_seconds:6.2f} s  {rate:9,.0f} events/s")
    print("verified equal" if report.equal else f"NOT EQUAL: {report.to_json()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="an empty database (default: a temporary one)")
    args = parser.parse_args()
    if args.database_url:
        run(args.database_url, args.events, args.seed)
        return
    with tempfile.TemporaryDirectory(prefix="vdo-bench-") as home:
        server = EmbeddedPostgres(Path(home) / "postgres", durable=False)
        server.start()
        try:
            run(server.url, args.events, args.seed)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
