"""Running untrusted code under bubblewrap: namespaces, no daemon.

Each run gets its own user, pid, mount, network, ipc, uts and cgroup namespaces: no network
(loopback only), no host environment, no capabilities and no new privileges, the host's /usr
read-only, a small /etc of its own, a size-limited private /tmp and /dev/shm, and the workspace
as the only writable host directory. Memory, processes and CPU are limited by a cgroup of the
run's own when the host lets this process make one (cgroup v2 or v1, as root), otherwise by
resource limits; wall time, output and workspace size are watched from here. When the run ends,
its namespace's init is killed, which takes every process the run started with it.

When this service runs as root, bubblewrap itself is started as the unprivileged host user
HOST_UID (after the run has entered its cgroup and taken its resource limits): the sandbox's
user is then that user outside too, so what it writes is that user's, and nothing it could
reach (a root-only file in a mount, a root process after a namespace escape) is its own. The
workspace is handed to that user for the run; the directories above the workspace and the
mounts get the traverse bit for others where they lack it (never read permission). A service
that is not root runs bubblewrap as itself.

A run with a ready check of kind port or command is started under a small supervisor inside the
sandbox (the network namespace is the run's own, so only a process inside can reach its ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from vdo_kernel.hostfs import allow_traverse
from vdo_sandbox.backend import (
    MIB,
    Limits,
    LineSink,
    ReadyCheck,
    RunResult,
    RunSpec,
    SandboxUnavailableError,
)
from vdo_sandbox.cgroups import Cgroups, CgroupStats, RunCgroup
from vdo_sandbox.output import CappedOutput

log = logging.getLogger(__name__)

SANDBOX_UID = 65534
# The host user bubblewrap (and so the sandbox) runs as when this service is root: `nobody`
# (65534, group `nogroup`). It exists on every Debian/Ubuntu host; by policy it owns no files
# and runs nothing that matters; it is outside every range adduser, systemd's DynamicUser= and
# /etc/subuid hand out, so it never collides with a real account or a container's ids; and it
# is the uid the sandbox has inside, so the workspace shows the same owner on both sides. A
# program that escaped the namespaces would be `nobody` without capabilities: no root-owned
# file, process or cgroup would be its own. (Another service run as `nobody` on the same host
# could reach a workspace during its run: run no other service as `nobody`.)
HOST_UID = 65534
HOST_GID = 65534
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
WORKSPACE = "/workspace"
SANDBOX_PYTHON = "/usr/bin/python3"
BASE_ENV = {
    "PATH": SANDBOX_PATH,
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",  # lines reach the live log (and an output ready check) as printed
}
# The sandbox's /etc: just enough for name lookups of localhost and of its own user.
ETC_FILES = {
    "/etc/passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORKSPACE}:/bin/sh\n"
    ),
    "/etc/group": f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\n",
    "/etc/hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
    "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}
# Host paths bound read-only when they exist (python3 may be reached through alternatives).
HOST_READ_ONLY = ("/etc/alternatives", "/etc/ld.so.cache")
NETWORK_FILES = ("/etc/resolv.conf", "/etc/ssl", "/etc/ca-certificates")
# Sandbox paths a RunSpec mount may not cover.
# (the sandbox's own paths, not the host's)
RESERVED = ("/", "/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc", "/proc", "/dev", "/tmp")  # noqa: S108

CHUNK = 64 * 1024
# Output is drained (and counted) past the cap so the program never blocks on a full pipe, but
# a run that keeps printing is stopped once it has printed this many times the cap.
OUTPUT_KILL_FACTOR = 8
WORKSPACE_POLL_SECONDS = 0.25
WORKSPACE_MAX_ENTRIES = 100_000
STOP_GRACE_SECONDS = 5.0
# Exit status of the cgroup-entering wrapper when it cannot enter the run's cgroup.
WRAPPER_FAILED = 125
WRAPPER_MARK = "vdo-sandbox-wrapper:"
# Writes its own pid into each cgroup.procs file given before `--`, sets resource limits, then
# becomes bwrap (as root: setpriv, which becomes bwrap as HOST_UID): every process of the run
# starts inside the run's cgroup, and only this root shell can put it there.
WRAPPER = (
    'while [ "$1" != -- ]; do '
    f'echo $$ > "$1" || {{ echo "{WRAPPER_MARK} cannot enter $1" >&2; exit {WRAPPER_FAILED}; }}; '
    "shift; done; shift; "
    'while [ "$1" != -- ]; do '
    f'ulimit $1 $2 || {{ echo "{WRAPPER_MARK} ulimit $1 $2 failed" >&2; exit {WRAPPER_FAILED}; }}; '
    "shift 2; done; shift; "
    'exec "$@"'
)

# The supervisor of a run with a port or command ready check (`ready_supervisor.py`), run inside
# the sandbox by the sandbox's python3 from its source text.
SUPERVISOR = (Path(__file__).parent / "ready_supervisor.py").read_text(encoding="utf-8")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def bwrap_binary() -> str:
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailableError(
            "bubblewrap is not installed (apt-get install bubblewrap); "
            "generated code is never run unsandboxed"
        )
    return found


def setpriv_binary() -> str:
    """util-linux's setpriv, which starts bubblewrap as HOST_UID when this service is root."""
    found = shutil.which("setpriv", path=SANDBOX_PATH + ":/usr/sbin:/sbin")
    if not found:
        raise SandboxUnavailableError(
            "setpriv is not installed (apt-get install util-linux): as root, bubblewrap is run "
            f"as the unprivileged uid {HOST_UID} through it, never as root"
        )
    return found


