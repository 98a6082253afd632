"""The planner service: turns a submitted job into a plan."""

import asyncio
from functools import partial

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_kernel.settings import Settings
from vdo_models.session import Models
from vdo_planner.planning import plan


def main() -> None:
    settings = Settings()
    models = Models(settings)
    work = {Step.PLAN: partial(plan, models=models)}
    asyncio.run(
        run_step_service("planner", work, settings, alongside=partial(models.serve, "planner"))
    )


if __name__ == "__main__":
    main()
