"""Hostile programs on each backend: every attempt is contained, with a clear reason in the run's
result, and the host (and a benign run going on at the same time) is unaffected.

The probes print `BLOCKED <what>` for each attempt that failed and `LEAK <what>` for one that
got through; a test fails on any LEAK.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from vdo_kernel.steps import StepFailure
from vdo_sandbox.backend import MIB, Backend, Limits, RunResult, RunSpec
from vdo_sandbox.runs import write_files

LIMITS = Limits(
    cpus=0.5,
    memory_bytes=256 * MIB,
    pids=64,
    workspace_bytes=50 * MIB,
    tmpfs_bytes=16 * MIB,
    wall_seconds=30.0,
    output_bytes=1 * MIB,
)

PROBE_HEADER = """
import os, socket, sys
def blocked(what, error=""):
    print("BLOCKED", what, "-", error)
def leak(what, detail=""):
    print("LEAK", what, "-", detail)
"""


async def run_probe(
    backend: Backend,
    workspace: Path,
    code: str,
    limits: Limits = LIMITS,
    mounts: dict[Path, str] | None = None,
) -> RunResult:
    (workspace / "probe.py").write_text(PROBE_HEADER + code)
    return await backend.run(
        RunSpec(
            workspace=workspace,
            command=("python3", "probe.py"),
            limits=limits,
            mounts=mounts or {},
        )
    )


async def benign(backend: Backend, root: Path) -> RunResult:
    """An ordinary run next to a hostile one: it must finish normally."""
    workspace = root / f"benign-{uuid.uuid4().hex[:8]}"
    workspace.mkdir()
    (workspace / "ok.py").write_text("print(sum(range(1000)))\n")
    limits = replace(LIMITS, wall_seconds=60.0)
    return await backend.run(
        RunSpec(workspace=workspace, command=("python3", "ok.py"), limits=limits)
    )


def assert_benign_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.output
    assert "499500" in result.output
    assert not result.timed_out
    assert not result.killed_reason


def assert_no_leak(result: RunResult, expected_blocked: int) -> None:
    assert "LEAK" not in result.output, result.output
    assert result.output.count("BLOCKED") == expected_blocked, result.output


def host_still_works() -> None:
    done = subprocess.run(["true"], check=False, timeout=30)
    assert done.returncode == 0


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def host_address() -> str | None:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("1.1.1.1", 53))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return address


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on the host's loopback, standing in for NATS/PostgreSQL/the gateway."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


# ---- network ---------------------------------------------------------------------------------


async def test_no_network_egress_nor_the_hosts_own_services(
    backend: Backend, workspace: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    targets = [("1.1.1.1", 53), ("8.8.8.8", 443), ("127.0.0.1", port)]
    address = host_address()
    if address is not None:
        targets.append((address, port))
    code = f"""
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        leak("connect", f"{{host}}:{{port}}")
    except OSError as error:
        blocked("connect", f"{{host}}:{{port}} {{error}}")
try:
    socket.getaddrinfo("pypi.org", 443)
    leak("dns", "pypi.org resolved")
except OSError as error:
    blocked("dns", error)
"""
    result = await run_probe(backend, workspace, code)
    assert_no_leak(result, len(targets) + 1)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody ever connected to the host's service


# ---- reading the host ------------------------------------------------------------------------


async def test_host_secrets_and_other_workspaces_cannot_be_read(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    secret = f"sk-fake-{uuid.uuid4().hex}"
    data = tmp_path / ".vdo"
    (data / "blobs").mkdir(parents=True)
    (data / "blobs" / "blob").write_text(f"blob {secret}")
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={secret}\n")
    other = tmp_path / "workspaces" / "other-job"
    other.mkdir(parents=True)
    (other / "app.py").write_text(f"KEY = {secret!r}\n")
    targets = [
        "/etc/shadow",
        str(data / "blobs" / "blob"),
        str(tmp_path / ".env"),
        str(other / "app.py"),
        "../workspaces/other-job/app.py",
        "/root/.bash_history",
    ]
    code = f"""
