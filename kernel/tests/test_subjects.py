"""The bus's names: what makes each step due, as the pipeline's order has it."""

from __future__ import annotations

from vdo_kernel.domain import Step
from vdo_kernel.subjects import STEP_TRIGGERS


def test_each_step_is_due_after_its_admission_the_step_before_it_or_a_new_attempt() -> None:
    assert STEP_TRIGGERS == {
        Step.PLAN: ("vdo.job.JobAdmitted.plan",),
        Step.BUILD: (
            "vdo.job.JobAdmitted.build",
            "vdo.job.StepFinished.plan",
            "vdo.job.AttemptStarted",
        ),
        Step.WRITE_TESTS: ("vdo.job.JobAdmitted.write_tests", "vdo.job.StepFinished.build"),
        Step.RUN_TESTS: ("vdo.job.JobAdmitted.run_tests", "vdo.job.StepFinished.write_tests"),
        Step.REVIEW: ("vdo.job.JobAdmitted.review", "vdo.job.StepFinished.run_tests"),
        Step.SANDBOX_RUN: ("vdo.job.JobAdmitted.sandbox_run", "vdo.job.StepFinished.review"),
    }
