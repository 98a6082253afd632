"""The tester service: writes the tests that the sandbox then runs."""

import asyncio

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_tester.scripted import write_tests


def main() -> None:
    asyncio.run(run_step_service("tester", {Step.WRITE_TESTS: write_tests}))


if __name__ == "__main__":
    main()
