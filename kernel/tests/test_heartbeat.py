"""The heartbeat: renewed while the event loop runs, not while it is stuck, gone when the loop
ends; and the probe that reads it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from vdo_kernel.heartbeat import start_heartbeat

PROBE = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "probe.py"


def test_the_file_is_renewed_while_the_loop_runs_not_while_it_is_stuck_and_removed_at_the_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "heartbeat"
    seen: dict[str, float] = {}

    async def service() -> None:
        start_heartbeat(path, every=0.05)
        await asyncio.sleep(0.2)
        seen["first"] = path.stat().st_mtime
        await asyncio.sleep(0.2)
        seen["running"] = path.stat().st_mtime
        time.sleep(0.3)  # a stuck loop: nothing renews the file meanwhile
        seen["stuck"] = path.stat().st_mtime
        seen["stuck_at"] = time.time()

    asyncio.run(service())
    assert seen["running"] > seen["first"]
    assert seen["stuck_at"] - seen["stuck"] >= 0.25
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def probe(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, str(PROBE), "alive"],
        env={k: v for k, v in os.environ.items() if not k.startswith("VDO_")} | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_the_liveness_probe_reads_the_heartbeats_age(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    path.write_text("now\n")
    assert probe({"VDO_HEARTBEAT_PATH": str(path)}) == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert probe({"VDO_HEARTBEAT_PATH": str(path)}) == 1
    assert probe({"VDO_HEARTBEAT_PATH": str(path), "VDO_HEARTBEAT_MAX_AGE": "300"}) == 0
