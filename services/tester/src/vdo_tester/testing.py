"""The test-writing step: a model writes tests for the built files and the command that runs
them; the sandbox runs them next."""

from __future__ import annotations

import json

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepFailure, StepResult
from vdo_models.files import UnsafeFilesError, check_files, load_files, store_files
from vdo_models.interface import Message, ModelRequest
from vdo_models.phases import TESTS
from vdo_models.session import Models, attempt_line, file_limits, label, render_files, tag

SYSTEM = """You are the testing phase of VDO, an AI development orchestrator.
Write tests for the program below that check it does what the job asks: the main behaviour, the
edge cases the description implies, and errors. Put every test file under tests/. The tests run
in a sandbox with no network, from the project directory, with only the plan's dependencies
installed; they must not need a running server (use test clients) and must finish in under a
minute. `command` runs them, e.g. ["python3", "-m", "pytest", "-q", "tests"] (pytest only if it
is a dependency) or ["python3", "-m", "unittest", "discover", "-s", "tests", "-v"]: a run
counts as passed only when pytest's or unittest's own summary says tests ran and none failed.

Reply with one JSON document and nothing else, matching this JSON schema:
"""


async def write_tests(ctx: StepContext, models: Models) -> StepResult:
    job, attempt = ctx.job, ctx.due.attempt
    plan_digest = job.record(Step.PLAN).artifacts.get("plan")
    files_digest = job.record(Step.BUILD, attempt).artifacts.get("files")
    if not plan_digest or not files_digest:
        raise StepFailure("nothing to test: no plan or no built files")
    code = load_files(ctx.blobs, files_digest)
    messages = [
        Message(
            "user",
            f"Job title: {job.title}\n\nDescription:\n{job.description}\n\n"
            f"The plan:\n{ctx.blobs.get(plan_digest).decode()}",
            cache=True,
        ),
        Message("user", "The program's files:\n" + render_files(code)),
        Message("user", attempt_line(attempt, job.max_attempts)),
    ]
    calls = models.calls(ctx, "tester")
    document = await calls.ask(
        ModelRequest(
            phase="tester",
            system=SYSTEM + json.dumps(TESTS),
            messages=tuple(messages),
            max_output_tokens=ctx.settings.model_max_output_tokens,
            json_schema=TESTS,
            task=f"{job.title}\n{job.description}",
            attempt=attempt,
        ),
        TESTS,
    )
    try:
        tests = check_files(document["files"], file_limits(ctx.settings))
    except UnsafeFilesError as refused:
        raise StepFailure(f"refused the tester's files, nothing was written: {refused}") from None
    clashes = sorted(set(tests) & set(code))
    if clashes:
        raise StepFailure(f"the tests would overwrite the program's files: {', '.join(clashes)}")
    model = label(calls.used)
    return StepResult(
        outcome=Outcome.OK,
        summary=f"{tag(model)}wrote {len(tests)} test file(s): {' '.join(document['command'])}",
        artifacts={"tests": store_files(ctx.blobs, tests)},
        details={"model": model, "files": sorted(tests), "command": document["command"]},
    )
