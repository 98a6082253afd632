"""The planner service: turns a submitted job into a plan."""

import asyncio

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_planner.scripted import plan


def main() -> None:
    asyncio.run(run_step_service("planner", {Step.PLAN: plan}))


if __name__ == "__main__":
    main()
