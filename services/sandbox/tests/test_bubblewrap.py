"""The bubblewrap backend on this host: the contract of backend.py, its limits, its ready checks,
and what it leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

import vdo_sandbox
from vdo_kernel import hostfs
from vdo_kernel.hostfs import allow_traverse
from vdo_sandbox.backend import (
    MIB,
    Backend,
    Limits,
    ReadyCheck,
    RunResult,
    RunSpec,
    SandboxUnavailableError,
)
from vdo_sandbox.bubblewrap import HOST_GID, HOST_UID, SANDBOX_UID, BubblewrapBackend
from vdo_sandbox.cgroups import Cgroups, _cgroup_mounts, _inside, _membership
from vdo_sandbox.output import CappedOutput

LIMITS = Limits(wall_seconds=30.0, memory_bytes=256 * MIB, pids=64, output_bytes=1 * MIB)
AS_ROOT = os.geteuid() == 0
# Who the sandbox is on the host: the unprivileged HOST_UID when the tests run as root (as the
# service does), else the user running them.
HOST_IDS = (HOST_UID, HOST_GID) if AS_ROOT else (os.getuid(), os.getgid())


async def python(
    backend: Backend,
    workspace: Path,
    code: str,
    *,
    limits: Limits = LIMITS,
    ready: ReadyCheck | None = None,
    lines: list[str] | None = None,
    env: dict[str, str] | None = None,
    mounts: dict[Path, str] | None = None,
) -> RunResult:
    (workspace / "main.py").write_text(code)
    spec = RunSpec(
        workspace=workspace,
        command=("python3", "main.py"),
        limits=limits,
        ready=ready,
        env=env or {},
        mounts=mounts or {},
    )
    return await backend.run(spec, lines.append if lines is not None else None)


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


def host_ids(pid: int) -> tuple[set[int], set[int]]:
    """The real, effective, saved and filesystem uids and gids of a process, as the host sees
    them."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {int(i) for i in fields["Uid"].split()}, {int(i) for i in fields["Gid"].split()}


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_cgroups() -> list[Path]:
    """Run cgroups of this process still on the host."""
    found: list[Path] = []
    cgroups = Cgroups.detect()
    if cgroups is None:
        return found
    for parent in set(cgroups.parents.values()):
        found += parent.glob(f"vdo-run-{os.getpid()}-*")
    return found


def test_it_says_what_it_runs_on(bwrap_backend: Backend) -> None:
    described = bwrap_backend.describe()
    assert described.startswith("bubblewrap 0.")
    assert "cgroup v" in described, (
        "this host gives the sandbox no cgroup of its own (run the service as root on a host "
        f"with cgroupfs mounted read-write): {described}"
    )
    assert f"sandbox uid {SANDBOX_UID} is host uid {HOST_IDS[0]}," in described
    assert bwrap_backend.name == "bubblewrap"


async def test_output_exit_status_and_lines_as_they_come(
    bwrap_backend: Backend, workspace: Path
) -> None:
    lines: list[str] = []
    code = "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')\nsys.exit(3)\n"
    result = await python(bwrap_backend, workspace, code, lines=lines)
    assert result.exit_code == 3
    assert result.output == "one\ntwo\nthree\n"
    assert lines == ["one", "two", "three"]
    assert not result.timed_out
    assert not result.truncated
    assert not result.killed_reason
    assert result.output_bytes_total == len(result.output)
    assert result.first_output_seconds is not None
    assert 0 < result.first_output_seconds <= result.duration_seconds
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes > 1 * MIB
    assert result.cpu_seconds is not None
    assert result.cpu_seconds > 0


async def test_a_program_killed_by_a_signal_reports_it(
    bwrap_backend: Backend, workspace: Path
) -> None:
    result = await python(bwrap_backend, workspace, "import os, signal\nos.kill(os.getpid(), 9)\n")
    assert result.exit_code == 128 + 9


