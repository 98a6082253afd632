"""Running untrusted code in a Docker container (through the engine's SDK).

Each run is one fresh container of the sandbox image: no network, a read-only root, the
workspace as the only writable directory besides a small /tmp, an unprivileged user with no
capabilities, and cgroup limits on CPU, memory (no swap) and processes. The container is
removed at the end of the run, and every process in it with it.

The SDK is synchronous: each blocking call runs in a thread of its own (a run holds two for
its whole length, the output reader and the exit waiter, so they are not taken from the
event loop's shared pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount, Ulimit

from vdo_sandbox.backend import (
    MIB,
    LineSink,
    ReadyCheck,
    RunResult,
    RunSpec,
    SandboxUnavailableError,
)
from vdo_sandbox.image import SANDBOX_PATH, SANDBOX_UID
from vdo_sandbox.output import LONGEST_LINE

log = logging.getLogger(__name__)

T = TypeVar("T")

LABEL = "vdo.sandbox"
DEFAULT_ENGINE = "unix:///var/run/docker.sock"
ENGINE_HINT = (
    "start it (dockerd, or `systemctl start docker`), or install it: apt-get install docker.io"
)
WORKSPACE = "/workspace"
BASE_ENV = {
    "PATH": SANDBOX_PATH,
    "HOME": WORKSPACE,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
POLL_SECONDS = 0.5  # workspace size and cgroup figures, while the run goes on
PROBE_SECONDS = 0.25  # between two tries of a port or command ready check
# Errors the engine's API raises when the container went away under a call (run ended).
GONE = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)

# Tries to connect to a TCP port on the container's own loopback; exit 0 when one answers.
PORT_PROBE = """
import socket, sys
for host in ("127.0.0.1", "::1"):
    try:
        socket.create_connection((host, int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        pass
sys.exit(1)
"""

# Runs a ready check's command for at most 10 s; prints the start of its output (the rest is
# read and dropped, inside the sandbox) and exits with its code.
COMMAND_PROBE = """
import subprocess, sys, threading
try:
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
except OSError as error:
    print(error)
    sys.exit(127)
kept = bytearray()
def drain():
    for chunk in iter(lambda: child.stdout.read1(65536), b""):
        kept.extend(chunk[: 2000 - len(kept)])
reader = threading.Thread(target=drain, daemon=True)
reader.start()
try:
    code = child.wait(timeout=10)
except subprocess.TimeoutExpired:
    child.kill()
    kept.extend(b"(no answer within 10 s)")
    code = 124
reader.join(1)
sys.stdout.buffer.write(bytes(kept[:2000]))
sys.exit(code)
"""


class DockerBackend:
    """Runs each RunSpec in a fresh container of `image` on the local Docker engine."""

    name = "docker"

    def __init__(self, image: str, client: docker.DockerClient | None = None) -> None:
        self.image = image
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._engine_cpus: float | None = None

    def close(self) -> None:
        """Close the engine connection this backend opened (not one it was given)."""
        with self._lock:
            if self._client is not None and self._owns_client:
                self._client.close()
                self._client = None

    def describe(self) -> str:
        try:
            version = self._docker().version().get("Version", "?")
        except (SandboxUnavailableError, *GONE) as error:
            return f"docker (engine not answering: {error}; image {self.image})"
        return f"docker (engine {version}, image {self.image})"

    async def run(self, spec: RunSpec, on_line: LineSink | None = None) -> RunResult:
        if not spec.command:
            raise ValueError("nothing to run: the command is empty")
        started = time.monotonic()
        client = await _threaded(self._docker)
        await _threaded(hand_over, spec.workspace)
        container = await self._create_or_drop(client, spec)
        try:
            return await _Run(client, container, spec, started, on_line).run()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxUnavailableError(f"the Docker engine failed the run: {error}") from error
        finally:
            # Removal kills whatever is left in the container; done even when cancelled.
            await asyncio.shield(_threaded(_remove, container, daemon=False))

    async def _create_or_drop(self, client: Any, spec: RunSpec) -> Any:
        """Creates the run's container; when the run is cancelled meanwhile, the container is
        removed as soon as it exists (by whichever side learns of the other last)."""
        lock = threading.Lock()
        made: list[Any] = []
        abandoned = False

        def create() -> Any:
            container = self._create(client, spec)
            with lock:
                made.append(container)
                drop = abandoned
            if drop:
                _remove(container)
            return container

        try:
            return await asyncio.shield(_threaded(create, daemon=False))
        except asyncio.CancelledError:
            with lock:
                abandoned = True
                orphans = list(made)
            for container in orphans:
                threading.Thread(target=_remove, args=(container,)).start()
            raise

    def _docker(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = connect()
            return self._client

    def _cpus(self, client: Any, wanted: float) -> float:
        """The engine refuses more CPUs than it has: ask for at most that many."""
        if self._engine_cpus is None:
            self._engine_cpus = float(client.info().get("NCPU") or os.cpu_count() or 1)
        return min(wanted, self._engine_cpus)

    def _create(self, client: Any, spec: RunSpec) -> Any:
        limits = spec.limits
        if not spec.workspace.is_dir():
            raise ValueError(f"no workspace at {spec.workspace}")
        mounts = [Mount(WORKSPACE, str(spec.workspace.resolve()), type="bind")]
        for host_path, sandbox_path in spec.mounts.items():
            if not sandbox_path.startswith("/") or sandbox_path.rstrip("/") == WORKSPACE:
                raise ValueError(f"cannot mount {host_path} at {sandbox_path!r}")
            if not host_path.exists():
                raise ValueError(f"cannot mount {host_path}: it does not exist")
            mounts.append(
                Mount(sandbox_path, str(host_path.resolve()), type="bind", read_only=True)
            )
        try:
            return client.containers.create(
                self.image,
                command=list(spec.command),
                user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                working_dir=WORKSPACE,
                environment={**BASE_ENV, **spec.env},
                hostname="sandbox",
                labels={LABEL: "1"},
                network_mode="bridge" if limits.network else "none",
                read_only=True,
                mounts=mounts,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_bytes},mode=1777"},  # noqa: S108
                ipc_mode="none",  # no /dev/shm
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                nano_cpus=int(self._cpus(client, limits.cpus) * 1e9),
                mem_limit=limits.memory_bytes,
                memswap_limit=limits.memory_bytes,  # the same figure: no swap
                pids_limit=limits.pids,
                ulimits=[
                    # No single file larger than the whole workspace may be.
                    Ulimit(name="fsize", soft=limits.workspace_bytes, hard=limits.workspace_bytes),
                    Ulimit(name="msgqueue", soft=0, hard=0),  # nothing kept in /dev/mqueue
                    Ulimit(name="core", soft=0, hard=0),
                    Ulimit(name="nofile", soft=4096, hard=4096),
                ],
                # The engine keeps no copy of the output: it is read live through attach.
                log_config=LogConfig(type=LogConfig.types.NONE),
                stdin_open=False,
                tty=False,
            )
        except docker.errors.ImageNotFound as error:
            raise SandboxUnavailableError(
                f"the sandbox image {self.image} is not on this Docker engine; "
                "build it with `vdo sandbox build-image`"
            ) from error
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise SandboxUnavailableError(f"the Docker engine refused the run: {error}") from error


@dataclass
class _Verdict:
    ready: bool
    detail: str


class _Run:
    """One container from start to exit (or to being stopped), and what it printed."""

    def __init__(
        self, client: Any, container: Any, spec: RunSpec, started: float, on_line: LineSink | None
    ) -> None:
        self.client = client
        self.container = container
        self.spec = spec
        self.limits = spec.limits
        self.started = started
        self.on_line = on_line
        self.loop = asyncio.get_running_loop()
        self.output = _Output(self.limits.output_bytes, started, self._deliver)
        self.seen_text = asyncio.Event()
        self.peak_memory: int | None = None
        self.cpu_seconds: float | None = None
        self.pids_refused = 0
        self.workspace_over = False
        self.cgroup: _Cgroup | None = None

    def _deliver(self, lines: list[str]) -> None:
        """Called from the reader thread with complete lines: handed over to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self.loop.call_soon_threadsafe(self._lines, lines)

    def _lines(self, lines: list[str]) -> None:
        ready = self.spec.ready
        for line in lines:
            if self.on_line is not None:
                self.on_line(line)
            if ready is not None and ready.kind == "output" and ready.text in line:
                self.seen_text.set()

    async def run(self) -> RunResult:
        api = self.client.api
        # Attached before the start, so no output is missed; the engine keeps no copy.
        attach = functools.partial(api.attach, stdout=True, stderr=True, stream=True, logs=False)
        attaching = _threaded(attach, self.container.id)
        try:
            stream = await asyncio.shield(attaching)
        except asyncio.CancelledError:
            attaching.add_done_callback(_close_when_attached)
            raise
        reading = _threaded(self.output.drain, stream)
        checking: asyncio.Future[_Verdict] | None = None
        try:
            await _threaded(self.container.start)
            deadline = time.monotonic() + self.limits.wall_seconds
            exited: asyncio.Future[Any] = _threaded(self.container.wait)
            watching = asyncio.ensure_future(self._watch())
            waits: set[asyncio.Future[Any]] = {exited, watching}
            if self.spec.ready is not None:
                checking = asyncio.ensure_future(self._check(self.spec.ready, exited))
                waits.add(checking)
            try:
                await asyncio.wait(
                    waits,
                    timeout=deadline - time.monotonic(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for task in waits - {exited}:
                    task.cancel()
            stopped = not exited.done()
            if stopped:
                if self.cgroup is not None:
                    self._sample(self.cgroup)  # the last figures, while the cgroup is there
                await _threaded(_kill, self.container)
            status = await asyncio.wait_for(exited, timeout=30)
            await asyncio.wait_for(asyncio.shield(reading), timeout=30)
        finally:
            _close_stream(stream)
        state = (await _threaded(_inspect, self.container)).get("State", {})
        await _threaded(self._check_workspace)
        verdict = None
        if checking is not None and checking.done() and not checking.cancelled():
            verdict = checking.result()
        return self._result(stopped, status, state, verdict)

    def _result(
        self, stopped: bool, status: Any, state: dict[str, Any], verdict: _Verdict | None
    ) -> RunResult:
        limits = self.limits
        code = status.get("StatusCode") if isinstance(status, dict) else None
        timed_out = stopped and verdict is None and not self.workspace_over
        notes: list[str] = []
        killed_reason = ""
        peak_memory = self.peak_memory
        if state.get("OOMKilled"):
            killed_reason = f"memory limit ({limits.memory_bytes // MIB} MiB) reached"
            peak_memory = limits.memory_bytes
        elif self.workspace_over:
            killed_reason = f"workspace limit ({limits.workspace_bytes // MIB} MiB) exceeded"
        elif self.pids_refused:
            killed_reason = f"process limit ({limits.pids}) reached"
        if killed_reason:
            notes.append(f"[killed: {killed_reason}]")
        if timed_out:
            notes.append(f"[stopped: wall time of {limits.wall_seconds:g}s reached]")
        ready: bool | None = None
        ready_detail = ""
        if self.spec.ready is not None:
            verdict = verdict or self._late_verdict(self.spec.ready, code, timed_out)
            ready, ready_detail = verdict.ready, verdict.detail
        text = self.output.text()
        if self.output.truncated:
            text += f"\n[output cut at {limits.output_bytes} bytes]\n"
        if notes:
            text += "\n" + "\n".join(notes) + "\n"
        killed = stopped or (bool(killed_reason) and code == 137)  # 137: SIGKILL
        return RunResult(
            exit_code=None if killed else code,
            output=text,
            duration_seconds=time.monotonic() - self.started,
            timed_out=timed_out,
            truncated=self.output.truncated,
            output_bytes_total=self.output.total,
            ready=ready,
            ready_detail=ready_detail,
            killed_reason=killed_reason,
            peak_memory_bytes=peak_memory,
            cpu_seconds=self.cpu_seconds,
            first_output_seconds=self.output.first_output_seconds,
        )

    def _late_verdict(self, check: ReadyCheck, code: int | None, timed_out: bool) -> _Verdict:
        """The verdict when the check did not decide before the run ended."""
        if check.kind == "output" and self.seen_text.is_set():
            return _Verdict(True, f"printed {check.text!r}")
        if timed_out:
            return _Verdict(False, f"not up within the wall time of {self.limits.wall_seconds:g}s")
        return _Verdict(False, f"exited with code {code} before the {check.kind} check passed")

    # ---- while it runs ---------------------------------------------------------------------

    async def _watch(self) -> None:
        """Returns when the workspace outgrows its limit; meanwhile notes the cgroup figures."""
        pid = int((await _threaded(_inspect, self.container)).get("State", {}).get("Pid") or 0)
        self.cgroup = _Cgroup.of(pid)
        while True:
            if self.cgroup is not None:
                self._sample(self.cgroup)
            if await _threaded(self._check_workspace):
                return
            await asyncio.sleep(POLL_SECONDS)

    def _sample(self, cgroup: _Cgroup) -> None:
        peak, cpu, refused = cgroup.read()
        if peak is not None:
            self.peak_memory = max(self.peak_memory or 0, peak)
        if cpu is not None:
            self.cpu_seconds = cpu
        self.pids_refused = max(self.pids_refused, refused)

    def _check_workspace(self) -> bool:
        if disk_usage(self.spec.workspace) > self.limits.workspace_bytes:
            self.workspace_over = True
        return self.workspace_over

    async def _check(self, check: ReadyCheck, exited: asyncio.Future[Any]) -> _Verdict:
        """Waits for the ready check to pass; the caller stops waiting when the run ends."""
        if check.kind == "output":
            await self.seen_text.wait()
            return _Verdict(True, f"printed {check.text!r}")
        if check.kind == "stays_up":
            await asyncio.sleep(check.seconds)
            return _Verdict(True, f"still running after {check.seconds:g}s")
        if check.kind == "port":
            if check.port is None:
                return _Verdict(False, "a port check names no port")
            probe: tuple[str, ...] = ("python3", "-c", PORT_PROBE, str(check.port))
            passed = f"port {check.port} answered"
        elif check.kind == "command":
            if not check.command:
                return _Verdict(False, "a command check names no command")
            probe = ("python3", "-c", COMMAND_PROBE, *check.command)
            passed = f"`{' '.join(check.command)}` exited 0"
        else:
            return _Verdict(False, f"unknown ready check kind {check.kind!r}")
        while not exited.done():
            code, output = await _threaded(self._exec, probe)
            if code == 0:
                return _Verdict(True, passed + (f": {output}" if output else ""))
            await asyncio.sleep(PROBE_SECONDS)
        await asyncio.Event().wait()  # the run ended first: the caller gives the verdict
        raise AssertionError("unreachable")

    def _exec(self, command: tuple[str, ...]) -> tuple[int | None, str]:
        """Runs `command` inside the running container as the sandbox user: (exit code, the
        start of its output); (None, "") when the container is gone."""
        try:
            code, output = self.container.exec_run(
                list(command),
                user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                workdir=WORKSPACE,
                environment={**BASE_ENV, **self.spec.env},
            )
        except GONE:
            return None, ""
        return code, bytes(output or b"").decode("utf-8", errors="replace").strip()


class _Output:
    """The run's output, read in a thread: the first `cap` bytes are kept and passed on line by
    line; the rest is read and counted, so the program is never blocked on a full pipe."""

    def __init__(self, cap: int, started: float, deliver: Callable[[list[str]], None]) -> None:
        self.cap = cap
        self.started = started
        self.deliver = deliver
        self.kept = bytearray()
        self.total = 0
        self.first_output_seconds: float | None = None
        self._line = bytearray()

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")

    def drain(self, stream: Any) -> None:
        try:
            for chunk in stream:
                self.feed(chunk)
        except (*GONE, ValueError):
            pass  # the stream was closed under the reader: the run is over
        finally:
            if self._line:
                self.deliver([self._line.decode("utf-8", errors="replace")])
                self._line.clear()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.first_output_seconds is None:
            self.first_output_seconds = time.monotonic() - self.started
        self.total += len(chunk)
        room = self.cap - len(self.kept)
        if room <= 0:
            return
        part = chunk[:room]
        self.kept += part
        lines: list[str] = []
        start = 0
        while (end := part.find(b"\n", start)) >= 0:
            self._line += part[start:end]
            lines.append(self._line.decode("utf-8", errors="replace"))
            self._line.clear()
            start = end + 1
        self._line += part[start:]
        if len(self._line) >= LONGEST_LINE:
            lines.append(self._line.decode("utf-8", errors="replace"))
            self._line.clear()
        if lines:
            self.deliver(lines)


class _Cgroup:
    """The container's cgroup on this host, read while the container runs (it goes with the
    last process). Only when the engine is local; figures missing here are left out."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    @classmethod
    def of(cls, pid: int) -> _Cgroup | None:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines() if pid else []
        except OSError:
            return None
        dirs: dict[str, Path] = {}
        unified = Path("/sys/fs/cgroup/unified")
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers:  # cgroup v1: one hierarchy per controller
                for name in controllers.split(","):
                    dirs[name] = Path("/sys/fs/cgroup", name, path.lstrip("/"))
            else:  # cgroup v2 (beside v1 on a hybrid host)
                base = unified if unified.is_dir() else Path("/sys/fs/cgroup")
                dirs[""] = base / path.lstrip("/")
        return cls(dirs) if dirs else None

    def read(self) -> tuple[int | None, float | None, int]:
        """(peak memory bytes, CPU seconds, forks refused by the process limit)."""
        v1 = "memory" in self.dirs
        peak = (
            self._int("memory", "memory.max_usage_in_bytes") if v1 else self._int("", "memory.peak")
        )
        if v1:
            nanos = self._int("cpuacct", "cpuacct.usage")
            cpu = nanos / 1e9 if nanos is not None else None
        else:
            micros = self._field("", "cpu.stat", "usage_usec")
            cpu = micros / 1e6 if micros is not None else None
        refused = self._field("pids" if v1 else "", "pids.events", "max") or 0
        return peak, cpu, refused

    def _text(self, controller: str, name: str) -> str | None:
        directory = self.dirs.get(controller)
        try:
            return (directory / name).read_text() if directory else None
        except OSError:
            return None

    def _int(self, controller: str, name: str) -> int | None:
        text = self._text(controller, name)
        return int(text) if text and text.strip().isdigit() else None

    def _field(self, controller: str, name: str, key: str) -> int | None:
        for line in (self._text(controller, name) or "").splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == key and words[1].isdigit():
                return int(words[1])
        return None


def connect(timeout: float = 60) -> Any:
    """A client of the Docker engine DOCKER_HOST names (by default the local socket), or
    SandboxUnavailableError saying how to get one."""
    # The SDK leaks a socket when the engine does not answer its first call: try first.
    problem = unreachable(os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE, min(timeout, 3))
    if not problem:
        try:
            return docker.from_env(timeout=timeout)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            problem = str(error)
    raise SandboxUnavailableError(f"the Docker engine does not answer ({problem}); {ENGINE_HINT}")


def unreachable(url: str, timeout: float) -> str:
    """Why nothing listens at a unix:// or tcp:// engine address ("" when something does, or
    for other kinds of address, which only the SDK can try)."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(timeout)
                probe.connect(parts.path)
        elif parts.scheme == "tcp" and parts.hostname:
            socket.create_connection((parts.hostname, parts.port or 2375), timeout).close()
    except OSError as error:
        return f"{url}: {error.strerror or error}"
    return ""


def hand_over(workspace: Path) -> None:
    """The workspace belongs to the sandbox's user for the run, so it can write there."""
    for path in [workspace, *workspace.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chown(path, SANDBOX_UID, SANDBOX_UID, follow_symlinks=False)


def disk_usage(root: Path) -> int:
    """Bytes a directory tree takes (a sparse file counts at its full length)."""
    total = 0
    pending = [root]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += max(info.st_size, info.st_blocks * 512)
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return total


def _inspect(container: Any) -> dict[str, Any]:
    try:
        container.reload()
    except GONE:
        return {}
    attrs: dict[str, Any] = container.attrs
    return attrs


def _close_stream(stream: Any) -> None:
    """Closes an attach stream and the HTTP response under it (which holds the socket)."""
    with contextlib.suppress(*GONE):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(*GONE):
            response.close()


def _close_when_attached(attaching: asyncio.Future[Any]) -> None:
    if not attaching.cancelled() and attaching.exception() is None:
        _close_stream(attaching.result())


def _kill(container: Any) -> None:
    with contextlib.suppress(*GONE):
        container.kill()


def _remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except GONE as error:
        log.warning("could not remove sandbox container %s: %s", container.id[:12], error)


def _threaded(function: Callable[..., T], *args: Any, daemon: bool = True) -> asyncio.Future[T]:
    """Runs a blocking call in a thread of its own; its result as a future of the loop. Calls
    that clean up are not daemon threads: the interpreter waits for them before it exits."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the awaiting coroutine
            outcome: tuple[T | None, BaseException | None] = (None, error)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="vdo-docker", daemon=daemon).start()
    # A call whose result nobody awaits any more (the run was cancelled) is not reported.
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future
