"""Portability benchmark: time a backup and a restore of a log of N events with their blobs.

Run by hand: `uv run python bench/portability --events 100000`. Starts its own PostgreSQL in a
temporary directory, writes finished jobs (each with a full step history and blobs like the
scripted services write) straight through the store, then times `write_bundle`, verifying
and loading the bundle into a second, empty database, and rebuilding the read models.

Creating the restored blob files dominates the load on ext4 when many files were deleted in
the minutes before (as the previous run's clean-up does): the file system then skips recently
freed inodes one by one. Leave five minutes between runs for comparable figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from vdo_cli.embedded import EmbeddedPostgres
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bundle import open_bundle
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.portability import restore, write_bundle
from vdo_kernel.store import JobStore
from vdo_projector.projection import checksums, rebuild

PASSING = {
    Step.PLAN: Outcome.OK,
    Step.BUILD: Outcome.OK,
    Step.WRITE_TESTS: Outcome.OK,
    Step.RUN_TESTS: Outcome.PASSED,
    Step.REVIEW: Outcome.APPROVED,
    Step.SANDBOX_RUN: Outcome.UP,
}
EVENTS_PER_JOB = 2 + 2 * len(PASSING)
JOBS_PER_APPEND = 100

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    print(f"{label:<34} {seconds:7.2f} s")
    return result, seconds


def finished_job(blobs: BlobStore, n: int) -> Job:
    """A job through every step, with per-job blobs (plan, code) and shared ones (tests,
    outputs), as the scripted services write them."""
    job = Job.submit(title=f"bench job {n}", description="a FastAPI todo API with tests")
    job.admit(by="scheduler", causation_id="test")
    while (due := job.due()) is not None:
        job.start_step(due, worker="bench", causation_id=str(n))
        artifacts: dict[str, str]
        if due.step is Step.PLAN:
            plan = {"job": n, "files": ["app.py"], "run": "python app.py"}
            artifacts = {"plan": blobs.put(json.dumps(plan).encode())}
        elif due.step is Step.BUILD:
            code = blobs.put_text(f'print("Hello from job {n}")\n')
            artifacts = {"files": blobs.put(json.dumps({"app.py": code}).encode())}
        elif due.step is Step.WRITE_TESTS:
            test = blobs.put_text("def test_app():\n    assert True\n")
            artifacts = {"tests": blobs.put(json.dumps({"test_app.py": test}).encode())}
        else:
            artifacts = {"output": blobs.put_text(f"{due.step}: 1 passed\n")}
        job.finish_step(
            due,
            outcome=PASSING[due.step],
            summary=f"{due.step} done for job {n}",
            causation_id=str(n),
            artifacts=artifacts,
            details={"model": "bench", "duration_seconds": 0.1},
        )
    return job


def fill(store: JobStore, blobs: BlobStore, events: int) -> None:
    jobs = -(-events // EVENTS_PER_JOB)
    for first in range(0, jobs, JOBS_PER_APPEND):
        batch: list[Any] = []
        for n in range(first, min(first + JOBS_PER_APPEND, jobs)):
            batch.extend(finished_job(blobs, n).collect_events())
        store.app.events.put(batch)


def create_database(server: EmbeddedPostgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdo-bench-") as tmp:
        root = Path(tmp)
        server = EmbeddedPostgres(root / "postgres", durable=True)
        server.start()
        try:
            run(server, root, args.events)
        finally:
            server.stop()


def run(server: EmbeddedPostgres, root: Path, events: int) -> None:
    source_url, target_url = create_database(server), create_database(server)
    source, target = JobStore(source_url, pool_size=2), JobStore(target_url, pool_size=2)
    source_blobs, target_blobs = BlobStore(root / "a" / "blobs"), BlobStore(root / "b" / "blobs")
    try:
        timed(f"generate ~{events} events", lambda: fill(source, source_blobs, events))
        print(f"{'events in the log':<34} {source.max_position():7d}")
        scratch = root / "scratch"
        scratch.mkdir()
        out = root / "backup.tar.gz"
        manifest, backup_s = timed(
            "backup (vdo backup)",
            lambda: write_bundle(source, source_blobs, out, scratch=scratch),
        )
        size = out.stat().st_size
        print(
            f"{'bundle':<34} {size / 1e6:7.1f} MB  ({manifest.counts.events} events, "
            f"{manifest.counts.jobs} jobs, {manifest.counts.blobs} blobs)"
        )

        def verify_and_load() -> float:
            started = time.perf_counter()
            with open_bundle(out) as bundle:
                verified = time.perf_counter() - started
                restore(target, target_blobs, bundle)
            return verified

        verify_s, load_s = timed("restore: verify + load events/blobs", verify_and_load)
        print(f"{'  of which verifying the bundle':<34} {verify_s:7.2f} s")
        summary, rebuild_s = timed("restore: rebuild read models", lambda: rebuild(target_url))
        print(f"{'restore total':<34} {load_s + rebuild_s:7.2f} s")
        rebuild(source_url)
        same = checksums(source_url) == checksums(target_url)
        print(f"{'read models identical':<34} {same!s:>7}  ({summary.events_applied} events)")
        print(f"{'backup events/s':<34} {manifest.counts.events / backup_s:7.0f}")
    finally:
        source.close()
        target.close()


if __name__ == "__main__":
    main()