async def test_the_environment_is_clean_plus_what_the_run_adds(
    bwrap_backend: Backend, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VDO_HOST_ONLY", "host")
    code = "import os, json\nprint(json.dumps(dict(os.environ)))\n"
    result = await python(bwrap_backend, workspace, code, env={"EXTRA": "added", "HOME": "/tmp"})
    environment = __import__("json").loads(result.output)
    assert environment["EXTRA"] == "added"
    assert environment["HOME"] == "/tmp"  # the run's own setting wins
    assert environment["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "VDO_HOST_ONLY" not in environment
    with pytest.raises(ValueError, match="environment"):
        await python(bwrap_backend, workspace, "", env={"BAD=NAME": "x"})


async def test_mounts_are_read_only_and_checked(
    bwrap_backend: Backend, workspace: Path, tmp_path: Path
) -> None:
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "helper.py").write_text("VALUE = 42\n")
    code = """
import helper
print(helper.VALUE)
try:
    open("/deps/new.py", "w")
    print("writable")
except OSError as error:
    print("read-only:", error.strerror)
"""
    result = await python(
        bwrap_backend, workspace, code, mounts={deps: "/deps"}, env={"PYTHONPATH": "/deps"}
    )
    assert result.output.splitlines() == ["42", "read-only: Read-only file system"]
    for bad in ("relative", "/usr/lib", "/", "/workspace/x", "/etc", "/a/../usr"):
        with pytest.raises(ValueError, match="cannot mount"):
            await python(bwrap_backend, workspace, "", mounts={deps: bad})
    with pytest.raises(ValueError, match="does not exist"):
        await python(bwrap_backend, workspace, "", mounts={tmp_path / "missing": "/deps"})


async def test_the_workspace_is_writable_and_seen_by_the_host(
    bwrap_backend: Backend, workspace: Path
) -> None:
    code = "open('made.txt', 'w').write('by the sandbox')\nimport os\nprint(os.getcwd())\n"
    result = await python(bwrap_backend, workspace, code)
    assert result.output.strip() == "/workspace"
    assert (workspace / "made.txt").read_text() == "by the sandbox"


async def test_what_the_sandbox_writes_belongs_to_an_unprivileged_host_user(
    bwrap_backend: Backend, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    workspace = closed / "workspace"
    workspace.mkdir()
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / "data.txt").write_text("from the host\n")
    code = """
import os
open("made.txt", "w").write("by the sandbox")
os.mkdir("made")
open("pkg/data.txt", "a").write("and the sandbox\\n")
print(os.getuid(), os.getgid())
"""
    result = await python(bwrap_backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(SANDBOX_UID), str(SANDBOX_UID)]
    for made in (workspace / "made.txt", workspace / "made"):
        info = made.stat()
        assert (info.st_uid, info.st_gid) == HOST_IDS
    assert HOST_IDS[0] != 0
    # What the host wrote is the sandbox's to change for the run.
    assert (workspace / "pkg" / "data.txt").read_text() == "from the host\nand the sandbox\n"
    if AS_ROOT:
        # The directories above the workspace let the sandbox's user through, and no more; the
        # workspace itself is closed to other users.
        for directory in (closed, tmp_path):
            mode = directory.stat().st_mode
            assert mode & stat.S_IXOTH, oct(mode)
            assert not mode & (stat.S_IROTH | stat.S_IWOTH), oct(mode)
        assert workspace.stat().st_mode & 0o077 == 0


async def test_the_run_is_the_unprivileged_user_seen_from_the_host(
    bwrap_backend: Backend, workspace: Path
) -> None:
    """Every process of the run, bubblewrap included, is the unprivileged user on the host; and
    a root process in the run's reach (one that joins its pid namespace) can be neither
    signalled nor traced from inside."""
    assert AS_ROOT, "run the sandbox tests as root, as the service runs (.ci/run does)"
    marker = f"vdo-creds-{uuid.uuid4().hex}"
    target_marker = f"vdo-root-target-{uuid.uuid4().hex}"
    code = f"""
import ctypes, os, sys, time
print("inside", os.getuid(), " ".join(open("/proc/self/uid_map").read().split()), flush=True)
target = None
deadline = time.monotonic() + 20
while target is None and time.monotonic() < deadline:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if {target_marker.encode()!r} in open(f"/proc/{{pid}}/cmdline", "rb").read():
                target = int(pid)
        except OSError:
            pass
    time.sleep(0.05)
while target is not None and not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.05)
if target is None or not os.path.exists("go"):
    sys.exit("the root process never showed up")
print("target", target)
try:
    os.kill(target, 0)
    print("LEAK signal")
except PermissionError as error:
    print("BLOCKED signal", error)
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, target, None, None) == 0:  # PTRACE_ATTACH
    print("LEAK ptrace")
else:
    print("BLOCKED ptrace", os.strerror(ctypes.get_errno()))
try:
    open(f"/proc/{{target}}/environ", "rb").read()
    print("LEAK environ")
except PermissionError as error:
    print("BLOCKED environ", error)
"""
    (workspace / "main.py").write_text(code)
    spec = RunSpec(workspace=workspace, command=("python3", "main.py", marker), limits=LIMITS)
    lines: list[str] = []
    run = asyncio.create_task(bwrap_backend.run(spec, lines.append))
    joined: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(400):
            if lines or run.done():
                break
            await asyncio.sleep(0.05)
        assert lines, run.done() and run.result()
        assert lines[0].startswith("inside "), lines
        # Inside, the sandbox's uid maps to 0 of the namespace bubblewrap holds between the
        # host and the sandbox; what that is on the host is read from here.
        assert lines[0].split()[1:3] == [str(SANDBOX_UID), str(SANDBOX_UID)]
        # bubblewrap's own command line names the program too: the program is the python3.
        (program,) = [
            pid
            for pid in processes_with(marker)
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"python3\0")
        ]
        outside = Path(f"/proc/{program}/uid_map").read_text().split()
        assert outside == [str(SANDBOX_UID), str(HOST_UID), "1"]
        gids = Path(f"/proc/{program}/gid_map").read_text().split()
        assert gids == [str(SANDBOX_UID), str(HOST_GID), "1"]
        chain = [program]
        while (parent := parent_of(chain[-1])) not in (os.getpid(), 0, 1):
            chain.append(parent)
        assert parent == os.getpid()
        assert len(chain) >= 3  # the program, the namespace's init, bubblewrap
        assert Path(f"/proc/{chain[-1]}/exe").resolve().name == "bwrap"
        for pid in chain:
            assert host_ids(pid) == ({HOST_UID}, {HOST_GID}), pid
        # A root process (all its capabilities) joins the run's pid namespace.
        joined = subprocess.Popen(
            [
                *("nsenter", f"--target={program}", "--pid", "--"),
                *(sys.executable, "-c", "import time; time.sleep(60)", target_marker),
            ],
            stdin=subprocess.DEVNULL,
        )
        target: list[int] = []
        for _ in range(400):
            target = [pid for pid in processes_with(target_marker) if parent_of(pid) == joined.pid]
            if target or run.done():
                break
            await asyncio.sleep(0.05)
        assert target, "the root process did not start"
        assert host_ids(target[0]) == ({0}, {0})
        (workspace / "go").write_text("")
        result = await asyncio.wait_for(run, 60)
    finally:
        run.cancel()
        if joined is not None:
            try:
                joined.wait(10)
            except subprocess.TimeoutExpired:
                joined.kill()
                joined.wait()
    assert result.exit_code == 0, result.output
    assert "LEAK" not in result.output, result.output
    assert result.output.count("BLOCKED") == 3, result.output
    assert "BLOCKED signal [Errno 1] Operation not permitted" in result.output
    # The run's end took the root process that had joined it.
    assert processes_with(target_marker) == []


