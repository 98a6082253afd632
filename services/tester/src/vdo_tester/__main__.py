"""The tester service: writes the tests that the sandbox then runs."""

import asyncio
from functools import partial

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_kernel.settings import Settings
from vdo_models.session import Models
from vdo_tester.testing import write_tests


def main() -> None:
    settings = Settings()
    models = Models(settings)
    asyncio.run(
        run_step_service(
            "tester",
            {Step.WRITE_TESTS: partial(write_tests, models=models)},
            settings,
            alongside=partial(models.serve, "tester"),
        )
    )


if __name__ == "__main__":
    main()
