"""The built-in scripted planner: a fixed, clearly labelled plan, for running without a model."""

from __future__ import annotations

import asyncio
import json

from vdo_kernel.domain import Outcome
from vdo_kernel.steps import StepContext, StepResult

SCRIPTED_MODEL = "scripted (built-in; no AI model configured)"


async def plan(ctx: StepContext) -> StepResult:
    await asyncio.sleep(ctx.settings.scripted_delay_seconds)
    job = ctx.job
    document = {
        "model": SCRIPTED_MODEL,
        "summary": f"A small Python program for: {job.title}",
        "runtime": "python3",
        "files": ["app.py"],
        "steps": [
            "write app.py with a main() that reports it is ready",
            "write unit tests for app.py",
            "run the tests in the sandbox",
            "start app.py in the sandbox and wait for it to report ready",
        ],
        "test_strategy": "unittest, run with `python3 -m unittest -v`",
        "run_command": ["python3", "app.py"],
        "ready_check": {"kind": "output_contains", "text": "ready"},
    }
    digest = ctx.blobs.put(json.dumps(document, indent=2, sort_keys=True).encode())
    return StepResult(
        outcome=Outcome.OK,
        summary=f"[scripted model] planned 1 file and {len(document['steps'])} steps",
        artifacts={"plan": digest},
        details={"model": SCRIPTED_MODEL, "files": document["files"]},
    )
