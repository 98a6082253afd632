"""Sandbox benchmark: how long a bubblewrap run takes, alone and many at once.

Run by hand: `uv run python bench/sandbox`. For three commands (a no-op, starting the scripted
program, running its unit tests) prints the run time alone (p50/p95 over repeated runs) and the
throughput with many runs at once, which bounds the pipeline's jobs/s on this machine (each job
runs its tests once and starts its result once).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from vdo_sandbox import bubblewrap

APP = "def greeting(name):\n    return f'Hello, {name}!'\n\nprint('ready')\n"
TESTS = (
    "import unittest\nfrom app import greeting\n\n\nclass T(unittest.TestCase):\n"
    "    def test_greets(self):\n        self.assertEqual(greeting('a'), 'Hello, a!')\n"
)
COMMANDS = {
    "no-op (true)": ["true"],
    "start app.py": ["python3", "app.py"],
    "unit tests": ["python3", "-m", "unittest", "-q"],
}


def workspace(root: Path, source: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=root))
    shutil.copytree(source, target, dirs_exist_ok=True)
    target.chmod(0o755)
    return target


async def one(root: Path, source: Path, command: list[str]) -> float:
    ws = workspace(root, source)
    started = time.perf_counter()
    result = await bubblewrap.run(ws, command, bubblewrap.RunLimits(wall_seconds=30))
    took = time.perf_counter() - started
    shutil.rmtree(ws, ignore_errors=True)
    if result.exit_code != 0:
        raise SystemExit(f"{command} failed in the sandbox:\n{result.output}")
    return took


def prepare(root: Path) -> Path:
    root.chmod(0o755)
    source = root / "source"
    source.mkdir()
    (source / "app.py").write_text(APP)
    (source / "test_app.py").write_text(TESTS)
    return source


async def bench(repeat: int, parallel: int) -> None:
    with tempfile.TemporaryDirectory(prefix="vdo-bench-sandbox-") as tmp:
        root = Path(tmp)
        source = prepare(root)
        for label, command in COMMANDS.items():
            alone = [await one(root, source, command) for _ in range(repeat)]
            started = time.perf_counter()
            await asyncio.gather(*(one(root, source, command) for _ in range(parallel)))
            wall = time.perf_counter() - started
            ordered = sorted(alone)
            print(
                f"{label:<14} alone p50 {statistics.median(alone) * 1000:6.1f} ms  "
                f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:6.1f} ms  |  "
                f"{parallel} at once: {parallel / wall:6.1f} runs/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(bench(args.repeat, args.parallel))


if __name__ == "__main__":
    main()