for path in {targets!r}:
    try:
        text = open(path).read()
        if {secret!r} in text or path == "/etc/shadow":
            leak("read", path + ": " + text[:100])
        else:
            blocked("read", path + ": not the host's")
    except OSError as error:
        blocked("read", path + ": " + str(error))
"""
    result = await run_probe(backend, workspace, code)
    assert_no_leak(result, len(targets))
    assert secret not in result.output


async def test_a_root_only_file_given_to_the_run_cannot_be_read(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    """The sandbox's user is not root on the host: a root-only file the run is given (in a
    read-only mount) is not its to read."""
    secret = f"root-only-{uuid.uuid4().hex}"
    private = tmp_path / "private"
    private.mkdir()
    key = private / "key"
    key.write_text(secret)
    os.chown(key, 0, 0)
    key.chmod(0o600)
    mounts = {private: "/host-private", Path("/etc/shadow"): "/host-etc/shadow"}
    code = """
for path in ("/host-private/key", "/host-etc/shadow"):
    try:
        text = open(path).read()
        leak("read", path + ": " + text[:100])
    except PermissionError as error:
        blocked("read", path + ": " + str(error))
"""
    result = await run_probe(backend, workspace, code, mounts=mounts)
    assert_no_leak(result, 2)
    assert secret not in result.output


async def test_host_processes_and_environment_are_not_visible(
    backend: Backend, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"vdo-host-marker-{uuid.uuid4().hex}"
    monkeypatch.setenv("VDO_TEST_SECRET", marker)
    host = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", marker],
        stdin=subprocess.DEVNULL,
    )
    try:
        code = f"""
pids = [p for p in os.listdir("/proc") if p.isdigit()]
lines = []
for pid in pids:
    try:
        lines.append(open(f"/proc/{{pid}}/cmdline", "rb").read())
    except OSError:
        pass
if any({marker.encode()!r} in line for line in lines):
    leak("processes", "a host process is visible")
else:
    blocked("processes", f"{{len(pids)}} processes visible")
if len(pids) > 10:
    leak("processes", f"{{len(pids)}} processes visible")
if any({marker!r} in value for value in os.environ.values()):
    leak("environment", "the host's environment is visible")
else:
    blocked("environment", sorted(os.environ))
"""
        result = await run_probe(backend, workspace, code)
    finally:
        host.kill()
        host.wait()
    assert_no_leak(result, 2)


async def test_a_symlink_in_the_workspace_does_not_reach_the_host(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    secret = f"host-secret-{uuid.uuid4().hex}"
    (tmp_path / "host-secret.txt").write_text(secret)
    (workspace / "to-secret").symlink_to(tmp_path / "host-secret.txt")
    (workspace / "to-passwd").symlink_to("/etc/passwd")
    (workspace / "to-root").symlink_to("/")
    code = f"""
for path in ("to-secret", "to-root/{str(tmp_path).lstrip("/")}/host-secret.txt"):
    try:
        text = open(path).read()
        (leak if {secret!r} in text else blocked)("symlink", path)
    except OSError as error:
        blocked("symlink", f"{{path}}: {{error}}")
passwd = open("to-passwd").read() if os.path.exists("to-passwd") else ""
host_users = {_host_only_users()!r}
if any(user + ":" in passwd for user in host_users):
    leak("symlink", "the host's /etc/passwd")
else:
    blocked("symlink", "to-passwd shows the sandbox's own")
