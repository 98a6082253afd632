"""The sandbox service: the only service that runs generated code."""

import asyncio

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_sandbox.runs import run_tests, sandbox_run


def main() -> None:
    asyncio.run(
        run_step_service("sandbox", {Step.RUN_TESTS: run_tests, Step.SANDBOX_RUN: sandbox_run})
    )


if __name__ == "__main__":
    main()
