"""The review step: a different model reads the code and the test results and approves it or
sends it back with comments (which become the builder's feedback)."""

from __future__ import annotations

import json

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_models.files import load_files
from vdo_models.interface import Message, ModelRequest
from vdo_models.phases import REVIEW
from vdo_models.session import Models, attempt_line, label, render_files, tag

SYSTEM = """You are the review phase of VDO, an AI development orchestrator.
Review the program below against the job and its plan, with its tests and their results. Approve
it when it does what the job asks, works, and has no serious security or correctness problem;
otherwise request changes, with comments precise enough for another model to fix each one
(file, what is wrong, what to do). Do not request changes for matters of taste.

Reply with one JSON document and nothing else, matching this JSON schema:
"""


async def review(ctx: StepContext, models: Models) -> StepResult:
    job, attempt = ctx.job, ctx.due.attempt
    plan_digest = job.record(Step.PLAN).artifacts.get("plan")
    built = job.record(Step.BUILD, attempt).artifacts.get("files")
    tests = job.record(Step.WRITE_TESTS, attempt).artifacts.get("tests")
    run = job.record(Step.RUN_TESTS, attempt)
    if not plan_digest or not built or not tests:
        raise StepFailure("nothing to review: no plan, files or tests")
    results = run.summary
    messages = (
        Message(
            "user",
            f"Job title: {job.title}\n\nDescription:\n{job.description}\n\n"
            f"The plan:\n{ctx.blobs.get(plan_digest).decode()}",
            cache=True,
        ),
        Message(
            "user",
            "The program's files:\n"
            + render_files(load_files(ctx.blobs, built))
            + "\n\nThe tests:\n"
            + render_files(load_files(ctx.blobs, tests))
            + f"\n\nTest results: {results}",
        ),
        Message("user", attempt_line(attempt, job.max_attempts)),
    )
    calls = models.calls(ctx, "reviewer")
    document = await calls.ask(
        ModelRequest(
            phase="reviewer",
            system=SYSTEM + json.dumps(REVIEW),
            messages=messages,
            max_output_tokens=ctx.settings.model_max_output_tokens,
            json_schema=REVIEW,
            task=f"{job.title}\n{job.description}",
            attempt=attempt,
        ),
        REVIEW,
    )
    model = label(calls.used)
    approved = document["verdict"] == "approve"
    comments = [f"- {c['path'] or '(general)'}: {c['comment']}" for c in document["comments"]]
    summary = document["summary"].strip()
    if comments:
        summary += "\n" + "\n".join(comments)
    return StepResult(
        outcome=Outcome.APPROVED if approved else Outcome.CHANGES_REQUESTED,
        summary=f"{tag(model)}{'approved' if approved else 'changes requested'}: {summary}",
        artifacts={"review": ctx.blobs.put(json.dumps(document, indent=2).encode())},
        details={
            "model": model,
            "verdict": document["verdict"],
            "comments": document["comments"],
        },
    )
