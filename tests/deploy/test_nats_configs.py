"""The NATS configurations: nats-server accepts them, and three servers started from the cluster
configuration (on loopback, free ports) form a cluster that keeps an R3 stream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from tests.deploy.layout import DEPLOY

NATS_SERVER = Path(sys.executable).parent / "nats-server"
CONFIGS = sorted((DEPLOY / "nats").glob("*.conf"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_is_valid(config: Path) -> None:
    text = config.read_text()
    assert "sync_interval: always" in text
    checked = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(config)],
        env={**os.environ, "NATS_SERVER_NAME": "check"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


def _node_config(text: str, name: str, ports: dict[str, dict[str, int]], store: Path) -> str:
    """The cluster configuration as it is, but on loopback: each node's own ports, its routes
    to the others' loopback ports, its own store."""
    own = ports[name]
    text = text.replace("port: 4222", f"port: {own['client']}\nhost: 127.0.0.1")
    text = text.replace("http_port: 8222", f"http_port: {own['http']}")
    text = text.replace("  port: 6222", f"  port: {own['cluster']}\n  host: 127.0.0.1")
    text = text.replace("/data/jetstream", str(store))
    for node, node_ports in ports.items():
        text = text.replace(f"{node}:6222", f"127.0.0.1:{node_ports['cluster']}")
    return text


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        data = json.load(response)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, dict[str, int]]]:
    text = (DEPLOY / "nats" / "cluster.conf").read_text()
    names = ["nats-1", "nats-2", "nats-3"]
    for name in names:
        assert f"nats-route://{name}:6222" in text
    ports = {
        n: {"client": _free_port(), "http": _free_port(), "cluster": _free_port()} for n in names
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in names:
            config = tmp_path / f"{name}.conf"
            config.write_text(_node_config(text, name, ports, tmp_path / name))
            with (tmp_path / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [str(NATS_SERVER), "-c", str(config)],
                        env={**os.environ, "NATS_SERVER_NAME": name},
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_three_nodes_form_a_cluster_and_keep_an_r3_stream(
    cluster: dict[str, dict[str, int]],
) -> None:
    deadline = time.monotonic() + 60
    routes: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            routes = {
                n: _get(f"http://127.0.0.1:{p['http']}/routez")["num_routes"]
                for n, p in cluster.items()
            }
            meta = _get(f"http://127.0.0.1:{cluster['nats-1']['http']}/jsz")["meta_cluster"]
            if all(count >= 2 for count in routes.values()) and meta.get("leader"):
                break
        except (OSError, KeyError):
            pass
        time.sleep(0.3)
    else:
        pytest.fail(f"the cluster did not form in 60s: routes {routes}")

    async def replicated() -> Any:
        urls = [f"nats://127.0.0.1:{p['client']}" for p in cluster.values()]
        nc = await nats.connect(servers=urls, connect_timeout=5)
        try:
            js = nc.jetstream()
            info = await js.add_stream(
                StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3, storage=StorageType.FILE)
            )
            await js.publish("r3.one", b"kept", timeout=10)
            return info
        finally:
            await nc.close()

    info = asyncio.run(asyncio.wait_for(replicated(), 60))
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2  # and the leader: three copies
