"""`python -m vdo_projector` runs the projector; `python -m vdo_projector rebuild` drops the
read models and replays the log into them; `... checksums` prints their checksums."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from vdo_kernel import logs, readmodels
from vdo_kernel.settings import Settings
from vdo_projector.projection import checksums, rebuild
from vdo_projector.service import run_projector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdo_projector")
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "rebuild", "checksums"]
    )
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "run":
        asyncio.run(run_projector(settings))
        return 0
    # Logs go to stderr, so stdout carries only the JSON result.
    logs.configure("projector", level=settings.log_level, fmt=settings.log_format)
    if not settings.database_url:
        print("VDO_DATABASE_URL must be set (the stack's database)", file=sys.stderr)
        return 2
    if args.command == "rebuild":
        print(json.dumps(rebuild(settings.database_url).to_json(), indent=2))
        return 0
    try:
        print(json.dumps(checksums(settings.database_url), indent=2))
    except readmodels.OutdatedReadModelsError as outdated:
        print(str(outdated), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