async def test_a_service_that_is_not_root_runs_bubblewrap_as_itself(tmp_path: Path) -> None:
    """No setpriv and no cgroup (the resource limits instead): bubblewrap runs as the service's
    own user, the sandbox's uid is that user outside. As root, the service is played by an
    unprivileged uid with its own copy of the package and the system's python3."""
    # 65533: in the range Debian reserves and leaves unused (65000-65533), so no one's.
    service = (65533, 65533) if AS_ROOT else (os.getuid(), os.getgid())
    source = tmp_path / "source"
    shutil.copytree(
        Path(vdo_sandbox.__file__).parent,
        source / "vdo_sandbox",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # The one kernel module the backend needs (the rest of the kernel needs installed packages).
    kernel = Path(hostfs.__file__).parent
    (source / "vdo_kernel").mkdir()
    for name in ("__init__.py", "hostfs.py"):
        shutil.copy(kernel / name, source / "vdo_kernel" / name)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    script = """
import asyncio, json, os, sys
from pathlib import Path
from vdo_sandbox.backend import Limits, RunSpec
from vdo_sandbox.bubblewrap import BubblewrapBackend
backend = BubblewrapBackend()
command = ("python3", "-c", "import os; open('made', 'w').write('x'); print(os.getuid())")
spec = RunSpec(workspace=Path(sys.argv[1]), command=command, limits=Limits(wall_seconds=30))
result = asyncio.run(backend.run(spec))
print(json.dumps({"describe": backend.describe(), "setpriv": backend.setpriv,
                  "cgroups": backend.cgroups is not None, "exit": result.exit_code,
                  "output": result.output}))
"""
    drop: list[str] = []
    if AS_ROOT:
        for path in (source, workspace):
            os.chown(path, *service)
        allow_traverse(tmp_path)
        drop = ["setpriv", f"--reuid={service[0]}", f"--regid={service[1]}", "--clear-groups"]
        drop += ["--inh-caps=-all", "--bounding-set=-all", "--"]
    done = await asyncio.to_thread(
        subprocess.run,
        [
            *drop,
            "/usr/bin/python3",
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(source)!r})" + "\n" + script,
            str(workspace),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["setpriv"] is None
    assert not report["cgroups"]
    assert "resource limits only" in report["describe"]
    assert f"this service's user (host uid {service[0]})" in report["describe"]
    assert (report["exit"], report["output"]) == (0, f"{SANDBOX_UID}\n")
    info = (workspace / "made").stat()
    assert (info.st_uid, info.st_gid) == service


def test_as_root_a_missing_setpriv_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AS_ROOT, "run the sandbox tests as root, as the service runs (.ci/run does)"
    real = shutil.which

    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if name == "setpriv" else real(name)

    monkeypatch.setattr(shutil, "which", which)
    with pytest.raises(SandboxUnavailableError, match=r"setpriv .*apt-get install util-linux"):
        BubblewrapBackend()


async def test_a_long_run_of_output_is_kept_at_both_ends(
    bwrap_backend: Backend, workspace: Path
) -> None:
    lines: list[str] = []
    code = "for i in range(2000):\n    print(f'line {i:04d}')\n"
    limits = replace(LIMITS, output_bytes=4096)
    result = await python(bwrap_backend, workspace, code, limits=limits, lines=lines)
    assert result.exit_code == 0  # 8 times the cap is not reached: the run goes on
    assert result.truncated
    assert result.output_bytes_total == 2000 * 10
    assert result.output.startswith("line 0000\n")
    assert result.output.rstrip().endswith("line 1999")
    assert "output cut" in result.output
    assert len(result.output.encode()) < 4096 + 200
    assert lines[0] == "line 0000"
    assert any("not shown live" in line for line in lines)
    assert lines[-1] == "line 1999"


async def test_output_far_over_the_cap_stops_the_run(
    bwrap_backend: Backend, workspace: Path
) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('y' * 4095 + '\\n')\n"
    result = await python(bwrap_backend, workspace, code, limits=replace(LIMITS, output_bytes=MIB))
    assert result.exit_code is None
    assert result.truncated
    assert "output limit" in result.killed_reason
    assert result.output_bytes_total >= 8 * MIB
    assert result.duration_seconds < 10


def test_output_pieces_and_lines() -> None:
    lines: list[str] = []
    output = CappedOutput(200_000, 0.0, lines.append)
    output.feed(b"first li")
    output.feed(b"ne\nsecond\r\nthi")
    output.feed(b"x" * 70_000)  # a very long line is passed on in pieces
    output.feed(b"y\nlast")
    output.finish()
    assert lines == ["first line", "second", "thi" + "x" * 70_000, "y", "last"]
    assert not output.truncated
    assert output.total == 8 + 14 + 70_000 + 6
    assert output.text() == "first line\nsecond\r\nthi" + "x" * 70_000 + "y\nlast"


async def test_a_port_ready_check_passes_inside_the_sandbox(
    bwrap_backend: Backend, workspace: Path
) -> None:
    marker = f"vdo-server-{uuid.uuid4().hex}"
    code = f"""
import http.server, sys, time
sys.argv.append({marker!r})
time.sleep(0.5)
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", 8765), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
    result = await python(bwrap_backend, workspace, code, ready=ReadyCheck(kind="port", port=8765))
    assert result.ready is True, result
    assert result.ready_detail == "port 8765 answered"
    assert result.exit_code is None  # stopped once ready
    assert "serving" in result.output
    assert processes_with(marker) == []


async def test_a_port_that_never_opens_is_reported(bwrap_backend: Backend, workspace: Path) -> None:
    limits = replace(LIMITS, wall_seconds=3.0)
    result = await python(
        bwrap_backend,
        workspace,
        "import time\ntime.sleep(60)\n",
        limits=limits,
        ready=ReadyCheck(kind="port", port=8766),
    )
    assert result.ready is False
    assert "not ready within" in result.ready_detail
    assert "8766" in result.ready_detail
    assert result.duration_seconds < 10


async def test_a_program_that_exits_before_it_is_ready_is_reported(
    bwrap_backend: Backend, workspace: Path
) -> None:
    result = await python(
        bwrap_backend,
        workspace,
        "raise SystemExit(4)\n",
        ready=ReadyCheck(kind="port", port=8767),
    )
    assert result.ready is False
    assert "exited with code 4" in result.ready_detail


async def test_a_command_ready_check_is_retried_until_it_passes(
    bwrap_backend: Backend, workspace: Path
) -> None:
    code = """
import time
time.sleep(1)
open("/tmp/up", "w").write("yes")
print("up", flush=True)
time.sleep(60)
"""
    check = ReadyCheck(kind="command", command=("cat", "/tmp/up"))
    result = await python(bwrap_backend, workspace, code, ready=check)
    assert result.ready is True, result
    assert result.ready_detail == "`cat /tmp/up` exited 0: yes"


async def test_stays_up_and_output_checks(bwrap_backend: Backend, workspace: Path) -> None:
    stays = await python(
        bwrap_backend,
        workspace,
        "import time\ntime.sleep(60)\n",
        ready=ReadyCheck(kind="stays_up", seconds=1.0),
    )
    assert stays.ready is True
    assert stays.ready_detail == "still running after 1s"
    assert 1.0 <= stays.duration_seconds < 5
    falls = await python(
        bwrap_backend,
        workspace,
        "import time\ntime.sleep(0.2)\nraise SystemExit(1)\n",
        ready=ReadyCheck(kind="stays_up", seconds=5.0),
    )
    assert falls.ready is False
    assert falls.exit_code == 1
    assert "exited with code 1" in falls.ready_detail
    # Printed and then gone at once: still a pass.
    printed = await python(
        bwrap_backend,
        workspace,
        "print('report: 3 rows')\n",
        ready=ReadyCheck(kind="output", text="3 rows"),
    )
    assert printed.ready is True
    assert printed.ready_detail == "printed '3 rows'"
    silent = await python(
        bwrap_backend,
        workspace,
        "print('something else')\n",
        ready=ReadyCheck(kind="output", text="3 rows"),
    )
    assert silent.ready is False
    assert silent.exit_code == 0


async def test_a_cancelled_run_leaves_nothing_behind(
    bwrap_backend: Backend, workspace: Path
) -> None:
    marker = f"vdo-cancelled-{uuid.uuid4().hex}"
    fds = open_fds()
    code = f"""
import subprocess, time
subprocess.Popen(["python3", "-c", "import time; time.sleep(1000)", {marker!r}])
print("started", flush=True)
time.sleep(1000)
"""
    lines: list[str] = []
    task = asyncio.create_task(python(bwrap_backend, workspace, code, lines=lines))
    for _ in range(200):
        if "started" in lines:
            break
        await asyncio.sleep(0.05)
    assert processes_with(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with(marker) == []
    assert run_cgroups() == []
    assert open_fds() == fds


async def test_many_runs_at_once_leave_no_descriptors_or_cgroups(
    bwrap_backend: Backend, tmp_path: Path
) -> None:
    fds = open_fds()
    workspaces = []
    for index in range(8):
        workspaces.append(tmp_path / f"w{index}")
        workspaces[-1].mkdir()
    results = await asyncio.gather(
        *(python(bwrap_backend, w, f"print({i} * 2)\n") for i, w in enumerate(workspaces))
    )
    assert [r.output.strip() for r in results] == [str(i * 2) for i in range(8)]
    assert open_fds() == fds
    assert run_cgroups() == []


async def test_without_cgroups_resource_limits_still_hold(workspace: Path) -> None:
    backend = BubblewrapBackend(cgroups=False)
    assert "resource limits only" in backend.describe()
    hog = await python(backend, workspace, "hog = b'x' * (1 << 30)\nprint('allocated')\n")
    assert "MemoryError" in hog.output
    assert "allocated" not in hog.output
    limits = replace(LIMITS, workspace_bytes=8 * MIB)
    big = await python(
        backend,
        workspace,
        "open('big', 'wb').write(b'x' * (16 << 20))\n",
        limits=limits,
    )
    assert big.exit_code != 0
    assert "File too large" in big.output
    assert (workspace / "big").stat().st_size <= 8 * MIB
    ok = await python(backend, workspace, "print('fine')\n")
    assert ok.output == "fine\n"


def test_cgroup_discovery_reads_mountinfo_and_membership() -> None:
    mountinfo = (
        "25 30 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "26 30 0:23 / /proc rw - proc proc rw\n"
        "27 25 0:24 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    mounts = _cgroup_mounts(mountinfo)
    assert mounts == [
        ("cgroup2", Path("/sys/fs/cgroup"), {"rw", "nsdelegate"}, "/"),
        ("cgroup", Path("/sys/fs/cgroup/memory"), {"rw", "memory"}, "/docker/abc"),
    ]
    membership = _membership("0::/system.slice/vdo.service\n4:memory,kmem:/docker/abc/x\n")
    assert membership == {
        "": "/system.slice/vdo.service",
        "memory": "/docker/abc/x",
        "kmem": "/docker/abc/x",
    }
    assert _inside(Path("/proc"), "/", "/") == Path("/proc")
    assert _inside(Path("/proc"), "/other", "/docker/abc") is None
    assert _inside(Path("/"), "/docker", "/docker/proc") == Path("/proc")


def test_cgroup_v2_limits_and_figures_on_a_stand_in_tree(tmp_path: Path) -> None:
    """The v2 files written and read (this host may be v1: the tree here is a plain directory
    standing in for cgroupfs)."""
    mount = tmp_path / "cgroup"
    service = mount / "system.slice" / "vdo.service"
    service.mkdir(parents=True)
    (service / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = [("cgroup2", mount, {"rw"}, "/")]
    found = Cgroups._v2(mounts, {"": "/system.slice/vdo.service"})
    assert found is not None
    # Not the root, and holding this process: the runs go in a sibling made for them.
    parent = mount / "system.slice" / "vdo-sandbox"
    assert found.parents == {"": parent}
    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert found.describe() == "cgroup v2 (cpu, memory, pids)"
    run = found.create(Limits(cpus=0.5, memory_bytes=256 * MIB, pids=64))
    directory = run.dirs[""]
    assert directory.parent == parent
    assert (directory / "memory.max").read_text() == str(256 * MIB)
    assert (directory / "pids.max").read_text() == "64"
    assert (directory / "cpu.max").read_text() == "50000 100000"
    assert run.procs_files() == [directory / "cgroup.procs"]
    (directory / "memory.peak").write_text("1234\n")
    (directory / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (directory / "pids.events").write_text("max 17\n")
    stats = run.stats()
    assert (stats.peak_memory_bytes, stats.cpu_seconds) == (1234, 2.5)
    assert (stats.oom_kills, stats.forks_refused) == (1, 17)
    without_pids = tmp_path / "other"
    without_pids.mkdir()
    (without_pids / "cgroup.controllers").write_text("cpu memory\n")
    assert Cgroups._v2([("cgroup2", without_pids, set(), "/")], {"": "/"}) is None
