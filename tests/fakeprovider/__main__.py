"""Run the fake provider as its own process: ``python -m tests.fakeprovider --port N``."""

from __future__ import annotations

import argparse
import socket

import uvicorn

from .app import FakeApp
from .script import Script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # connections wait in the backlog until the server accepts them
    host, port = sock.getsockname()[:2]
    print(f"fake provider listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(
        FakeApp(Script()), log_level=args.log_level, lifespan="off", timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
