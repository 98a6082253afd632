"""The builder service: writes the code for the plan, attempt after attempt."""

import asyncio

from vdo_builder.scripted import build
from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service


def main() -> None:
    asyncio.run(run_step_service("builder", {Step.BUILD: build}))


if __name__ == "__main__":
    main()
