"""The built-in scripted reviewer: approves what passed its tests, and says it is scripted."""

from __future__ import annotations

import asyncio

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepResult

SCRIPTED_MODEL = "scripted (built-in; no AI model configured)"


async def review(ctx: StepContext) -> StepResult:
    await asyncio.sleep(ctx.settings.scripted_delay_seconds)
    tests = ctx.job.record(Step.RUN_TESTS, ctx.due.attempt)
    if tests.outcome is not Outcome.PASSED:
        return StepResult(
            outcome=Outcome.CHANGES_REQUESTED,
            summary="[scripted model] the tests did not pass; fix them first",
            details={"model": SCRIPTED_MODEL},
        )
    return StepResult(
        outcome=Outcome.APPROVED,
        summary="[scripted model] approved: tests pass (no real review was done)",
        details={"model": SCRIPTED_MODEL, "comments": []},
    )
