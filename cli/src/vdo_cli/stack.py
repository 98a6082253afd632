"""The whole stack on one machine: embedded NATS and PostgreSQL (unless external URLs are
set), then every service as its own supervised process, with their output merged.

A service that exits unexpectedly is restarted (and the supervisor says so); Ctrl-C stops the
services first, then the servers. While the stack runs, `<VDO_HOME>/stack.json` says where its
parts listen, for the CLI.

With authentication on, the first start of a deployment makes its first admin and a token
(`vdo_kernel.bootstrap`) before any service starts, prints the token once and keeps it in
`<VDO_HOME>/admin-token` (mode 0600) for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from vdo_cli.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent
from vdo_cli.ownership import DataDirectoryLock
from vdo_kernel.domain import AI_PHASES
from vdo_kernel.settings import Settings

# In start order: the relay first (nothing reaches a service before it runs), the gateway last.
SERVICE_MODULES: dict[str, str] = {
    "relay": "vdo_kernel.relay",
    "projector": "vdo_projector",
    "scheduler": "vdo_scheduler",
    "planner": "vdo_planner",
    "builder": "vdo_builder",
    "tester": "vdo_tester",
    "reviewer": "vdo_reviewer",
    "sandbox": "vdo_sandbox",
    "gateway": "vdo_gateway",
}
ALL_SERVICES: tuple[str, ...] = tuple(SERVICE_MODULES)
AI_SERVICES = frozenset(AI_PHASES)
PROVIDER_KEYS = frozenset({"ANTHROPIC_AUTH_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS"})
# Credentials of the API itself: the stack uses the admin token before the services start, and
# none of them needs it (nor a caller's token), so it never reaches one.
API_CREDENTIALS = frozenset({"VDO_ADMIN_TOKEN", "VDO_TOKEN"})

Echo = Callable[[str], None]


def _echo_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class ServiceProcess:
    name: str  # the service's name, with its replica's number after a dot from the second on
    service: str
    command: list[str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    next_start: float = 0.0
    keep_down: bool = False  # killed on purpose, not to be restarted
    readers: list[threading.Thread] = field(default_factory=list)


class Stack:
    def __init__(
        self,
        settings: Settings,
        *,
        services: Sequence[str] = ALL_SERVICES,
        durable: bool = True,
        echo: Echo | None = _echo_stdout,
        environ: Mapping[str, str] | None = None,
        replicas: Mapping[str, int] | None = None,
    ) -> None:
        unknown = (set(services) | set(replicas or {})) - set(SERVICE_MODULES)
        if unknown:
            raise ValueError(f"unknown services: {', '.join(sorted(unknown))}")
        # How many processes of each service to run (1 unless given): replicas share the work.
        self.replicas = {name: max(1, (replicas or {}).get(name, 1)) for name in SERVICE_MODULES}
        if self.replicas["gateway"] > 1:
            raise ValueError("one gateway per stack: its replicas would share one port")
        self.settings = settings
        self.services = [s for s in SERVICE_MODULES if s in services]
        self.durable = durable
        self.echo = echo
        self.environ = dict(os.environ if environ is None else environ)
        self.home = settings.home
        self.nats: EmbeddedNats | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.procs: dict[str, ServiceProcess] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.events: list[str] = []  # what the supervisor did (restarts), for tests and logs
        self.ownership = DataDirectoryLock(self.home)

    # ---- where things are -----------------------------------------------------------

    @property
    def nats_url(self) -> str:
        url = self.settings.nats_url or (self.nats.url if self.nats else None)
        if url is None:
            raise RuntimeError("the stack is not started")
        return url

    @property
    def database_url(self) -> str:
        url = self.settings.database_url or (self.postgres.url if self.postgres else None)
        if url is None:
            raise RuntimeError("the stack is not started")
        return url

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def info_path(self) -> Path:
        return self.home / "stack.json"

    # ---- lifecycle ------------------------------------------------------------------

    def start(self, *, wait_healthy: bool = True, timeout: float = 60.0) -> None:
        if self.settings.auth == "off" and not _is_loopback(self.settings.host):
            # The gateway would refuse to start (and be restarted, and refuse again).
            raise RuntimeError(
                f"with authentication off (VDO_AUTH=off) the gateway listens on a loopback "
                f"address only, not {self.settings.host!r}: set VDO_HOST=127.0.0.1, or turn "
                "authentication on"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._say("stack", f"data directory {self.home}")
        # Before anything is touched: no second stack on this data directory.
        self.ownership.acquire()
        if self.settings.database_url:
            self._say("stack", "using external PostgreSQL (VDO_DATABASE_URL)")
        else:
            self.postgres = EmbeddedPostgres(self.home / "postgres", durable=self.durable)
            self.postgres.start()
            self._say("stack", f"embedded PostgreSQL on 127.0.0.1:{self.postgres.port}")
        if self.settings.nats_url:
            self._say("stack", "using external NATS (VDO_NATS_URL)")
        else:
            self.nats = EmbeddedNats(self.home / "nats")
            self.nats.start()
            self._say("stack", f"embedded NATS (JetStream) on 127.0.0.1:{self.nats.port}")
        self._prepare_storage()
        self._first_admin()
        # Which keys and models are in force (made here first: the secret store's key file).
        for line in self.models_in_force():
            self._say("stack", line)
        # The database URL may carry a password: readable by the owner only.
        self.info_path.unlink(missing_ok=True)
        descriptor = os.open(self.info_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as info:
            info.write(
                json.dumps(
                    {
                        "nats_url": self.nats_url,
                        "database_url": self.database_url,
                        "gateway_url": self.gateway_url,
                        "pid": os.getpid(),
                    },
                    indent=2,
                )
            )
        for service in self.services:
            for replica in range(1, self.replicas[service] + 1):
                name = service if replica == 1 else f"{service}.{replica}"
                command = [sys.executable, "-m", SERVICE_MODULES[service]]
                proc = ServiceProcess(name, service, command)
                self.procs[name] = proc
                self._spawn(proc)
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()
        if wait_healthy and "gateway" in self.services:
            self.wait_healthy(timeout)

    def _prepare_storage(self) -> None:
        """Create the event store's tables and the stream before any service starts."""
        from vdo_kernel.bus import connect, ensure_stream
        from vdo_kernel.store import JobStore

        store = JobStore(self.database_url, pool_size=1)
        store.close()

        async def stream() -> None:
            nc = await connect(
                self.nats_url,
                name="vdo-stack",
                connect_timeout=20,
                tls=self.settings.nats_tls(),
            )
            try:
                await ensure_stream(nc.jetstream(), replicas=self.settings.stream_replicas)
            finally:
                await nc.close()

        asyncio.run(stream())

    def _first_admin(self) -> None:
        """Make the first admin if the deployment has none (authentication on), and say where
        its token is; a generated token is printed this once."""
        if self.settings.auth == "off":
            self._say(
                "stack",
                "authentication is off (VDO_AUTH=off): every request acts as the local admin, "
                "and the gateway listens on loopback only",
            )
            return
        from vdo_kernel.bootstrap import TOKEN_FILE, Outcome, ensure_admin, token_file
        from vdo_kernel.store import JobStore

        given = self.settings.admin_token
        store = JobStore(self.database_url, pool_size=1)
        try:
            result = ensure_admin(
                store, self.home, admin_token=given.get_secret_value() if given else None
            )
        finally:
            store.close()
        if result.token is not None:
            self._say("stack", f"{result.message}; the admin token (shown this once):")
            self._say("stack", f"  {result.token}")
            self._say(
                "stack",
                f"it is kept in {result.token_file} (readable by you only), where the `vdo` "
                "commands find it; keep it secret",
            )
        elif result.outcome is Outcome.CREATED:
            self._say("stack", result.message)
        elif result.outcome is Outcome.IGNORED:
            self._say("stack", f"warning: {result.message}")
        elif given is None and token_file(self.home).is_file():
            self._say("stack", f"the admin token is kept in {token_file(self.home)}")
        elif given is None:
            self._say(
                "stack",
                f"this deployment has admins but no {TOKEN_FILE} file here: the `vdo` commands "
                "need a token in VDO_TOKEN (an admin makes one with `vdo token create`)",
            )

    def _env(self, service: str) -> dict[str, str]:
        env = dict(self.environ)
        for name in API_CREDENTIALS:
            # Set empty rather than left out, so that a `.env` file cannot supply it either.
            env[name] = ""
        if service not in AI_SERVICES:
            # Model keys reach the four AI phases only: never the gateway, the projector, the
            # relay or the sandbox (which runs generated code).
            for name in list(env):
                if name in PROVIDER_KEYS or name.endswith("_API_KEY"):
                    del env[name]
        # Every setting the stack was given reaches every service, however it was given
        # (environment, .env, or in code), so they all run with the same configuration. A
        # phase's model left to its default stays a default, which the AI phases tell from one
        # someone chose (a default whose provider has no key gives way to a configured one).
        defaulted = {f"{p}_model" for p in AI_SERVICES} - self.settings.model_fields_set
        given = self.settings.model_dump(mode="json", exclude={"admin_token", *defaulted})
        for name, value in given.items():
            if value is not None:
                env[f"VDO_{name.upper()}"] = str(value)
        env.update(
            {
                "VDO_HOME": str(self.home),
                "VDO_NATS_URL": self.nats_url,
                "VDO_DATABASE_URL": self.database_url,
                "VDO_LOG_FORMAT": self.settings.log_format
                if self.settings.log_format != "auto"
                else ("console" if sys.stdout.isatty() else "json"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, proc: ServiceProcess) -> None:
        popen = subprocess.Popen(
            proc.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env(proc.service),
            # Own session: Ctrl-C reaches only the supervisor, which stops services in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        proc.popen = popen
        proc.started_at = time.monotonic()
        assert popen.stdout is not None
        reader = threading.Thread(target=self._pump, args=(proc.name, popen.stdout), daemon=True)
        reader.start()
        proc.readers.append(reader)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._say(name, raw.decode("utf-8", errors="replace").rstrip())
        stream.close()

    def _say(self, name: str, line: str) -> None:
        if self.echo is not None:
            self.echo(f"{name:<10}| {line}")

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                for proc in self.procs.values():
                    self._check(proc)

    def _check(self, proc: ServiceProcess) -> None:
        if proc.keep_down:
            return
        if proc.popen is None:
            if time.monotonic() >= proc.next_start:
                self._spawn(proc)
            return
        code = proc.popen.poll()
        if code is None:
            if time.monotonic() - proc.started_at > 30:
                proc.crashes_in_a_row = 0
            return
        if self._stopping.is_set():
            return
        proc.restarts += 1
        proc.crashes_in_a_row += 1
        # Back off when a service keeps crashing at start, so the log stays readable.
        delay = min(0.2 * 2 ** (proc.crashes_in_a_row - 1), 5.0)
        message = (
            f"{proc.name} exited with code {code}; restarting in {delay:.1f}s "
            f"(restart {proc.restarts})"
        )
        self.events.append(message)
        self._say("stack", message)
        proc.popen = None
        proc.next_start = time.monotonic() + delay

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.gateway_url}/api/health", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as error:
                last = str(error)
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not become healthy in {timeout:g}s: {last}")

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        with self._lock:
            live = [p for p in self.procs.values() if p.popen and p.popen.poll() is None]
            # The gateway first (no new work), the relay last (publishes what was committed).
            for proc in reversed(live):
                assert proc.popen is not None
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for proc in live:
                assert proc.popen is not None
                try:
                    proc.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._say("stack", f"{proc.name} did not stop in time; killing it")
                    proc.popen.kill()
                    proc.popen.wait()
            for proc in self.procs.values():
                for reader in proc.readers:
                    reader.join(timeout=2)
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.ownership.held:
            # Only the owner's: a start refused here leaves the running stack's file alone.
            self.info_path.unlink(missing_ok=True)
            self.ownership.release()
        self._say("stack", "stopped")

    def models_in_force(self) -> list[str]:
        """Which providers' keys the AI services have (from the environment they are given, or
        entered in Settings) and each phase's models with why, as lines to print."""
        from vdo_models.session import provider_environment, routing_summary

        env = provider_environment(self.environ)
        try:
            stored = read_stored_secrets(self.database_url, self.settings)
        except Exception as error:
            stored = {}
            self._say("stack", f"the keys entered in Settings could not be read: {error}")
        return routing_summary(self.settings, env, stored)

    # ---- for tests and operators ----------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL, *, restart: bool = True) -> int:
        """Send a signal to one service's process, `planner` or a further replica's
        `planner.2`; the supervisor restarts it unless `restart` is false. Returns its pid."""
        with self._lock:
            proc = self.procs[name]
            if proc.popen is None:
                raise RuntimeError(f"{name} is not running")
            pid = proc.popen.pid
            proc.keep_down = not restart
            proc.popen.send_signal(sig)
            if not restart:
                proc.popen.wait()
            return pid

    def pid(self, name: str) -> int | None:
        popen = self.procs[name].popen
        return popen.pid if popen and popen.poll() is None else None

    def restart_nats(self, down_seconds: float = 1.0) -> None:
        if self.nats is None:
            raise RuntimeError("NATS is external; restart it where it runs")
        self.nats.stop()
        time.sleep(down_seconds)
        self.nats.start()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def read_stored_secrets(database_url: str, settings: Settings) -> dict[str, str]:
    """The provider keys and base URLs entered in Settings (the secret store's key file is
    made here at the first start, so every service finds the same one)."""
    import psycopg

    from vdo_kernel.secrets import PROVIDER_PREFIX, SecretStore

    secrets = SecretStore.open(
        lambda: psycopg.connect(database_url, autocommit=True, connect_timeout=10),
        settings.secret_key_file,
    )
    return secrets.read(PROVIDER_PREFIX)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_stack(settings: Settings, services: Iterable[str] = ALL_SERVICES) -> int:
    """`vdo up`: run until Ctrl-C or SIGTERM, then stop everything cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = Stack(settings, services=tuple(services))
    try:
        stack.start()
    except Exception as error:
        _echo_stdout(f"stack     | could not start: {error}")
        stack.stop()
        return 1
    _echo_stdout(f"stack     | VDO is up: {stack.gateway_url}  (Ctrl-C stops it)")
    stop.wait()
    _echo_stdout("stack     | stopping...")
    stack.stop()
    return 0
