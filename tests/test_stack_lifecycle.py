"""`vdo up` as a user runs it: starts everything (the first time, the first admin, its token
printed once), stops cleanly on Ctrl-C, keeps every job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from tests.harness import WORD_COUNT, RunningStack

from vdo_cli.embedded import free_port


def start(home: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "VDO_HOME": str(home), "VDO_PORT": str(port), "VDO_LOG_FORMAT": "json"}
    for name in ("VDO_DATABASE_URL", "VDO_NATS_URL", "VDO_ADMIN_TOKEN", "VDO_AUTH"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "vdo_cli.main", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(api: httpx.Client, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if api.get("/api/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the stack did not become healthy")


def wait_status(api: httpx.Client, job_id: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(f"/api/jobs/{job_id}")
        if response.status_code == 200 and response.json()["status"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never became {status}")


def processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(home) in cmdline or environ.get("VDO_HOME") == str(home):
            found.append(proc)
    return found


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-3000:]
    return output


def test_ctrl_c_stops_everything_and_a_restart_keeps_every_job(tmp_path: Path) -> None:
    home = tmp_path / "vdo-home"
    port = free_port()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
        job_id = run_once_and_stop(api, home, port)
        restart_and_find_it(api, home, port, job_id)


def run_once_and_stop(api: httpx.Client, home: Path, port: int) -> str:
    first = start(home, port)
    try:
        wait_healthy(api, first)
        # It names the database (and any password in its URL): the owner's alone.
        assert (home / "stack.json").stat().st_mode & 0o777 == 0o600
        # The first start made the first admin, and keeps its token for the owner alone.
        assert (home / "admin-token").stat().st_mode & 0o777 == 0o600
        token = (home / "admin-token").read_text().strip()
        assert api.get("/api/jobs").status_code == 401
        api.headers["Authorization"] = f"Bearer {token}"
        response = api.post("/api/jobs", json={"title": "kept", "description": WORD_COUNT})
        assert response.status_code == 201
        job_id: str = response.json()["id"]
        wait_status(api, job_id, "completed")
    finally:
        output = stop(first)
    for service in ("relay", "projector", "planner", "builder", "tester", "reviewer", "sandbox"):
        assert f"{service:<10}|" in output, f"no output from {service}"
    assert "stack     | stopped" in output
    assert output.count(token) == 1, "the admin token is printed once, at the first start"
    assert f"it is kept in {home / 'admin-token'}" in output
    time.sleep(0.5)
    assert processes_under(home) == [], "something was left running after Ctrl-C"
    assert not (home / "stack.json").exists()
    return job_id


def restart_and_find_it(api: httpx.Client, home: Path, port: int, job_id: str) -> None:
    second = start(home, port)
    try:
        wait_healthy(api, second)
        kept = api.get(f"/api/jobs/{job_id}")
        assert kept.status_code == 200
        assert kept.json()["status"] == "completed"
        events = api.get(f"/api/jobs/{job_id}/events").json()["items"]
        assert events[-1]["type"] == "JobCompleted"
        response = api.post("/api/jobs", json={"title": "after", "description": WORD_COUNT})
        wait_status(api, response.json()["id"], "completed")
        assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    finally:
        output = stop(second)
    token = (home / "admin-token").read_text().strip()
    assert token not in output, "a restart does not show the admin token again"
    assert f"the admin token is kept in {home / 'admin-token'}" in output
    assert processes_under(home) == []


def test_external_servers_are_used_and_none_is_embedded(make_stack: Any, nats_url: str) -> None:
    running: RunningStack = make_stack(nats_url=nats_url)  # the database is external too
    assert running.stack.nats is None
    assert running.stack.postgres is None
    assert running.nats_url == nats_url
    job_id = running.submit("external", WORD_COUNT)
    events = running.wait_for(job_id)
    assert events[-1]["type"] == "JobCompleted"
    assert not (running.stack.home / "postgres").exists()
    assert not (running.stack.home / "nats").exists()


def test_services_started_before_nats_and_postgresql_wait_for_them_then_run(
    tmp_path: Path,
) -> None:
    """As in a compose file or a cluster, where everything starts at once: each service waits
    for the servers (saying so) instead of failing, then starts; SIGTERM stops it cleanly."""
    from vdo_cli.embedded import EmbeddedNats, EmbeddedPostgres

    postgres = EmbeddedPostgres(tmp_path / "postgres", durable=False)
    nats = EmbeddedNats(tmp_path / "nats")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VDO_")},
        "VDO_HOME": str(tmp_path / "home"),
        "VDO_DATABASE_URL": postgres.url,
        "VDO_NATS_URL": nats.url,
        "VDO_LOG_FORMAT": "json",
        "VDO_STARTUP_TIMEOUT_SECONDS": "90",
    }
    heartbeats = {name: tmp_path / f"{name}.heartbeat" for name in ("projector", "relay")}
    # Nothing listens on either port yet.
    services = {
        name: subprocess.Popen(
            [sys.executable, "-m", module],
            env={**env, "VDO_HEARTBEAT_PATH": str(heartbeats[name])},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, module in (("projector", "vdo_projector"), ("relay", "vdo_kernel.relay"))
    }
    try:
        time.sleep(3)
        for name, process in services.items():
            assert process.poll() is None, f"{name} gave up: {process.communicate()[0]}"
            # Waiting is not being stuck: the liveness heartbeat goes on.
            assert time.time() - heartbeats[name].stat().st_mtime < 10, name
        postgres.start()
        nats.start()
        started = {"projector": "projector started", "relay": "relay started"}
        for name, process in services.items():
            assert process.stdout is not None
            seen: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                seen.append(line)
                if started[name] in line:
                    break
            else:
                raise AssertionError(f"{name} did not start: {''.join(seen)}")
            assert any("waiting for PostgreSQL" in line for line in seen), "".join(seen)
    finally:
        for process in services.values():
            process.send_signal(signal.SIGTERM)
        for process in services.values():
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        nats.stop()
        postgres.stop()
    assert all(p.returncode == 0 for p in services.values()), {
        n: p.returncode for n, p in services.items()
    }
    assert not any(path.exists() for path in heartbeats.values())
