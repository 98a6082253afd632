"""The reviewer service: approves the result or sends it back with comments."""

import asyncio

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_reviewer.scripted import review


def main() -> None:
    asyncio.run(run_step_service("reviewer", {Step.REVIEW: review}))


if __name__ == "__main__":
    main()
