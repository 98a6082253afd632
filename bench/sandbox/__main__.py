"""Sandbox benchmark: how fast a run starts and how long it takes, on each backend.

Run by hand: `uv run python bench/sandbox`. For each backend (bubblewrap, and Docker when its
engine answers and the sandbox image is there) prints:

- first output: from asking for a run to its first byte of output (p50/p95), for `echo` and
  for `python3 -c print(...)`; the targets are p50 <= 50 ms on bubblewrap and <= 500 ms on
  Docker (figures only, no verdict);
- for three commands (a no-op, starting the scripted program, running its unit tests) the run
  time alone (p50/p95) and the throughput with many runs at once, which bounds the pipeline's
  jobs/s on this machine (each job runs its tests once and starts its result once);
- the resident memory of this process (the one running the backend, as the sandbox service
  does) before and after all those runs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from vdo_kernel.settings import Settings
from vdo_sandbox.backend import Backend, Limits, RunSpec, SandboxUnavailableError

APP = "def greeting(name):\n    return f'Hello, {name}!'\n\nprint('ready')\n"
TESTS = (
    "import unittest\nfrom app import greeting\n\n\nclass T(unittest.TestCase):\n"
    "    def test_greets(self):\n        self.assertEqual(greeting('a'), 'Hello, a!')\n"
)
FIRST_OUTPUT = {
    "echo": ("echo", "ready"),
    "python3 print": ("python3", "-c", "print('ready')"),
}
COMMANDS = {
    "no-op (true)": ("true",),
    "start app.py": ("python3", "app.py"),
    "unit tests": ("python3", "-m", "unittest", "-q"),
}
TARGETS_MS = {"bubblewrap": 50, "docker": 500}
LIMITS = Limits(wall_seconds=60)
MIB = 1024 * 1024


def workspace(root: Path, source: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=root))
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


async def one(backend: Backend, root: Path, source: Path, command: tuple[str, ...]) -> float:
    """One run; returns the seconds to its first output (or to its end when it printed none)."""
    ws = workspace(root, source)
    started = time.perf_counter()
    result = await backend.run(RunSpec(workspace=ws, command=command, limits=LIMITS))
    took = time.perf_counter() - started
    shutil.rmtree(ws, ignore_errors=True)
    if result.exit_code != 0:
        raise SystemExit(f"{command} failed in the sandbox ({backend.name}):\n{result.output}")
    return result.first_output_seconds if result.first_output_seconds is not None else took


async def timed(backend: Backend, root: Path, source: Path, command: tuple[str, ...]) -> float:
    started = time.perf_counter()
    await one(backend, root, source, command)
    return time.perf_counter() - started


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(values) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms"


def prepare(root: Path) -> Path:
    source = root / "source"
    source.mkdir()
    (source / "app.py").write_text(APP)
    (source / "test_app.py").write_text(TESTS)
    return source


async def bench_backend(backend: Backend, repeat: int, parallel: int) -> None:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    print(f"{backend.name}: {backend.describe()}")
    with tempfile.TemporaryDirectory(prefix="vdo-bench-sandbox-") as tmp:
        root = Path(tmp)
        source = prepare(root)
        await one(backend, root, source, ("true",))  # warm up (page cache, image layers)
        target = TARGETS_MS.get(backend.name)
        for label, command in FIRST_OUTPUT.items():
            firsts = [await one(backend, root, source, command) for _ in range(repeat)]
            goal = f"  (target p50 <= {target} ms)" if target else ""
            print(f"  first output, {label:<14} {percentiles(firsts)}{goal}")
        runs = repeat * len(FIRST_OUTPUT)
        for label, command in COMMANDS.items():
            alone = [await timed(backend, root, source, command) for _ in range(repeat)]
            started = time.perf_counter()
            await asyncio.gather(*(one(backend, root, source, command) for _ in range(parallel)))
            wall = time.perf_counter() - started
            runs += repeat + parallel
            print(
                f"  {label:<14} alone {percentiles(alone)}  |  "
                f"{parallel} at once: {parallel / wall:6.1f} runs/s"
            )
    rss_after = process.memory_info().rss
    print(
        f"  this process's RSS: {rss_before / MIB:.1f} MiB before, {rss_after / MIB:.1f} MiB "
        f"after {runs} runs ({(rss_after - rss_before) / MIB:+.1f} MiB)"
    )


def backends(wanted: str) -> list[Backend | str]:
    """The backends to measure, or for each one that cannot run here, why."""
    found: list[Backend | str] = []
    if wanted in ("all", "bubblewrap"):
        try:
            from vdo_sandbox.bubblewrap import BubblewrapBackend

            found.append(BubblewrapBackend())
        except SandboxUnavailableError as error:
            found.append(f"bubblewrap: not available ({error})")
    if wanted in ("all", "docker"):
        from vdo_sandbox.choose import docker_unavailable

        image = Settings().sandbox_image_python
        problem = docker_unavailable(image)
        if problem:
            found.append(f"docker: engine not available ({problem})")
        else:
            from vdo_sandbox.docker_backend import DockerBackend

            found.append(DockerBackend(image))
    return found


async def bench(repeat: int, parallel: int, wanted: str) -> None:
    rss = psutil.Process().memory_info().rss
    print(f"resident memory of this process at start: {rss / MIB:.1f} MiB")
    for backend in backends(wanted):
        if isinstance(backend, str):
            print(backend)
            continue
        try:
            await bench_backend(backend, repeat, parallel)
        finally:
            close = getattr(backend, "close", None)
            if callable(close):
                close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--backend", choices=["all", "bubblewrap", "docker"], default="all")
    args = parser.parse_args()
    asyncio.run(bench(args.repeat, args.parallel, args.backend))


if __name__ == "__main__":
    main()
