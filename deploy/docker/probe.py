"""Container health probes for the VDO services (compose healthchecks, Kubernetes probes).

    python /opt/vdo/probe.py http    the gateway answers GET /api/health on VDO_PORT
    python /opt/vdo/probe.py ready   NATS and PostgreSQL (VDO_NATS_URL, VDO_DATABASE_URL) accept
                                     connections: the service can do its work
    python /opt/vdo/probe.py alive   the service's event loop runs: its heartbeat file
                                     (VDO_HEARTBEAT_PATH, renewed every 5 s) is recent; without
                                     one, its process (pid 1) runs and is not stopped

The gateway answers its health check itself; the other services renew a heartbeat file while
their event loop runs (`vdo_kernel.heartbeat`), so a stuck loop is seen, and a service waiting
for NATS or PostgreSQL is not restarted for it (`ready` is a readiness check, never a liveness
one: a NATS outage must not restart every service, which reconnect by themselves).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from urllib.parse import urlsplit

TIMEOUT = 3.0


def http() -> bool:
    port = os.environ.get("VDO_PORT", "8000")
    url = f"http://127.0.0.1:{port}/api/health"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return bool(response.status == 200)


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    except OSError:
        return False
    return True


def _endpoints(urls: str, default_port: int) -> list[tuple[str, int]]:
    found = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        if parts.hostname:
            found.append((parts.hostname, parts.port or default_port))
    return found


def ready() -> bool:
    nats = _endpoints(os.environ.get("VDO_NATS_URL", ""), 4222)
    postgres = _endpoints(os.environ.get("VDO_DATABASE_URL", ""), 5432)
    # One NATS server of a cluster is enough: the client moves to another by itself.
    return any(_reachable(*e) for e in nats) and all(_reachable(*e) for e in postgres)


# A heartbeat older than this is a stuck service (it is renewed every 5 s).
HEARTBEAT_MAX_AGE = float(os.environ.get("VDO_HEARTBEAT_MAX_AGE", "30"))
# A process this young may not have written its first heartbeat yet.
START_GRACE_SECONDS = 60.0


def alive() -> bool:
    path = os.environ.get("VDO_HEARTBEAT_PATH")
    if not path:
        return _process_runs()
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return _process_runs() and _process_age() < START_GRACE_SECONDS
    return age <= HEARTBEAT_MAX_AGE


def _process_age() -> float:
    """Seconds since pid 1 started."""
    with open("/proc/1/stat") as stat:
        started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as uptime:
        up = float(uptime.read().split()[0])
    return up - started_ticks / os.sysconf("SC_CLK_TCK")


def _process_runs() -> bool:
    try:
        with open("/proc/1/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1] not in ("T", "Z", "X")
    except OSError:
        return False
    return False


def main() -> int:
    checks = {"http": http, "ready": ready, "alive": alive}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        print(f"usage: probe.py {'|'.join(checks)}", file=sys.stderr)
        return 2
    try:
        return 0 if checks[sys.argv[1]]() else 1
    except Exception as error:
        print(f"{sys.argv[1]}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
