"""The building step: a model writes the files of the plan; on a later attempt it gets its
previous files and the reason they were sent back."""

from __future__ import annotations

import json

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_models.files import UnsafeFilesError, check_files, load_files, store_files
from vdo_models.interface import Message, ModelRequest
from vdo_models.phases import BUILD
from vdo_models.session import Models, attempt_line, file_limits, label, render_files, tag

SYSTEM = """You are the building phase of VDO, an AI development orchestrator.
Write every file of the plan below: complete, working Python 3.11 code, no placeholders. Tests
are written separately (under tests/); do not write them. If the plan has dependencies, write
requirements.txt listing them. Paths are relative to the project directory.
When you are given feedback on a previous attempt (failing tests or a reviewer's comments),
fix exactly what it describes and return the whole set of files again.

Reply with one JSON document and nothing else, matching this JSON schema:
"""


async def build(ctx: StepContext, models: Models) -> StepResult:
    job, attempt = ctx.job, ctx.due.attempt
    plan_digest = job.record(Step.PLAN).artifacts.get("plan")
    if not plan_digest:
        raise StepFailure("no plan to build from")
    plan = ctx.blobs.get(plan_digest).decode()
    messages = [
        Message(
            "user",
            f"Job title: {job.title}\n\nDescription:\n{job.description}\n\nThe plan:\n{plan}",
            cache=True,
        )
    ]
    feedback = job.feedback[-1] if attempt > 1 and job.feedback else ""
    previous = job.record(Step.BUILD, attempt - 1).artifacts.get("files") if attempt > 1 else None
    if previous:
        messages.append(
            Message(
                "user",
                f"Your files from attempt {attempt - 1}:\n"
                + render_files(load_files(ctx.blobs, previous)),
                cache=True,
            )
        )
    if feedback:
        messages.append(
            Message(
                "user",
                f"Attempt {attempt - 1} was sent back. The feedback:\n{feedback}\n\n"
                "Fix what it describes and return every file.",
            )
        )
    messages.append(Message("user", attempt_line(attempt, job.max_attempts)))
    calls = models.calls(ctx, "builder")
    document = await calls.ask(
        ModelRequest(
            phase="builder",
            system=SYSTEM + json.dumps(BUILD),
            messages=tuple(messages),
            max_output_tokens=ctx.settings.model_max_output_tokens,
            json_schema=BUILD,
            task=f"{job.title}\n{job.description}",
            attempt=attempt,
        ),
        BUILD,
    )
    try:
        files = check_files(document["files"], file_limits(ctx.settings))
    except UnsafeFilesError as refused:
        raise StepFailure(f"refused the builder's files, nothing was written: {refused}") from None
    digest = store_files(ctx.blobs, files)
    model = label(calls.used)
    return StepResult(
        outcome=Outcome.OK,
        summary=f"{tag(model)}wrote {len(files)} file(s) for attempt {attempt}",
        artifacts={"files": digest},
        details={
            "model": model,
            "files": sorted(files),
            "bytes": sum(len(c.encode()) for c in files.values()),
            "used_feedback": bool(feedback),
            "notes": str(document.get("notes", ""))[:2000],
        },
    )
