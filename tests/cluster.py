"""A three-node NATS cluster on loopback (real nats-server processes, JetStream on every node,
`sync_interval: always`), and a stack of services with several replicas each running on it:
for the multi-node test and the cluster benchmark."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from vdo_cli.embedded import die_with_parent, free_port, nats_server_binary

CLUSTER_NAME = "vdo"


@dataclass
class NatsNode:
    name: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    def configure(self, peers: Iterable[NatsNode]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f'"nats-route://127.0.0.1:{p.cluster_port}"' for p in peers)
        self.config_path.write_text(
            f'server_name: "{self.name}"\n'
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 8MB\n"
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "jetstream"}"\n'
            "  sync_interval: always\n"
            "}\n"
            "cluster {\n"
            f'  name: "{CLUSTER_NAME}"\n'
            f"  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )

    def start(self) -> None:
        with (self.data_dir / "nats.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash, with no goodbye to its peers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def healthy(self) -> bool:
        """JetStream on this node is up and the cluster has a meta leader."""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def jsz(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2)
        body: dict[str, Any] = response.json()
        return body


@dataclass
class NatsCluster:
    root: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as VDO_NATS_URL takes a cluster's."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        self.nodes = [NatsNode(f"n{i + 1}", self.root / f"n{i + 1}") for i in range(self.size)]
        for node in self.nodes:
            node.configure(peer for peer in self.nodes if peer is not node)
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            if time.monotonic() > deadline:
                logs = {n.name: (n.data_dir / "nats.log").read_text()[-2000:] for n in self.nodes}
                raise RuntimeError(f"the NATS cluster did not form in {timeout:g}s: {logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def live_nodes(self) -> list[NatsNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]


# ---- reading what a run did, from the jobs' histories --------------------------------------


def step_workers(histories: Iterable[list[dict[str, Any]]]) -> dict[str, collections.Counter[str]]:
    """For each step, how many times each worker process started it (the split of the work)."""
    split: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for events in histories:
        for event in events:
            if event["type"] == "StepStarted":
                split[event["data"]["step"]][event["data"]["worker"]] += 1
    return dict(split)


def repeated_steps(histories: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, int, int]]:
    """Every (job, step, attempt) recorded as finished more than once, with the count."""
    repeats: list[tuple[str, str, int, int]] = []
    for job_id, events in histories.items():
        done = collections.Counter(
            (e["data"]["step"], e["data"]["attempt"])
            for e in events
            if e["type"] in ("StepFinished", "StepFailed")
        )
        repeats.extend((job_id, step, attempt, n) for (step, attempt), n in done.items() if n > 1)
    return repeats


def resumed_steps(histories: Iterable[list[dict[str, Any]]]) -> int:
    """How many steps were taken up again after their worker was lost."""
    return sum(e["type"] == "StepResumed" for events in histories for e in events)


def calls_paid_twice(histories: Iterable[list[dict[str, Any]]]) -> list[str]:
    """Every model call (job, step, attempt, call) with more than one try answered in full."""
    paid: collections.Counter[str] = collections.Counter()
    for events in histories:
        for event in events:
            if event["type"] == "ModelCallFinished" and event["data"]["outcome"] == "ok":
                key = event["data"]["key"].rsplit(":", 1)[0]  # the try number left out
                paid[key] += 1
    return [key for key, n in paid.items() if n > 1]
