"""The builder service: writes the code for the plan, attempt after attempt."""

import asyncio
from functools import partial

from vdo_builder.building import build
from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_kernel.settings import Settings
from vdo_models.session import Models


def main() -> None:
    settings = Settings()
    models = Models(settings)
    work = {Step.BUILD: partial(build, models=models)}
    asyncio.run(
        run_step_service("builder", work, settings, alongside=partial(models.serve, "builder"))
    )


if __name__ == "__main__":
    main()
