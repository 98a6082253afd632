"""The cgroups of bubblewrap runs: one per run (a directory per hierarchy on cgroup v1, one on
v2), made when this process may make them (as root, with a delegated or writable hierarchy),
with the run's memory, process and CPU limits, read for the run's figures, and removed with
whatever is left in them at the run's end."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from vdo_sandbox.backend import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CgroupStats:
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    oom_kills: int = 0
    forks_refused: int = 0


@dataclass
class RunCgroup:
    """The cgroup (one directory per hierarchy on v1) of one run."""

    version: int
    dirs: dict[str, Path]  # controller ("" for v2) -> directory

    def procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self._unique()]

    def _unique(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(line) for line in procs.read_text().split())
        return found

    def kill_all(self) -> None:
        """Kill whatever is still in the cgroup (normally nothing: the pid namespace is gone)."""
        if self.version == 2:
            kill = self.dirs[""] / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
                return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def stats(self) -> CgroupStats:
        if self.version == 2:
            base = self.dirs[""]
            micros = _field(base / "cpu.stat", "usage_usec")
            return CgroupStats(
                peak_memory_bytes=_int(base / "memory.peak"),
                cpu_seconds=micros / 1e6 if micros is not None else None,
                oom_kills=_field(base / "memory.events", "oom_kill") or 0,
                forks_refused=_field(base / "pids.events", "max") or 0,
            )
        memory, pids = self.dirs.get("memory"), self.dirs.get("pids")
        cpuacct = self.dirs.get("cpuacct")
        nanos = _int(cpuacct / "cpuacct.usage") if cpuacct else None
        return CgroupStats(
            peak_memory_bytes=_int(memory / "memory.max_usage_in_bytes") if memory else None,
            cpu_seconds=nanos / 1e9 if nanos is not None else None,
            oom_kills=(_field(memory / "memory.oom_control", "oom_kill") or 0) if memory else 0,
            forks_refused=(_field(pids / "pids.events", "max") or 0) if pids else 0,
        )

    def remove(self) -> None:
        for directory in self._unique():
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", directory, error)
                        break
                    self.kill_all()
                    time.sleep(0.02)


@dataclass
class Cgroups:
    """Where this process can make a cgroup per run, and with which controllers.

    `parents` maps each controller this process can limit ("memory", "pids", "cpu", and
    "cpuacct" for figures on v1; "" on v2, where one directory holds them all) to the
    directory the runs' cgroups are made in."""

    version: int
    parents: dict[str, Path]
    controllers: frozenset[str]
    _count: int = field(default=0, repr=False)

    def describe(self) -> str:
        limited = sorted(self.controllers & {"memory", "pids", "cpu"})
        return f"cgroup v{self.version} ({', '.join(limited)})"

    def create(self, limits: Limits) -> RunCgroup:
        self._count += 1
        name = f"vdo-run-{os.getpid()}-{self._count}-{os.urandom(3).hex()}"
        dirs = {controller: parent / name for controller, parent in self.parents.items()}
        run = RunCgroup(self.version, dirs)
        try:
            for directory in run._unique():
                directory.mkdir()
            self._limit(run, limits)
        except OSError:
            run.remove()
            raise
        return run

    def _limit(self, run: RunCgroup, limits: Limits) -> None:
        memory = str(limits.memory_bytes)
        quota = max(int(limits.cpus * 100_000), 1000)
        if self.version == 2:
            base = run.dirs[""]
            if "memory" in self.controllers:
                (base / "memory.max").write_text(memory)
                _write_if_present(base / "memory.swap.max", "0")
                _write_if_present(base / "memory.oom.group", "1")
            if "pids" in self.controllers:
                (base / "pids.max").write_text(str(limits.pids))
            if "cpu" in self.controllers:
                (base / "cpu.max").write_text(f"{quota} 100000")
            return
        if "memory" in run.dirs:
            (run.dirs["memory"] / "memory.limit_in_bytes").write_text(memory)
            _write_if_present(run.dirs["memory"] / "memory.memsw.limit_in_bytes", memory)
        if "pids" in run.dirs:
            (run.dirs["pids"] / "pids.max").write_text(str(limits.pids))
        if "cpu" in run.dirs:
            (run.dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
            (run.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))

    @classmethod
    def detect(cls) -> Cgroups | None:
        """The cgroups this process may make, or None (not root, no delegation, no cgroupfs)."""
        try:
            mounts = _cgroup_mounts(Path("/proc/self/mountinfo").read_text())
            membership = _membership(Path("/proc/self/cgroup").read_text())
        except OSError:
            return None
        found = cls._v2(mounts, membership) or cls._v1(mounts, membership)
        if found is not None:
            found._cleanup_stale()
        return found

    @classmethod
    def _v2(
        cls, mounts: list[tuple[str, Path, set[str], str]], membership: dict[str, str]
    ) -> Cgroups | None:
        unified = next(((m, root) for kind, m, _, root in mounts if kind == "cgroup2"), None)
        if unified is None or "" not in membership:
            return None
        mount, root = unified
        own = _inside(mount, root, membership[""])
        if own is None:
            return None
        wanted = {"memory", "pids", "cpu"}
        available = set(_read(own / "cgroup.controllers").split()) & wanted
        if not {"memory", "pids"} <= available:
            return None
        enable = " ".join(f"+{name}" for name in sorted(available))
        # Controllers can be handed down only by a cgroup with no processes of its own (the
        # root excepted): this process's own cgroup if it is the root, else a sibling of it.
        candidates = [own] if own == mount else [own.parent / "vdo-sandbox"]
        for parent in candidates:
            try:
                parent.mkdir(exist_ok=True)
                (parent / "cgroup.subtree_control").write_text(enable)
                probe = parent / f"vdo-probe-{os.getpid()}"
                probe.mkdir()
                probe.rmdir()
            except OSError:
                continue
            return cls(2, {"": parent}, frozenset(available))
        return None

    @classmethod
    def _v1(
        cls, mounts: list[tuple[str, Path, set[str], str]], membership: dict[str, str]
    ) -> Cgroups | None:
        parents: dict[str, Path] = {}
        for kind, mount, options, root in mounts:
            if kind != "cgroup":
                continue
            for controller in ("memory", "pids", "cpu", "cpuacct"):
                if controller in options and controller in membership:
                    own = _inside(mount, root, membership[controller])
                    if own is not None:
                        parents[controller] = own
        usable: dict[str, Path] = {}
        for controller, parent in parents.items():
            probe = parent / f"vdo-probe-{os.getpid()}"
            try:
                probe.mkdir()
                probe.rmdir()
            except OSError:
                continue
            usable[controller] = parent
        if not {"memory", "pids"} <= usable.keys():
            return None
        return cls(1, usable, frozenset(usable))

    def _cleanup_stale(self) -> None:
        """Remove run cgroups left by processes that are gone (a crash, say)."""
        for parent in set(self.parents.values()):
            with contextlib.suppress(OSError):
                for entry in parent.iterdir():
                    match = re.fullmatch(r"vdo-run-(\d+)-.*", entry.name)
                    if match and not Path(f"/proc/{match.group(1)}").exists():
                        run = RunCgroup(self.version, {"": entry})
                        run.kill_all()
                        run.remove()


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, Path, set[str], str]]:
    """(fstype, mount point, super options, root within the hierarchy) of each cgroup mount."""
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((tail[0], Path(fields[4]), set(tail[2].split(",")), fields[3]))
    return found


def _membership(text: str) -> dict[str, str]:
    """Controller ("" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _inside(mount: Path, root: str, path: str) -> Path | None:
    """The directory of cgroup `path` in a hierarchy mounted at `mount` from `root`."""
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    directory = mount / relative.lstrip("/")
    return directory if directory.is_dir() else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path) -> int | None:
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


def _field(path: Path, key: str) -> int | None:
    for line in _read(path).splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key and words[1].isdigit():
            return int(words[1])
    return None


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(value)
