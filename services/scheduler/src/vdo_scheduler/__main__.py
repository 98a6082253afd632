"""`python -m vdo_scheduler` runs the scheduler (one leads; a second one stands by)."""

from __future__ import annotations

import asyncio

from vdo_scheduler.scheduler import run_scheduler


def main() -> None:
    asyncio.run(run_scheduler())


if __name__ == "__main__":
    main()