"""
    result = await run_probe(backend, workspace, code)
    assert_no_leak(result, 3)


def _host_only_users() -> list[str]:
    """Users of this host's /etc/passwd that no minimal Debian root has."""
    standard = {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news"}
    standard |= {"uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt"}
    users = [line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line]
    return [user for user in users if user not in standard]


def test_the_materialiser_refuses_paths_and_links_that_leave_the_workspace(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for raw in ("../escape.py", "/etc/cron.d/x", "a/../../escape.py", "", "a\\b", "x\x00y"):
        with pytest.raises(StepFailure, match="refused"):
            write_files(workspace, {raw: b"x"})
    (workspace / "passwd-link").symlink_to("/etc/passwd")
    with pytest.raises(StepFailure, match="refused"):
        write_files(workspace, {"passwd-link": b"overwritten"})
    (workspace / "dir-link").symlink_to(outside)
    with pytest.raises(StepFailure, match="refused"):
        write_files(workspace, {"dir-link/planted.py": b"x"})
    assert not (outside / "planted.py").exists()
    assert "overwritten" not in Path("/etc/passwd").read_text()
    assert write_files(workspace, {"pkg/mod.py": b"ok"}) == ["pkg/mod.py"]
    assert (workspace / "pkg" / "mod.py").read_bytes() == b"ok"


# ---- writing the host ------------------------------------------------------------------------


async def test_nothing_outside_the_workspace_is_writable(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    host_tmp = Path("/tmp") / f"vdo-escape-{tag}"  # the sandbox's /tmp is its own
    targets = [
        f"/usr/vdo-{tag}",
        f"/usr/bin/vdo-{tag}",
        f"/etc/vdo-{tag}",
        f"/vdo-{tag}",
        f"/var/vdo-{tag}",
        str(tmp_path / f"vdo-{tag}"),
        str(host_tmp),
    ]
    code = f"""
for path in {targets!r}:
    try:
        with open(path, "w") as handle:
            handle.write("x")
        print("WROTE", path)
    except OSError as error:
        blocked("write", f"{{path}}: {{error}}")
open("/workspace/inside.txt", "w").write("fine")
"""
    result = await run_probe(backend, workspace, code)
    assert "LEAK" not in result.output
    for target in targets:
        assert not Path(target).exists(), f"{target} was written on the host"
    # Only the sandbox's private /tmp may have taken a write; nothing else did.
    assert result.output.count("BLOCKED") >= len(targets) - 1, result.output
    assert "WROTE /usr" not in result.output
    assert "WROTE /etc" not in result.output
    assert (workspace / "inside.txt").read_text() == "fine"


# ---- exhausting resources --------------------------------------------------------------------


async def test_a_fork_bomb_is_contained(backend: Backend, workspace: Path, tmp_path: Path) -> None:
    code = """
import time
print("bombing", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
    limits = replace(LIMITS, wall_seconds=5.0)
    hostile, calm = await asyncio.gather(
        run_probe(backend, workspace, code, limits), benign(backend, tmp_path)
    )
    assert_benign_ok(calm)
    assert hostile.exit_code is None
    assert hostile.timed_out or "process" in hostile.killed_reason
    assert "process limit" in hostile.killed_reason, hostile.killed_reason
    assert hostile.duration_seconds < 30
    host_still_works()


async def test_a_memory_hog_is_killed_at_the_memory_limit(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    code = """
print("allocating 2 GiB", flush=True)
hog = b"x" * (2 << 30)
leak("memory", f"allocated {len(hog)} bytes")
"""
    hostile, calm = await asyncio.gather(
        run_probe(backend, workspace, code), benign(backend, tmp_path)
    )
    assert_benign_ok(calm)
    assert "LEAK" not in hostile.output
    assert hostile.exit_code != 0
    assert "memory limit" in hostile.killed_reason, (hostile.killed_reason, hostile.output)
    if hostile.peak_memory_bytes is not None:
        assert hostile.peak_memory_bytes <= LIMITS.memory_bytes + 16 * MIB
    host_still_works()


async def test_a_cpu_spin_is_stopped_at_the_wall_time(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    limits = replace(LIMITS, wall_seconds=3.0)
    hostile, calm = await asyncio.gather(
        run_probe(backend, workspace, "while True:\n    pass\n", limits),
        benign(backend, tmp_path),
    )
    assert_benign_ok(calm)
    assert hostile.timed_out
    assert hostile.exit_code is None
    assert "wall time of 3s" in hostile.output
    assert hostile.duration_seconds < 15
    if hostile.cpu_seconds is not None:
        # Half a CPU for three seconds, and a little for starting up.
        assert hostile.cpu_seconds < limits.wall_seconds * limits.cpus * 1.5 + 0.5


async def test_a_gibibyte_of_output_is_cut_quickly(backend: Backend, workspace: Path) -> None:
    code = """
line = "x" * 1023 + "\\n"
block = line * 1024
for _ in range(1024):
    sys.stdout.write(block)
print("the end")
"""
    started = time.monotonic()
    result = await run_probe(backend, workspace, code)
    took = time.monotonic() - started
    assert result.truncated
    assert result.output_bytes_total > LIMITS.output_bytes
    assert "output cut" in result.output
    assert len(result.output.encode()) < LIMITS.output_bytes + 4096
    assert took < 60, f"1 GiB of output took {took:.0f}s"


async def test_a_workspace_filler_is_stopped(backend: Backend, workspace: Path) -> None:
    code = """
block = b"x" * (1 << 20)
for index in range(200):
    try:
        with open(f"fill-{index}", "wb") as handle:
            handle.write(block)
    except OSError as error:
        blocked("fill", error)
        break
"""
    result = await run_probe(backend, workspace, code)
    assert "workspace limit" in result.killed_reason, (result.killed_reason, result.output[-500:])


async def test_a_background_process_is_gone_after_the_run(
    backend: Backend, workspace: Path
) -> None:
    marker = f"vdo-background-{uuid.uuid4().hex}"
    code = f"""
import subprocess
subprocess.Popen(["python3", "-c", "import time; time.sleep(1000)", {marker!r}],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(["sh", "-c", "sleep 1000 & sleep 1000", {marker!r}])
print("left running")
"""
    result = await run_probe(backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert "left running" in result.output
    assert processes_with(marker) == []


# ---- privileges ------------------------------------------------------------------------------


async def test_no_privileges_can_be_gained(
    backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    # A set-user-ID root binary, given in a read-only mount (the workspace is handed to the
    # sandbox's user before a run, and changing a file's owner clears its set-user-ID bit).
    host = tmp_path / "suid"
    host.mkdir()
    suid = host / "suid-id"
    shutil.copy("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    code = """
import subprocess
try:
    os.setuid(0)
    leak("setuid", "became root")
except OSError as error:
    blocked("setuid", error)
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
if int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0:
    blocked("capabilities", status["CapEff"])
else:
    leak("capabilities", status["CapEff"])
if status.get("NoNewPrivs", "").strip() == "1":
    blocked("no_new_privs", "set")
else:
    leak("no_new_privs", status.get("NoNewPrivs"))
suid = "/host-suid/suid-id"
uid = subprocess.run([suid, "-u"], capture_output=True, text=True).stdout.strip()
euid = subprocess.run([suid], capture_output=True, text=True).stdout
if not euid:
    leak("setuid binary", "did not run: nothing was tried")
if uid == "0" or "euid=0" in euid:
    leak("setuid binary", euid)
else:
    blocked("setuid binary", euid.strip())
made = subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"],
                      capture_output=True, text=True)
if made.returncode == 0 and made.stdout.strip() == "0":
    leak("user namespace", "root in a new user namespace")
else:
    blocked("user namespace", (made.stderr or made.stdout).strip())
"""
    result = await run_probe(backend, workspace, code, mounts={host: "/host-suid"})
    assert_no_leak(result, 5)


async def test_the_docker_socket_is_out_of_reach(backend: Backend, workspace: Path) -> None:
    code = """
for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
    if not os.path.exists(path):
        blocked("socket", path + " absent")
        continue
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        leak("socket", path + " connected")
    except OSError as error:
        blocked("socket", f"{path}: {error}")
"""
    result = await run_probe(backend, workspace, code)
    assert_no_leak(result, 3)
