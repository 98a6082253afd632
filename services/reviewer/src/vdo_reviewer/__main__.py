"""The reviewer service: approves the result or sends it back with comments."""

import asyncio
from functools import partial

from vdo_kernel.domain import Step
from vdo_kernel.service import run_step_service
from vdo_kernel.settings import Settings
from vdo_models.session import Models
from vdo_reviewer.reviewing import review


def main() -> None:
    settings = Settings()
    models = Models(settings)
    asyncio.run(
        run_step_service(
            "reviewer",
            {Step.REVIEW: partial(review, models=models)},
            settings,
            alongside=partial(models.serve, "reviewer"),
        )
    )


if __name__ == "__main__":
    main()
