"""The planning step: a model turns the job's description into a structured plan."""

from __future__ import annotations

import json

from vdo_kernel.domain import Outcome
from vdo_kernel.steps import StepContext, StepResult
from vdo_models.interface import Message, ModelRequest
from vdo_models.phases import PLAN
from vdo_models.session import Models, label, tag

SYSTEM = """You are the planning phase of VDO, an AI development orchestrator.
Plan a small, complete, working Python 3.11 program for the job below. Other models will write
the code and the tests from your plan; a sandbox with no network will install the listed
dependencies from binary wheels, run the tests, then start the program with your run command
and check that it is up with your ready check.

Rules:
- Keep it small: the fewest files that do the job well, each with one clear purpose.
- `files` lists every file the builder must write (relative paths, no tests: the tester writes
  those under tests/). Include requirements.txt when there are dependencies.
- `dependencies` are PyPI requirement strings available as wheels; include pytest when the tests
  use it. Use the standard library where it is enough.
- `run_command` starts the program from the project directory (e.g. ["python3", "app.py"]);
  run Python tools as modules ("python3", "-m", "uvicorn", ...).
- `ready_check` says how to tell the program is up: {"kind": "port", "port": N} for a server
  listening on 127.0.0.1:N, {"kind": "command", "command": [...]} for a smoke command that exits
  0, {"kind": "stays_up", "seconds": N} or {"kind": "output", "text": "..."}.

Reply with one JSON document and nothing else, matching this JSON schema:
"""


async def plan(ctx: StepContext, models: Models) -> StepResult:
    job = ctx.job
    calls = models.calls(ctx, "planner")
    request = ModelRequest(
        phase="planner",
        system=SYSTEM + json.dumps(PLAN),
        messages=(Message("user", f"Job title: {job.title}\n\nDescription:\n{job.description}"),),
        max_output_tokens=ctx.settings.model_max_output_tokens,
        json_schema=PLAN,
        task=f"{job.title}\n{job.description}",
        attempt=ctx.due.attempt,
    )
    document = await calls.ask(request, PLAN)
    model = label(calls.used)
    digest = ctx.blobs.put(json.dumps({**document, "model": model}, indent=2).encode())
    return StepResult(
        outcome=Outcome.OK,
        summary=(
            f"{tag(model)}planned {len(document['files'])} file(s) and "
            f"{len(document['steps'])} steps: {document['summary'][:300]}"
        ),
        artifacts={"plan": digest},
        details={
            "model": model,
            "files": document["files"],
            "dependencies": document["dependencies"],
            "run_command": document["run_command"],
            "ready_check": document["ready_check"],
        },
    )
