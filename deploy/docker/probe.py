"""Container health probes for the VDO services (compose healthchecks, Kubernetes probes).

    python /opt/vdo/probe.py http    the gateway answers GET /api/health on VDO_PORT
    python /opt/vdo/probe.py ready   NATS and PostgreSQL (VDO_NATS_URL, VDO_DATABASE_URL) accept
                                     connections: the service can do its work
    python /opt/vdo/probe.py alive   the service's process (pid 1) runs and is not stopped

Only the gateway has a health signal of its own; for the others these are stand-ins that cannot
restart a healthy service (`ready` is a readiness check, never a liveness one: a NATS outage must
not restart every service, which reconnect by themselves).
"""

from __future__ import annotations

import os
import socket
import sys
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


def alive() -> bool:
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
