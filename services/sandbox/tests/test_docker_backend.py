"""The Docker backend on a real engine: it runs code, and every limit holds."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from vdo_sandbox.backend import MIB, Limits, ReadyCheck, RunResult, RunSpec
from vdo_sandbox.docker_backend import LABEL, DockerBackend, disk_usage
from vdo_sandbox.image import SANDBOX_UID, host_mirror, host_suite

QUICK = Limits(wall_seconds=60)


def python(code: str) -> tuple[str, ...]:
    return ("python3", "-c", textwrap.dedent(code))


async def run(
    backend: DockerBackend, workspace: Path, code: str, limits: Limits = QUICK, **more: Any
) -> RunResult:
    return await backend.run(RunSpec(workspace, python(code), limits=limits, **more))


def containers_of(client: Any, workspace: Path) -> list[str]:
    """Ids of the sandbox containers (any state) that mount `workspace`."""
    found = client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
    source = str(workspace.resolve())
    return [c["Id"] for c in found if any(m.get("Source") == source for m in c["Mounts"])]


@pytest.fixture
def host_port() -> Iterator[int]:
    """A TCP port listening on the host's loopback for the length of a test."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


# ---- running -------------------------------------------------------------------------------


async def test_runs_a_command_with_its_output_and_exit_code(
    docker_backend: DockerBackend, workspace: Path
) -> None:
    (workspace / "given.txt").write_text("from the host")
    lines: list[str] = []
    result = await docker_backend.run(
        RunSpec(
            workspace,
            python("""
                import sys
                print("hello", open("given.txt").read())
                print("on stderr", file=sys.stderr, flush=True)
                open("made.txt", "w").write("by the sandbox")
                sys.exit(3)
            """),
            limits=QUICK,
        ),
        on_line=lines.append,
    )
    assert result.exit_code == 3
    assert "hello from the host" in result.output
    assert "on stderr" in result.output
    assert sorted(lines) == ["hello from the host", "on stderr"]
    assert not result.timed_out
    assert not result.truncated
    assert not result.killed_reason
    assert result.output_bytes_total == len(result.output.encode())
    assert result.first_output_seconds is not None
    assert 0 < result.first_output_seconds <= result.duration_seconds
    assert (workspace / "made.txt").read_text() == "by the sandbox"


async def test_runs_concurrently(docker_backend: DockerBackend, tmp_path: Path) -> None:
    workspaces = [tmp_path / str(n) for n in range(4)]
    for path in workspaces:
        path.mkdir()
    results = await asyncio.gather(
        *(run(docker_backend, path, f"print({n} * 7)") for n, path in enumerate(workspaces))
    )
    assert [r.output.strip() for r in results] == [str(n * 7) for n in range(4)]
    assert all(r.exit_code == 0 for r in results)


async def test_read_only_mounts_and_the_given_environment(
    docker_backend: DockerBackend, workspace: Path, tmp_path: Path
) -> None:
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "helper.py").write_text("ANSWER = 42\n")
    deps.chmod(0o755)
    (deps / "helper.py").chmod(0o644)
    code = """
        import helper, os
        print(helper.ANSWER, os.environ["EXTRA"])
        try:
            open("/deps/new.py", "w")
        except OSError as error:
            print("read-only", error.errno)
    """
    result = await run(
        docker_backend,
        workspace,
        code,
        mounts={deps: "/deps"},
        env={"PYTHONPATH": "/deps", "EXTRA": "given"},
    )
    assert result.exit_code == 0, result.output
    assert "42 given" in result.output
    assert "read-only 30" in result.output  # EROFS
    assert not (deps / "new.py").exists()


# ---- isolation -----------------------------------------------------------------------------