def hand_over(workspace: Path, uid: int, gid: int) -> None:
    """The workspace belongs to the sandbox's host user for the run, so it can write there; its
    top directory is closed to other users (its parents are traversable by anyone).

    Walked through directory descriptors without following links (a link is never a way out
    of the workspace); a file with more than one link is left alone (never give away a file
    that is also somewhere else)."""
    top = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(top, uid, gid)
        os.fchmod(top, stat.S_IMODE(os.fstat(top).st_mode) & 0o700)
    finally:
        os.close(top)
    for _, directories, files, dir_fd in os.fwalk(workspace, follow_symlinks=False):
        for name in directories + files:
            with contextlib.suppress(OSError):
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (info.st_uid, info.st_gid) == (uid, gid):
                    continue
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    continue
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


# ---- the backend -----------------------------------------------------------------------------


class BubblewrapBackend:
    """Runs each RunSpec under bubblewrap on this host."""

    name = "bubblewrap"

    def __init__(self, *, bwrap: str | None = None, cgroups: bool = True) -> None:
        self.bwrap = bwrap or bwrap_binary()
        try:
            shown = subprocess.run(
                [self.bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailableError(f"{self.bwrap} cannot be run: {error}") from error
        self.version = shown.stdout.strip() or "bubblewrap (version unknown)"
        try:
            usage = subprocess.run(
                [self.bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            usage = ""
        # bubblewrap >= 0.8: no user namespace can be made inside (less kernel to attack).
        self.disable_userns = "--disable-userns" in usage
        # bubblewrap >= 0.5 sets modes, >= 0.6 sizes a tmpfs; without a size, a tmpfs is bounded
        # only by the run's memory limit (its pages count against it).
        self.perms = "--perms" in usage
        self.sized_tmpfs = "--size" in usage
        # As root, bubblewrap is started as HOST_UID: it makes its user namespace as that
        # unprivileged user, so the sandbox's uid is HOST_UID outside, not root.
        self.as_root = os.geteuid() == 0
        self.setpriv = setpriv_binary() if self.as_root else None
        self.host_uid = HOST_UID if self.as_root else os.getuid()
        self.host_gid = HOST_GID if self.as_root else os.getgid()
        self.cgroups = Cgroups.detect() if cgroups else None
        self.nproc_option = _nproc_option()
        self._probe()

    def _probe(self) -> None:
        """A first run of `true`: fails now, clearly, when namespaces are not allowed here."""
        args = self._bwrap_args(Path("/"), {}, {}, Limits(), network=False, probe=True)
        try:
            done = subprocess.run(
                [*args, "true"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SandboxUnavailableError(f"bubblewrap cannot start a sandbox: {error}") from error
        if done.returncode != 0:
            who = f" as the unprivileged uid {HOST_UID}" if self.as_root else ""
            raise SandboxUnavailableError(
                f"bubblewrap cannot start a sandbox{who} on this host "
                f"({(done.stderr or done.stdout).strip()}); user namespaces may be disabled "
                "for unprivileged users (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0, kernel.apparmor_restrict_unprivileged_userns=0)"
            )

    def describe(self) -> str:
        if self.cgroups is not None:
            limits = f"memory, processes and CPU limited through {self.cgroups.describe()}"
        else:
            limits = (
                "no cgroup of its own (not root, or no delegation): memory, processes and CPU "
                "limited by resource limits only"
            )
            # RLIMIT_NPROC counts the processes of the host user, all runs at once.
            limits += f" (the process limit counts every process of host uid {self.host_uid})"
        if not self.sized_tmpfs:
            limits += "; /tmp not sized (bubblewrap < 0.6): bounded by the memory limit"
        if self.as_root:
            runs_as = f"the unprivileged host uid {self.host_uid} (dropped from root by setpriv)"
        else:
            runs_as = f"this service's user (host uid {self.host_uid})"
        return (
            f"{self.version} ({self.bwrap}); {limits}; bubblewrap runs as {runs_as}: sandbox "
            f"uid {SANDBOX_UID} is host uid {self.host_uid}, without capabilities"
        )

    async def run(self, spec: RunSpec, on_line: LineSink | None = None) -> RunResult:
        if not spec.command:
            raise ValueError("nothing to run: the command is empty")
        if not spec.workspace.is_dir():
            raise ValueError(f"the workspace {spec.workspace} is not a directory")
        env = {**BASE_ENV, **_checked_env(spec.env)}
        mounts = _checked_mounts(spec.mounts)
        spec = replace(spec, workspace=spec.workspace.resolve())
        return await _Run(self, spec, env, mounts, on_line).run()

    # ---- the command line ----------------------------------------------------------------

    def _bwrap_args(
        self,
        workspace: Path,
        env: dict[str, str],
        mounts: dict[Path, str],
        limits: Limits,
        *,
        network: bool,
        probe: bool = False,
        etc_fds: dict[str, int] | None = None,
        info_fd: int | None = None,
    ) -> list[str]:
        args = [*self._unprivileged(), self.bwrap, "--unshare-all", "--unshare-user"]
        if network:
            args.append("--share-net")
        if self.disable_userns:
            args.append("--disable-userns")
        args += [
            "--die-with-parent",
            "--new-session",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += ["--ro-bind", "/usr", "/usr"]
        for link in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            target = Path("/") / link
            if target.is_symlink():
                args += ["--symlink", os.readlink(target), f"/{link}"]
            elif target.is_dir():
                args += ["--ro-bind", str(target), f"/{link}"]
        args += [*self._perms("0755"), "--dir", "/etc"]
        for path in HOST_READ_ONLY + (NETWORK_FILES if network else ()):
            args += ["--ro-bind-try", path, path]
        for path, fd in (etc_fds or {}).items():
            args += [*self._perms("0444"), "--ro-bind-data", str(fd), path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for path in ("/dev/shm", "/tmp"):  # noqa: S108 - the sandbox's own
            size = ["--size", str(limits.tmpfs_bytes)] if self.sized_tmpfs else []
            args += [*size, *self._perms("1777"), "--tmpfs", path]
        if not probe:
            args += ["--bind", str(workspace), WORKSPACE]
            for host_path, sandbox_path in mounts.items():
                args += ["--ro-bind", str(host_path), sandbox_path]
        # Nothing else is writable: not the root, not /dev (each its own unlimited tmpfs).
        args += ["--remount-ro", "/dev", "--remount-ro", "/"]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        args += ["--chdir", WORKSPACE if not probe else "/"]
        return [*args, "--"]

    def _perms(self, mode: str) -> list[str]:
        return ["--perms", mode] if self.perms else []

    def _unprivileged(self) -> list[str]:
        """As root: what starts bubblewrap as HOST_UID, with no groups, no capabilities (none
        inheritable, an empty bounding set) and no way to gain privileges by exec. bubblewrap
        then makes its namespaces as that user; its sandbox uid maps to HOST_UID outside."""
        if self.setpriv is None:
            return []
        return [
            self.setpriv,
            f"--reuid={self.host_uid}",
            f"--regid={self.host_gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]

    def _prepare(self, workspace: Path, mounts: dict[Path, str]) -> None:
        """As root: the workspace is handed to HOST_UID, and the directories above it and
        above the mounts are made traversable by that user (bubblewrap, started as that user,
        binds them). The mounts themselves must be readable by anyone (deps.py makes its
        environments so)."""
        if not self.as_root:
            return
        hand_over(workspace, self.host_uid, self.host_gid)
        # Checked on every run (a stat per directory): a directory is changed at most once,
        # and one made again since (a new job's, a removed and remade root) is changed too.
        for parent in {path.parent for path in (workspace, *mounts)}:
            allow_traverse(parent)

    def _wrapper_args(self, cgroup: RunCgroup | None, limits: Limits) -> list[str]:
        """The cgroup-entering wrapper, with the resource limits the run gets."""
        rlimits = [
            ("-c", "0"),  # no core files in the workspace
            ("-f", str(max(limits.workspace_bytes // 512, 1))),  # no file larger than the limit
        ]
        limited = self.cgroups.controllers if (self.cgroups and cgroup) else frozenset()
        if "memory" not in limited:
            rlimits.append(("-v", str(max(limits.memory_bytes // 1024, 1024))))
        if "pids" not in limited:
            rlimits.append((self.nproc_option, str(limits.pids)))
        if "cpu" not in limited:
            rlimits.append(("-t", str(max(int(limits.wall_seconds * limits.cpus) + 1, 1))))
        procs = [str(path) for path in cgroup.procs_files()] if cgroup else []
        flat = [word for pair in rlimits for word in pair]
        return ["/bin/sh", "-c", WRAPPER, "vdo-sandbox", *procs, "--", *flat, "--"]


def _nproc_option() -> str:
    """The shell's ulimit option for the number of processes: -u (bash), -p (dash)."""
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", "ulimit -u"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "-p"
    return "-u" if done.returncode == 0 else "-p"


def _checked_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not _ENV_NAME.match(name) or "\x00" in value:
            raise ValueError(f"not an environment variable: {name!r}")
    return dict(env)


def _checked_mounts(mounts: dict[Path, str]) -> dict[Path, str]:
    checked: dict[Path, str] = {}
    for host_path, sandbox_path in mounts.items():
        target = PurePosixPath(sandbox_path)
        reserved = any(
            target == PurePosixPath(r) or (r != "/" and PurePosixPath(r) in target.parents)
            for r in RESERVED
        )
        if (
            not target.is_absolute()
            or ".." in target.parts
            or reserved
            or target == PurePosixPath(WORKSPACE)
            or PurePosixPath(WORKSPACE) in target.parents
        ):
            raise ValueError(f"cannot mount {host_path} at {sandbox_path!r}")
        if not host_path.exists():
            raise ValueError(f"cannot mount {host_path}: it does not exist")
        checked[host_path.resolve()] = str(target)
    return checked


# ---- one run ---------------------------------------------------------------------------------


@dataclass
class _Verdict:
    ready: bool
    detail: str


class _Run:
    def __init__(
        self,
        backend: BubblewrapBackend,
        spec: RunSpec,
        env: dict[str, str],
        mounts: dict[Path, str],
        on_line: LineSink | None,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.limits = spec.limits
        self.env = env
        self.mounts = mounts
        self.started = time.monotonic()
        self.output = CappedOutput(self.limits.output_bytes, self.started, on_line)
        self.stop = asyncio.Event()
        self.reason = ""  # why the run was stopped before its program ended
        self.verdict: _Verdict | None = None
        self.workspace_over = False
        self.workspace_bytes = 0
        self.output_over = False
        self.text_seen = False
        self._window = b""

    def _stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()

    async def run(self) -> RunResult:
        ready = self.spec.ready
        supervised = ready is not None and ready.kind in ("port", "command")
        if ready is not None and ready.kind not in ("port", "command", "output", "stays_up"):
            raise ValueError(f"unknown ready check kind {ready.kind!r}")
        if self.backend.as_root:
            try:
                await asyncio.to_thread(self.backend._prepare, self.spec.workspace, self.mounts)
            except OSError as error:
                raise SandboxUnavailableError(
                    f"cannot give the sandbox's user (uid {self.backend.host_uid}) the "
                    f"workspace {self.spec.workspace} or its mounts: {error}"
                ) from error
        cgroup = None
        if self.backend.cgroups is not None:
            # A few small writes to cgroupfs: quicker here than a hop to a thread.
            try:
                cgroup = self.backend.cgroups.create(self.limits)
            except OSError as error:
                raise SandboxUnavailableError(f"cannot make the run's cgroup: {error}") from error
        pipes: list[int] = []  # read ends and write ends we hold until the run has started
        try:
            etc_fds = {path: _data_pipe(text, pipes) for path, text in ETC_FILES.items()}
            info_read, info_write = _pipe(pipes)
            report_read = report_write = None
            command = list(self.spec.command)
            if supervised:
                assert ready is not None
                report_read, report_write = _pipe(pipes)
                command = self._supervised(ready, report_write, command)
            args = [
                *self.backend._wrapper_args(cgroup, self.limits),
                *self.backend._bwrap_args(
                    self.spec.workspace,
                    self.env,
                    self.mounts,
                    self.limits,
                    network=self.limits.network,
                    etc_fds=etc_fds,
                    info_fd=info_write,
                ),
                *command,
            ]
            passed = (*etc_fds.values(), info_write) + ((report_write,) if report_write else ())
            try:
                process = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=passed,
                    env={"PATH": SANDBOX_PATH},
                )
            except OSError as error:
                raise SandboxUnavailableError(
                    f"bubblewrap could not be started: {error}"
                ) from error
            # Only the run holds the write ends now: each pipe ends when the run does.
            for fd in passed:
                _close(fd, pipes)
            for fd in etc_fds.values():
                _close(fd, pipes)
            return await self._supervise(process, cgroup, info_read, report_read, pipes)
        finally:
            for fd in list(pipes):
                _close(fd, pipes)
            if cgroup is not None:
                await _even_if_cancelled(asyncio.to_thread(cgroup.remove))

    def _supervised(self, ready: ReadyCheck, report_fd: int, command: list[str]) -> list[str]:
        if ready.kind == "port" and ready.port is None:
            raise ValueError("a port ready check names no port")
        if ready.kind == "command" and not ready.command:
            raise ValueError("a command ready check names no command")
        budget = self.limits.wall_seconds
        config = {
            "fd": report_fd,
            "kind": ready.kind,
            "port": ready.port,
            "command": list(ready.command),
            "timeout": round(max(budget - 0.5, budget * 0.9, 0.1), 3),
        }
        return [SANDBOX_PYTHON, "-I", "-S", "-c", SUPERVISOR, json.dumps(config), *command]

    async def _supervise(
        self,
        process: asyncio.subprocess.Process,
        cgroup: RunCgroup | None,
        info_read: int,
        report_read: int | None,
        pipes: list[int],
    ) -> RunResult:
        outer = _pidfd(process.pid)
        init = _Init()
        # Readers end with their pipe (when the run ends); timers are cancelled then.
        readers = [
            asyncio.create_task(self._pump(process)),
            asyncio.create_task(self._read_info(info_read, pipes, process.pid, init)),
        ]
        if report_read is not None:
            readers.append(asyncio.create_task(self._read_report(report_read, pipes)))
        timers = [asyncio.create_task(self._watch_workspace())]
        ready = self.spec.ready
        if ready is not None and ready.kind == "stays_up":
            timers.append(asyncio.create_task(self._stays_up(ready.seconds)))
        exited = False
        try:
            deadline = self.started + self.limits.wall_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), max(deadline - time.monotonic(), 0))
            if not self.stop.is_set():
                self._stop("timeout")
            if self.reason == "exited":
                # The output ended: the program is done (or closed its output): let it report
                # its own exit status before anything is killed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), max(deadline - time.monotonic(), 0.1))
                exited = process.returncode is not None
                if not exited:
                    self.reason = "timeout"
        finally:
            await _even_if_cancelled(self._end(process, outer, init, cgroup, readers, timers))
        stats = await asyncio.to_thread(cgroup.stats) if cgroup else CgroupStats()
        if not self.workspace_over:
            await asyncio.to_thread(self._check_workspace)
        return self._result(process, exited, stats)

    async def _end(
        self,
        process: asyncio.subprocess.Process,
        outer: int | None,
        init: _Init,
        cgroup: RunCgroup | None,
        readers: list[asyncio.Task[None]],
        timers: list[asyncio.Task[None]],
    ) -> None:
        """Kill the run's namespace (every process in it) and wait until it is gone."""
        for timer in timers:
            timer.cancel()
        try:
            if process.returncode is None:
                # The namespace's init first: the kernel then kills every process in it, and
                # bwrap, which waits for init, ends once they are all gone.
                _signal(init.fd, init.pid)
                _signal(outer, process.pid)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("bubblewrap did not end after SIGKILL (pid %s)", process.pid)
            if init.fd is not None:
                await _wait_readable(init.fd, STOP_GRACE_SECONDS)
            if cgroup is not None:
                await asyncio.to_thread(_wait_empty, cgroup)
            # What was printed (or reported) before the end is still read: every writer is
            # gone, so each pipe ends.
            await asyncio.wait(readers, timeout=STOP_GRACE_SECONDS)
        finally:
            for task in (*readers, *timers):
                task.cancel()
            await asyncio.gather(*readers, *timers, return_exceptions=True)
            for fd in (outer, init.fd):
                if fd is not None:
                    os.close(fd)
            self.output.finish()

    # ---- while it runs -----------------------------------------------------------------------

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        check = self.spec.ready
        text = check.text.encode() if check is not None and check.kind == "output" else b""
        kill_at = self.limits.output_bytes * OUTPUT_KILL_FACTOR
        while chunk := await process.stdout.read(CHUNK):
            self.output.feed(chunk)
            if text and not self.text_seen:
                window = self._window + chunk
                if text in window:
                    self.text_seen = True
                    self._decide(True, f"printed {text.decode()!r}")
                self._window = window[-max(len(text) - 1, 1) :]
            if self.output.total > kill_at and not self.output_over:
                self.output_over = True
                self._stop("output")
        self._stop("exited")

    async def _read_info(self, fd: int, pipes: list[int], outer: int, init: _Init) -> None:
        """bwrap's --info-fd: the host pid of the namespace's init, held by a pidfd."""
        data = b""
        async with _reading(fd, pipes) as reader:
            while chunk := await reader.read(4096):
                data += chunk
                try:
                    pid = int(json.loads(data)["child-pid"])
                except (ValueError, KeyError, TypeError):
                    continue
                if _parent_of(pid) == outer:
                    handle = _pidfd(pid)
                    # Opened after the check: make sure it is still the same process.
                    if _parent_of(pid) == outer:
                        init.pid, init.fd = pid, handle
                    elif handle is not None:
                        os.close(handle)
                return

    async def _read_report(self, fd: int, pipes: list[int]) -> None:
        data = b""
        async with _reading(fd, pipes) as reader:
            while chunk := await reader.read(4096):
                data += chunk
                line, newline, _ = data.partition(b"\n")
                if not newline:
                    continue
                try:
                    report = json.loads(line)
                    verdict = _Verdict(bool(report["ready"]), str(report["detail"]))
                except (ValueError, KeyError, TypeError):
                    verdict = _Verdict(False, "the ready check's supervisor answered nonsense")
                self._decide(verdict.ready, verdict.detail)
                return

    async def _stays_up(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._decide(True, f"still running after {seconds:g}s")

    def _decide(self, ready: bool, detail: str) -> None:
        if self.verdict is not None:
            return
        if not self.stop.is_set():
            self.verdict = _Verdict(ready, detail)
            self._stop("ready")
        elif self.reason == "exited":
            # The program ended on its own just before the verdict came: it still says why.
            self.verdict = _Verdict(ready, detail)

    async def _watch_workspace(self) -> None:
        while True:
            await asyncio.sleep(WORKSPACE_POLL_SECONDS)
            if await asyncio.to_thread(self._check_workspace):
                self._stop("workspace")
                return

    def _check_workspace(self) -> bool:
        used, entries = disk_usage(self.spec.workspace, WORKSPACE_MAX_ENTRIES)
        self.workspace_bytes = max(self.workspace_bytes, used)
        if used > self.limits.workspace_bytes or entries > WORKSPACE_MAX_ENTRIES:
            self.workspace_over = True
        return self.workspace_over

    # ---- the result ----------------------------------------------------------------------

    def _result(
        self, process: asyncio.subprocess.Process, exited: bool, stats: CgroupStats
    ) -> RunResult:
        limits = self.limits
        code = process.returncode if exited else None
        wrapper_failed = code == WRAPPER_FAILED and WRAPPER_MARK in self.output.text()
        if wrapper_failed:
            raise SandboxUnavailableError(
                f"the run could not enter its cgroup or limits: {self.output.text().strip()}"
            )
        timed_out = self.reason == "timeout"
        reasons = []
        if stats.oom_kills:
            reasons.append(f"memory limit ({limits.memory_bytes // MIB} MiB) reached")
        if self.workspace_over:
            reasons.append(
                f"workspace limit ({limits.workspace_bytes // MIB} MiB) exceeded "
                f"({self.workspace_bytes // MIB} MiB used)"
            )
        if self.output_over:
            reasons.append(
                f"output limit ({limits.output_bytes} bytes) exceeded "
                f"{OUTPUT_KILL_FACTOR} times over"
            )
        if stats.forks_refused:
            reasons.append(
                f"process limit ({limits.pids}) reached: {stats.forks_refused} forks refused"
            )
        killed_reason = "; ".join(reasons)
        notes = []
        if killed_reason:
            notes.append(f"[killed: {killed_reason}]")
        if timed_out:
            notes.append(f"[stopped: wall time of {limits.wall_seconds:g}s reached]")
        text = self.output.text()
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        ready, detail = self._ready(code, timed_out)
        return RunResult(
            exit_code=code,
            output=text,
            duration_seconds=time.monotonic() - self.started,
            timed_out=timed_out,
            truncated=self.output.truncated,
            output_bytes_total=self.output.total,
            ready=ready,
            ready_detail=detail,
            killed_reason=killed_reason,
            peak_memory_bytes=stats.peak_memory_bytes,
            cpu_seconds=stats.cpu_seconds,
            first_output_seconds=self.output.first_output_seconds,
        )

    def _ready(self, code: int | None, timed_out: bool) -> tuple[bool | None, str]:
        check = self.spec.ready
        if check is None:
            return None, ""
        if self.verdict is not None:
            return self.verdict.ready, self.verdict.detail
        if check.kind == "output" and self.text_seen:
            return True, f"printed {check.text!r}"
        if timed_out:
            return False, f"not ready within the wall time of {self.limits.wall_seconds:g}s"
        if code is not None:
            return False, f"exited with code {code} before the {check.kind} check passed"
        return False, f"stopped ({self.reason}) before the {check.kind} check passed"


@dataclass
class _Init:
    pid: int | None = None
    fd: int | None = None


def disk_usage(root: Path, max_entries: int = WORKSPACE_MAX_ENTRIES) -> tuple[int, int]:
    """(bytes, entries) a directory tree takes; stops counting entries past `max_entries`."""
    total = entries = 0
    pending = [root]
    while pending and entries <= max_entries:
        try:
            with os.scandir(pending.pop()) as scan:
                found = list(scan)
        except OSError:
            continue
        for entry in found:
            entries += 1
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += max(info.st_size, info.st_blocks * 512)
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return total, entries


async def _even_if_cancelled(cleanup: Awaitable[None]) -> None:
    """Run `cleanup` to its end even when the caller is cancelled meanwhile (the cancellation
    is passed on once it is done): a cancelled run still leaves nothing behind."""
    task = asyncio.ensure_future(cleanup)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


def _wait_empty(cgroup: RunCgroup) -> None:
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while cgroup.pids() and time.monotonic() < deadline:
        cgroup.kill_all()
        time.sleep(0.01)


def _pipe(pipes: list[int]) -> tuple[int, int]:
    read, write = os.pipe()
    pipes += [read, write]
    return read, write


def _data_pipe(text: str, pipes: list[int]) -> int:
    """A pipe holding `text` (small: it fits the pipe's buffer), for bwrap to read."""
    read, write = _pipe(pipes)
    os.write(write, text.encode())
    _close(write, pipes)
    return read


def _close(fd: int, pipes: list[int]) -> None:
    if fd in pipes:
        pipes.remove(fd)
        os.close(fd)


@contextlib.asynccontextmanager
async def _reading(fd: int, pipes: list[int]) -> AsyncIterator[asyncio.StreamReader]:
    """The read end of a pipe as a stream (the stream owns the descriptor from here on)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipes.remove(fd)
    file = os.fdopen(fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), file
        )
    except BaseException:
        file.close()
        raise
    try:
        yield reader
    finally:
        transport.close()


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold anything: the fields follow the last ")".
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def _signal(pidfd: int | None, pid: int | None) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        elif pid is not None:
            os.kill(pid, signal.SIGKILL)


async def _wait_readable(fd: int, seconds: float) -> None:
    """A pidfd turns readable when its process has ended."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def done() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, done)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended, seconds)
    finally:
        loop.remove_reader(fd)
