"""The built-in scripted builder: writes a fixed, clearly labelled program for the plan.

A description that mentions "repair loop" gets a first attempt with a bug, so the whole
test-failure → feedback → next attempt cycle can be watched without a model.
"""

from __future__ import annotations

import asyncio
import json

from vdo_kernel.domain import Outcome, Step
from vdo_kernel.steps import StepContext, StepFailure, StepResult

SCRIPTED_MODEL = "scripted (built-in; no AI model configured)"

APP = '''"""{title} (written by VDO's built-in scripted model)."""


def greeting(name: str) -> str:
    return {expression}


def main() -> None:
    print(greeting("world"))
    print("ready", flush=True)


if __name__ == "__main__":
    main()
'''


async def build(ctx: StepContext) -> StepResult:
    await asyncio.sleep(ctx.settings.scripted_delay_seconds)
    job, attempt = ctx.job, ctx.due.attempt
    plan_digest = job.record(Step.PLAN).artifacts.get("plan")
    if not plan_digest:
        raise StepFailure("no plan to build from")
    plan = json.loads(ctx.blobs.get(plan_digest))
    buggy = "repair loop" in job.description.lower() and attempt == 1
    expression = '"Hello " + name' if buggy else 'f"Hello, {name}!"'
    title = job.title.replace('"', "'").replace("\\", "/")
    files = {"app.py": APP.format(title=title, expression=expression)}
    manifest = {path: ctx.blobs.put_text(text) for path, text in files.items()}
    digest = ctx.blobs.put(json.dumps(manifest, sort_keys=True).encode())
    feedback = job.feedback[-1] if attempt > 1 and job.feedback else ""
    return StepResult(
        outcome=Outcome.OK,
        summary=f"[scripted model] wrote {len(files)} file(s) for attempt {attempt}",
        artifacts={"files": digest},
        details={
            "model": SCRIPTED_MODEL,
            "files": sorted(files),
            "planned_files": plan.get("files", []),
            "used_feedback": bool(feedback),
        },
    )
