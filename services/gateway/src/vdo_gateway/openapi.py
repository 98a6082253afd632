"""`python -m vdo_gateway.openapi [FILE]`: the API's OpenAPI schema as JSON, without a running
stack (the dashboard's typed client is generated from it at build time)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vdo_gateway.app import create_app
from vdo_kernel.settings import Settings

# The app is only built, never started: these are never connected to.
UNUSED_NATS = "nats://127.0.0.1:1"
UNUSED_DATABASE = "postgresql://unused@127.0.0.1:1/unused"


def schema() -> str:
    settings = Settings(nats_url=UNUSED_NATS, database_url=UNUSED_DATABASE, host="127.0.0.1")
    return json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = schema()
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
