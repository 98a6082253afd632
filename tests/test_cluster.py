"""Scale-out on real processes: a three-node NATS cluster on loopback (the stream kept on all
three), two replicas of every service but the gateway, and 50 jobs. Mid-run the node leading
the stream is killed, and so is one replica of each service (SIGKILL, and not restarted). Every
job still completes, every step is recorded once, no model call is paid twice, and the work was
shared by the replicas.

The figures (throughput against a single replica of each service) come from `bench/cluster`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from conftest import create_database, drop_database
from tests.cluster import (
    NatsCluster,
    calls_paid_twice,
    repeated_steps,
    resumed_steps,
    step_workers,
)
from tests.harness import TERMINAL_EVENTS, WORD_COUNT, RunningStack, start_stack

from vdo_cli.embedded import EmbeddedPostgres
from vdo_kernel.subjects import STREAM

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

JOBS = 50
# Every service but the gateway (one port) runs twice; each replica takes two messages at once,
# so that a replica's capacity, not the scheduler, bounds the work.
REPLICATED = ("relay", "projector", "scheduler", "planner", "builder", "tester", "reviewer")
STEP_SERVICE = {
    "plan": "planner",
    "build": "builder",
    "write_tests": "tester",
    "run_tests": "sandbox",
    "review": "reviewer",
    "sandbox_run": "sandbox",
}
PHASE_STEPS = tuple(STEP_SERVICE)


def cluster_settings(nats_url: str) -> dict[str, Any]:
    return {
        "nats_url": nats_url,
        "stream_replicas": 3,
        "consumer_concurrency": 2,
        "sandbox_concurrency": 2,
        # A killed replica's messages come back to the other one after this.
        "ack_wait_seconds": 5.0,
        # Each model call takes a moment, as a real one does.
        "scripted_delay_seconds": 0.2,
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "nats")
    nodes.start()
    yield nodes
    nodes.stop()


def stream_leader(url: str) -> str:
    async def ask() -> str:
        nc = await nats.connect(servers=url.split(","))
        try:
            info = await nc.jetstream().stream_info(STREAM)
        finally:
            await nc.close()
        assert info.cluster is not None
        assert info.cluster.leader
        assert info.config.num_replicas == 3
        return info.cluster.leader

    return asyncio.run(ask())


def wait_all(
    running: RunningStack, job_ids: list[str], timeout: float
) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    histories: dict[str, list[dict[str, Any]]] = {}
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in histories or histories[job_id][-1]["type"] not in TERMINAL_EVENTS:
                histories[job_id] = running.events(job_id)
        if all(h and h[-1]["type"] in TERMINAL_EVENTS for h in histories.values()):
            return histories
        time.sleep(1.0)
    waiting = [j for j, h in histories.items() if not h or h[-1]["type"] not in TERMINAL_EVENTS]
    tail = "\n".join(running.log[-80:])
    raise AssertionError(f"{len(waiting)} jobs did not end in {timeout:g}s\n{tail}")


def wait_consuming(running: RunningStack, names: list[str], timeout: float = 120.0) -> None:
    """Wait until each named replica (`tester`, `tester.2`) has said it is consuming."""
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        waiting -= {line.split("|", 1)[0].strip() for line in running.log if '"consuming"' in line}
        assert time.monotonic() < deadline, (sorted(waiting), "\n".join(running.log[-80:]))
        time.sleep(0.2)


def service_log(running: RunningStack, step: str) -> str:
    """What the replicas of the service doing `step` printed, and what the supervisor did."""
    lines = [line for line in running.log if line.startswith(STEP_SERVICE[step])]
    return "\n".join([*lines[-80:], *running.stack.events])


def completed_count(running: RunningStack) -> int:
    with running.api() as api:
        body = api.get("/api/jobs", params={"status": "completed", "limit": 1}).json()
    total: int = body["total"]
    return total


def test_fifty_jobs_complete_exactly_once_after_losing_a_node_and_a_replica_of_each_service(
    tmp_path: Path, postgres_server: EmbeddedPostgres, cluster: NatsCluster
) -> None:
    url = create_database(postgres_server)
    replicas = dict.fromkeys((*REPLICATED, "sandbox"), 2)
    running = start_stack(
        tmp_path / "home", url, replicas=replicas, **cluster_settings(cluster.url)
    )
    try:
        # Every replica is taking work before any arrives: the split below is then down to the
        # consumers, not to one replica starting a little later than its peer.
        wait_consuming(running, [n for s in STEP_SERVICE.values() for n in (s, f"{s}.2")])
        job_ids = [running.submit(f"wc {i}", WORD_COUNT) for i in range(JOBS)]

        # Mid-run: some jobs done, most still on their way.
        deadline = time.monotonic() + 300
        while completed_count(running) < 5:
            assert time.monotonic() < deadline, "\n".join(running.log[-60:])
            time.sleep(0.5)
        leader = stream_leader(cluster.url)
        victim = next(node for node in cluster.nodes if node.name == leader)
        victim.kill()
        killed = {name: running.stack.kill(f"{name}.2", restart=False) for name in replicas}
        done_at_kill = completed_count(running)
        print(
            f"\nkilled NATS node {leader} (the stream's leader) and {sorted(killed)}.2 "
            f"with {done_at_kill}/{JOBS} jobs completed"
        )

        histories = wait_all(running, job_ids, timeout=600)
        outcomes = {h[-1]["type"] for h in histories.values()}
        assert outcomes == {"JobCompleted"}, [
            (j, h[-1]["type"], h[-1]["data"]) for j, h in histories.items()
        ]
        assert done_at_kill < JOBS, "the kills came after the run had ended"
        assert repeated_steps(histories) == []
        assert calls_paid_twice(histories.values()) == []
        # Every call of the run was answered (a try cut by a kill is closed and tried again).
        assert all(
            any(e["type"] == "ModelCallFinished" for e in events) for events in histories.values()
        )

        print(
            f"steps taken up again by the surviving replicas: {resumed_steps(histories.values())}"
        )
        split = step_workers(histories.values())
        print("the work, per step and replica (worker = service@host:pid):")
        for step in PHASE_STEPS:
            print(f"  {step:<12} " + ", ".join(f"{w}: {n}" for w, n in split[step].most_common()))
        for step in PHASE_STEPS:
            assert len(split[step]) == 2, (step, split[step], killed, service_log(running, step))
            assert sum(split[step].values()) >= JOBS

        # The read models (kept by the surviving projector) agree with the log.
        assert completed_count(running) == JOBS
        # The stream lives on the two nodes left, with its leader among them.
        live = {node.name for node in cluster.live_nodes()}
        assert stream_leader(",".join(n.url for n in cluster.live_nodes())) in live
    finally:
        running.stack.stop()
        drop_database(postgres_server, url)
