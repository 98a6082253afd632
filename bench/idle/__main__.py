"""Idle benchmark: what a stack with nothing to do costs, in PostgreSQL transactions and CPU.

Run by hand: `uv run python bench/idle` (`--settle 20 --seconds 60 --statements-seconds 30`).
Starts the whole embedded stack (every service a process) in a temporary directory, waits for
it to settle, then measures over one window:

- **transactions/min**: the delta of `sum(xact_commit + xact_rollback)` over every database
  of `pg_stat_database` (this script's own two reads are left out);
- **CPU** (user + system, psutil) of each service process, NATS and PostgreSQL (the postmaster
  and its backends), in seconds per minute and as a share of one core.

Then, over a second window, PostgreSQL logs every statement (`log_statement = all`), and each
statement is charged to the service whose connection sent it (a backend's client port is
matched to the service process holding that socket), so it says who still asks the store
something when nothing happens. Statement logging costs PostgreSQL CPU, so that window's CPU is
not reported.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from vdo_cli.embedded import free_port
from vdo_cli.stack import Stack
from vdo_kernel.settings import Settings

XACTS = "SELECT sum(xact_commit + xact_rollback)::bigint FROM pg_stat_database"
# A logged statement: the simple protocol's `statement:` or the extended protocol's `execute`.
STATEMENT = re.compile(r"^\[(\d+)\] LOG:  (?:statement|execute [^:]*):")


def processes(stack: Stack) -> dict[str, list[psutil.Process]]:
    """Each part of the stack (a service, `nats`, `postgres`) and its processes."""
    parts: dict[str, list[psutil.Process]] = {}
    for name, proc in stack.procs.items():
        if proc.popen is not None and proc.popen.poll() is None:
            parts[name] = [psutil.Process(proc.popen.pid)]
    for name, server in (("nats", stack.nats), ("postgres", stack.postgres)):
        if server is not None and server.process is not None:
            root = psutil.Process(server.process.pid)
            parts[name] = [root, *root.children(recursive=True)]
    return parts


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) used so far by each part of the stack (a PostgreSQL backend
    that ended meanwhile is counted in its postmaster's children times)."""
    used: dict[str, float] = {}
    for name, procs in processes(stack).items():
        total = 0.0
        for process in procs:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        used[name] = total
    return used


def transactions(conn: psycopg.Connection) -> int:
    row = conn.execute(XACTS).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def backends_by_service(stack: Stack, conn: psycopg.Connection) -> dict[int, str]:
    """Each PostgreSQL backend's pid, by the service whose socket is its client end."""
    assert stack.postgres is not None
    pg_port = stack.postgres.port
    owners: dict[int, str] = {}
    for name, procs in processes(stack).items():
        if name in ("nats", "postgres"):
            continue
        for process in procs:
            try:
                sockets = process.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            for sock in sockets:
                if sock.raddr and sock.raddr.port == pg_port:
                    owners[sock.laddr.port] = name
    rows = conn.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
    ).fetchall()
    return {int(pid): owners.get(int(port), "?") for pid, port in rows}


def measure(stack: Stack, seconds: float) -> None:
    assert stack.postgres is not None
    with psycopg.connect(stack.postgres.admin_url, autocommit=True) as conn:
        cpu_before = cpu_seconds(stack)
        xacts_before = transactions(conn)
        started = time.monotonic()
        time.sleep(seconds)
        xacts_after = transactions(conn)
        elapsed = time.monotonic() - started
        cpu_after = cpu_seconds(stack)
    per_minute = 60.0 / elapsed
    # This script's own reads are one transaction each; the first is counted, the second not.
    xacts = xacts_after - xacts_before - 1
    print(f"idle window: {elapsed:.1f} s")
    print(f"PostgreSQL transactions/min: {xacts * per_minute:.0f}")
    print("CPU (user + system), s/min and % of one core:")
    total = 0.0
    for name in sorted(cpu_after, key=lambda n: -(cpu_after[n] - cpu_before.get(n, 0.0))):
        used = (cpu_after[name] - cpu_before.get(name, 0.0)) * per_minute
        total += used
        print(f"  {name:<10} {used:7.3f} s/min  {used / 60 * 100:6.2f} %")
    print(f"  {'total':<10} {total:7.3f} s/min  {total / 60 * 100:6.2f} %")


def count_statements(stack: Stack, seconds: float) -> None:
    assert stack.postgres is not None
    log_path = stack.postgres.log_path
    with psycopg.connect(stack.postgres.admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("ALTER SYSTEM SET log_line_prefix = '[%p] '")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(1.0)
        owners = backends_by_service(stack, conn)
        offset = log_path.stat().st_size
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        end = log_path.stat().st_size
        # Backends opened during the window are found too.
        owners.update(backends_by_service(stack, conn))
        mine = conn.execute("SELECT pg_backend_pid()").fetchone()
        conn.execute("ALTER SYSTEM RESET log_statement")
        conn.execute("ALTER SYSTEM RESET log_line_prefix")
        conn.execute("SELECT pg_reload_conf()")
    owners.pop(int(mine[0]) if mine else -1, None)
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read(end - offset).decode(errors="replace")
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        match = STATEMENT.match(line)
        if match and int(match[1]) in owners:
            counts[owners[int(match[1])]] += 1
    per_minute = 60.0 / elapsed
    print(f"statements/min by service (over {elapsed:.1f} s, statement logging on):")
    for name, count in counts.most_common():
        print(f"  {name:<10} {count * per_minute:7.0f}")
    print(f"  {'total':<10} {sum(counts.values()) * per_minute:7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument(
        "--statements-seconds",
        type=float,
        default=30.0,
        help="the window statements are counted per service over (0: not counted)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdo-bench-") as home:
        settings = Settings(home=Path(home), port=free_port(), log_level="WARNING")
        stack = Stack(settings, durable=False, echo=None)
        stack.start()
        try:
            time.sleep(args.settle)
            measure(stack, args.seconds)
            if args.statements_seconds > 0:
                count_statements(stack, args.statements_seconds)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