async def test_no_network_not_even_the_hosts_loopback(
    docker_backend: DockerBackend, workspace: Path, host_port: int
) -> None:
    code = f"""
        import socket
        for address in [("1.1.1.1", 53), ("127.0.0.1", {host_port}), ("172.17.0.1", {host_port})]:
            try:
                socket.create_connection(address, timeout=3).close()
                print("connected", address)
            except OSError as error:
                print("refused", address, type(error).__name__)
        print(sorted(name for _, name in socket.if_nameindex()))
    """
    result = await run(docker_backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert "connected" not in result.output
    assert result.output.count("refused") == 3
    assert "['lo']" in result.output  # no interface but the container's own loopback


async def test_only_workspace_and_tmp_are_writable(
    docker_backend: DockerBackend, workspace: Path
) -> None:
    code = """
        import os
        writable = []
        for root, dirs, _ in os.walk("/"):
            if root in ("/proc", "/sys"):
                dirs[:] = []
                continue
            try:
                with open(os.path.join(root, ".probe"), "w"):
                    pass
            except OSError:
                continue
            os.unlink(os.path.join(root, ".probe"))
            writable.append(root)
        print(writable)
        try:
            open("/usr/evil", "w")
        except OSError as error:
            print("usr:", error.errno)
    """
    result = await run(docker_backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert "['/workspace', '/tmp']" in result.output or "['/tmp', '/workspace']" in result.output
    assert "usr: 30" in result.output  # EROFS: the root filesystem is read-only


async def test_unprivileged_with_no_capabilities(
    docker_backend: DockerBackend, workspace: Path
) -> None:
    code = """
        import os
        lines = open("/proc/self/status").read().splitlines()
        status = dict(line.split(":\\t", 1) for line in lines)
        print(os.getuid(), os.geteuid(), os.getgid())
        for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
            print(key, status[key].strip())
    """
    result = await run(docker_backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert f"{SANDBOX_UID} {SANDBOX_UID} {SANDBOX_UID}" in result.output
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert f"{key} 0000000000000000" in result.output
    assert "NoNewPrivs 1" in result.output


async def test_no_host_environment(
    docker_backend: DockerBackend, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    monkeypatch.setenv("VDO_TEST_SECRET", marker)
    result = await run(
        docker_backend, workspace, "import os, json; print(json.dumps(dict(os.environ)))"
    )
    assert result.exit_code == 0, result.output
    env = json.loads(result.output)
    assert marker not in result.output
    assert set(env) <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "HOSTNAME"}
    assert env["HOME"] == "/workspace"


async def test_the_docker_socket_is_not_visible(
    docker_backend: DockerBackend, workspace: Path
) -> None:
    code = """
        import os
        print([p for p in ("/var/run/docker.sock", "/run/docker.sock") if os.path.exists(p)])
        print("docker.sock" in open("/proc/self/mountinfo").read())
    """
    result = await run(docker_backend, workspace, code)
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["[]", "False"]


async def test_cgroup_limits_are_set(docker_backend: DockerBackend, workspace: Path) -> None:
    limits = Limits(cpus=0.5, memory_bytes=96 * MIB, pids=40, wall_seconds=60)
    code = """
        from pathlib import Path
        V1 = "/sys/fs/cgroup/"
        def first(*paths):
            return next(Path(p).read_text().strip() for p in paths if Path(p).exists())
        print("cpu", first("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))
        print("mem", first("/sys/fs/cgroup/memory.max", V1 + "memory/memory.limit_in_bytes"))
        print("pids", first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"))
    """
    result = await run(docker_backend, workspace, code, limits=limits)
    assert result.exit_code == 0, result.output
    assert "cpu 50000" in result.output  # half of each 100 ms period
    assert f"mem {96 * MIB}" in result.output
    assert "pids 40" in result.output


# ---- limits --------------------------------------------------------------------------------


async def test_memory_hog_is_killed(docker_backend: DockerBackend, workspace: Path) -> None:
    code = """
        hoard = []
        while True:
            hoard.append(bytearray(8 * 1024 * 1024))
    """
    result = await run(docker_backend, workspace, code, limits=Limits(memory_bytes=64 * MIB))
    assert result.killed_reason == "memory limit (64 MiB) reached"
    assert result.exit_code is None
    assert "memory limit" in result.output


async def test_fork_bomb_is_contained(
    docker_backend: DockerBackend, docker_client: Any, workspace: Path
) -> None:
    code = """
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """
    limits = Limits(pids=32, wall_seconds=4)
    result = await run(docker_backend, workspace, code, limits=limits)
    assert result.timed_out
    assert result.exit_code is None
    assert result.killed_reason == "process limit (32) reached"
    assert result.duration_seconds < 30


async def test_wall_time(docker_backend: DockerBackend, workspace: Path) -> None:
    code = """
        import time
        print("started", flush=True)
        time.sleep(60)
    """
    result = await run(docker_backend, workspace, code, limits=Limits(wall_seconds=2))
    assert result.timed_out
    assert result.exit_code is None
    assert "started" in result.output
    assert "wall time of 2s" in result.output
    assert result.duration_seconds < 15


async def test_output_cap_keeps_memory_bounded(
    docker_backend: DockerBackend, workspace: Path
) -> None:
    code = """
        import sys
        line = "x" * 1023 + "\\n"
        for _ in range(50 * 1024):
            sys.stdout.write(line)
    """
    limits = Limits(output_bytes=1 * MIB, wall_seconds=120)
    seen = 0

    def count(_line: str) -> None:
        nonlocal seen
        seen += 1

    tracemalloc.start()
    try:
        result = await docker_backend.run(
            RunSpec(workspace, python(code), limits=limits), on_line=count
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert result.truncated
    assert result.output_bytes_total == 50 * MIB
    assert len(result.output.encode()) < MIB + 200
    assert "output cut at 1048576 bytes" in result.output
    assert seen == 1024  # the lines within the cap, each passed on
    assert peak < 16 * MIB, f"reading the output took {peak / MIB:.0f} MiB"


async def test_tmp_is_small(docker_backend: DockerBackend, workspace: Path) -> None:
    code = """
        try:
            with open("/tmp/big", "wb") as file:
                file.write(b"x" * (8 * 1024 * 1024))
                file.flush()
            print("wrote")
        except OSError as error:
            print("full", error.errno)
    """
    result = await run(docker_backend, workspace, code, limits=Limits(tmpfs_bytes=4 * MIB))
    assert "full 28" in result.output  # ENOSPC


async def test_workspace_limit(docker_backend: DockerBackend, workspace: Path) -> None:
    code = """
        import time
        try:
            open("one-big-file", "wb").write(b"x" * (40 * 1024 * 1024))
        except OSError as error:
            print("too big", error.errno, flush=True)
        for n in range(10):
            open(f"part{n}", "wb").write(b"x" * (8 * 1024 * 1024))
        time.sleep(30)
    """
    limits = Limits(workspace_bytes=32 * MIB, wall_seconds=60)
    result = await run(docker_backend, workspace, code, limits=limits)
    assert "too big 27" in result.output  # EFBIG: no file may outgrow the workspace
    assert result.killed_reason == "workspace limit (32 MiB) exceeded"
    assert result.exit_code is None
    assert result.duration_seconds < 20


async def test_background_processes_and_container_are_gone(
    docker_backend: DockerBackend, docker_client: Any, workspace: Path
) -> None:
    seconds = 900000 + uuid.uuid4().int % 99999
    result = await docker_backend.run(
        RunSpec(
            workspace,
            ("sh", "-c", f"sleep {seconds} > /dev/null 2>&1 & echo left behind"),
            limits=QUICK,
        )
    )
    assert result.exit_code == 0
    assert "left behind" in result.output
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", str(seconds)]
    ]
    assert leftovers == []
    assert containers_of(docker_client, workspace) == []


async def test_a_cancelled_run_removes_its_container(
    docker_backend: DockerBackend, docker_client: Any, workspace: Path
) -> None:
    spec = RunSpec(
        workspace,
        python("print('up', flush=True); import time; time.sleep(60)"),
    )
    started = asyncio.Event()
    task = asyncio.create_task(docker_backend.run(spec, on_line=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert containers_of(docker_client, workspace) == []


@pytest.mark.parametrize("after", [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
async def test_cancelled_at_any_point_leaves_no_container(
    docker_backend: DockerBackend, docker_client: Any, workspace: Path, after: float
) -> None:
    spec = RunSpec(workspace, ("sleep", "60"))
    task = asyncio.create_task(docker_backend.run(spec))
    await asyncio.sleep(after)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # a container still being made is removed once it exists
        left = containers_of(docker_client, workspace)
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == []


async def test_a_missing_image_is_a_clear_error(docker_client: Any, workspace: Path) -> None:
    from vdo_sandbox.backend import SandboxUnavailableError

    backend = DockerBackend("vdo-sandbox-missing:nope", client=docker_client)
    with pytest.raises(SandboxUnavailableError, match="vdo sandbox build-image"):
        await backend.run(RunSpec(workspace, ("true",)))


# ---- ready checks --------------------------------------------------------------------------

SERVER = ("python3", "-u", "-m", "http.server", "8080", "--bind", "127.0.0.1")


async def test_ready_port(docker_backend: DockerBackend, workspace: Path) -> None:
    result = await docker_backend.run(
        RunSpec(workspace, SERVER, limits=QUICK, ready=ReadyCheck("port", port=8080))
    )
    assert result.ready is True, result
    assert result.ready_detail == "port 8080 answered"
    assert result.exit_code is None
    assert not result.timed_out
    assert result.duration_seconds < 20


async def test_ready_port_that_never_opens(docker_backend: DockerBackend, workspace: Path) -> None:
    result = await docker_backend.run(
        RunSpec(
            workspace,
            ("sleep", "60"),
            limits=Limits(wall_seconds=3),
            ready=ReadyCheck("port", port=8080),
        )
    )
    assert result.ready is False
    assert result.timed_out
    assert "not up within" in result.ready_detail


async def test_ready_command(docker_backend: DockerBackend, workspace: Path) -> None:
    smoke = (
        "python3",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/')",
    )
    result = await docker_backend.run(
        RunSpec(workspace, SERVER, limits=QUICK, ready=ReadyCheck("command", command=smoke))
    )
    assert result.ready is True, result
    assert "exited 0" in result.ready_detail
    assert result.exit_code is None


async def test_ready_stays_up(docker_backend: DockerBackend, workspace: Path) -> None:
    check = ReadyCheck("stays_up", seconds=1)
    up = await docker_backend.run(RunSpec(workspace, ("sleep", "60"), limits=QUICK, ready=check))
    assert up.ready is True
    assert 1 <= up.duration_seconds < 15
    down = await docker_backend.run(
        RunSpec(workspace, python("raise SystemExit(2)"), limits=QUICK, ready=check)
    )
    assert down.ready is False
    assert down.exit_code == 2
    assert "exited with code 2" in down.ready_detail


async def test_ready_output(docker_backend: DockerBackend, workspace: Path) -> None:
    code = """
        import time
        print("booting", flush=True)
        time.sleep(0.5)
        print("now ready to serve", flush=True)
        time.sleep(60)
    """
    result = await docker_backend.run(
        RunSpec(workspace, python(code), limits=QUICK, ready=ReadyCheck("output", text="ready to"))
    )
    assert result.ready is True
    assert "now ready to serve" in result.output
    assert result.exit_code is None
    assert not result.timed_out
    assert result.duration_seconds < 20


# ---- smaller pieces ------------------------------------------------------------------------


def test_describe_names_engine_and_image(docker_backend: DockerBackend) -> None:
    text = docker_backend.describe()
    assert text.startswith("docker (engine ")
    assert docker_backend.image in text


def test_disk_usage_counts_sparse_files_at_full_length(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data").write_bytes(b"x" * 10000)
    with (tmp_path / "sparse").open("wb") as file:
        file.truncate(50 * MIB)
    assert 50 * MIB + 10000 <= disk_usage(tmp_path) < 51 * MIB


def test_host_suite_and_mirror(tmp_path: Path) -> None:
    (tmp_path / "os-release").write_text('NAME="Debian"\nVERSION_CODENAME=trixie\n')
    assert host_suite(tmp_path / "os-release") == "trixie"
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian trixie main\n"
        "deb [arch=amd64] http://one-line.example/debian bookworm main\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: trixie trixie-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://security.example/debian-security\n"
        "Suites: trixie-security\n"
    )
    (apt / "sources.list.d" / "other.list.disabled").write_text(
        "deb http://no.example/ trixie main\n"
    )
    assert host_mirror("trixie", apt) == "http://mirror.example/debian"
    assert host_mirror("bookworm", apt) == "http://one-line.example/debian"


def test_the_host_has_a_mirror() -> None:
    assert host_mirror(host_suite()).startswith(("http://", "https://"))
