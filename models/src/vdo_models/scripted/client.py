"""The built-in scripted model: the `ModelClient` used when no AI provider is configured.

It is not an AI model and says so: every reply, file and summary it produces is labelled as
coming from VDO's built-in scripted model. It answers the four phases (planner, builder, tester,
reviewer) for a few demo jobs only, with fixed projects whose tests really pass, and refuses any
other job with a `ProviderError` of kind ``no_model``.

A job that mentions "repair loop" gets a first build with a deliberate bug, so its tests fail and
the second attempt (which the failing output is fed back to) is correct; a job that mentions
"review loop" gets a review that asks for a concrete change, which the next build applies.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from vdo_models.interface import ModelReply, ModelRequest, ProviderError, TextSink, Usage
from vdo_models.scripted import csvsummary, todo, wordcount
from vdo_models.scripted.demo import Demo, Stage

PROVIDER = "scripted"
MODEL = "scripted-demo-1"
DEMOS: tuple[Demo, ...] = (todo.DEMO, wordcount.DEMO, csvsummary.DEMO)
CHUNKS = 6  # how many pieces a reply is streamed in

NO_MODEL = (
    "no model configured: the built-in scripted model only handles the demo jobs ({demos}). "
    "To run other jobs, an admin adds one provider's key in Settings → Model providers (it "
    "takes effect at once, for the next job), or sets ANTHROPIC_API_KEY, OPENAI_API_KEY or "
    "GEMINI_API_KEY in the environment or .env and restarts VDO; one provider's key is enough, "
    "every phase then uses it"
)


def find_demo(task: str) -> Demo | None:
    """The demo a job's text (its title and description) asks for, if any."""
    text = task.lower()
    return next((demo for demo in DEMOS if demo.matches(text)), None)


def demo_list() -> str:
    return "; ".join(demo.description for demo in DEMOS)


def estimate_tokens(text: str) -> int:
    """About four characters a token, as a plausible count for a model that has no tokenizer."""
    return math.ceil(len(text) / 4)


class ScriptedModelClient:
    """The `ModelClient` for provider ``scripted``: fixed replies for the demo jobs.

    `delay_seconds` spreads that long a pause over each reply's streamed pieces, so a demo looks
    like a model thinking; by default replies come at once.
    """

    provider = PROVIDER

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        if delay_seconds < 0:
            raise ValueError("delay_seconds must not be negative")
        self.delay_seconds = delay_seconds

    async def complete(
        self, model: str, request: ModelRequest, on_text: TextSink | None = None
    ) -> ModelReply:
        demo = find_demo(request.task)
        if demo is None:
            raise ProviderError(
                NO_MODEL.format(demos=demo_list()), retryable=False, kind="no_model"
            )
        stage = Stage.of(request.task, request.attempt)
        document = reply_document(demo, request.phase, stage)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        await self._stream(text, on_text)
        return ModelReply(
            text=text,
            usage=Usage(
                input_tokens=max(estimate_tokens(request.prompt_text()), 1),
                output_tokens=estimate_tokens(text),
            ),
            model=MODEL,
            stop_reason="end_turn",
            extra={"scripted": True, "demo": demo.name, "attempt": stage.attempt},
        )

    async def check(self) -> str:
        return (
            f"VDO's built-in scripted model ({MODEL}), not an AI model: no AI provider is "
            f"configured, and it only handles the demo jobs ({demo_list()})"
        )

    async def close(self) -> None:
        return None

    async def _stream(self, text: str, on_text: TextSink | None) -> None:
        size = math.ceil(len(text) / CHUNKS)
        pieces = [text[start : start + size] for start in range(0, len(text), size)]
        for piece in pieces:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds / len(pieces))
            if on_text is not None:
                await on_text(piece)


def reply_document(demo: Demo, phase: str, stage: Stage) -> dict[str, Any]:
    """The reply for one phase of a demo job, as the phase's schema (see phases.py) wants it."""
    if phase == "planner":
        return dict(demo.plan)
    if phase == "builder":
        return {"files": demo.files(demo.build_files, stage), "notes": build_notes(demo, stage)}
    if phase == "tester":
        files = demo.files(demo.test_files, stage)
        tests = sum(file["content"].count("def test_") for file in files)
        return {
            "files": files,
            "command": list(demo.test_command),
            "notes": (
                f"[scripted model] {tests} tests for {demo.description}, written by VDO's "
                f"built-in scripted model; run them with: {' '.join(demo.test_command)}"
            ),
        }
    if phase == "reviewer":
        return review(demo, stage)
    raise ProviderError(
        f"the built-in scripted model has no reply for phase {phase!r} "
        "(it answers planner, builder, tester and reviewer)",
        retryable=False,
        kind="refused",
    )


def build_notes(demo: Demo, stage: Stage) -> str:
    notes = [
        f"[scripted model] {demo.description}, attempt {stage.attempt}: fixed files from VDO's "
        "built-in scripted model, not written by an AI model."
    ]
    if stage.buggy:
        notes.append(
            "Repair-loop demo: this first attempt has a deliberate bug, so its tests fail and "
            f"the job goes back to the builder. The bug: {demo.bug_comment.comment}"
        )
    elif stage.repair_loop and stage.attempt > 1:
        notes.append(
            "Repair-loop demo: the deliberate bug of the first attempt, which the failing tests "
            "showed, is fixed in this attempt."
        )
    if stage.review_loop and stage.reviewed:
        notes.append(
            f"Review-loop demo: applies the review's comment on {demo.review_comment.path}: "
            f"{demo.review_comment.comment}"
        )
    return " ".join(notes)


def review(demo: Demo, stage: Stage) -> dict[str, Any]:
    if stage.buggy:
        return {
            "verdict": "request_changes",
            "summary": (
                "[scripted model] Changes requested: this attempt carries the repair-loop demo's "
                "deliberate bug (a fixed review by VDO's built-in scripted model)."
            ),
            "comments": [demo.bug_comment.as_json()],
        }
    if stage.review_requests_changes:
        return {
            "verdict": "request_changes",
            "summary": (
                "[scripted model] Changes requested (review-loop demo; a fixed review by VDO's "
                f"built-in scripted model, not a real code review): {demo.review_comment.comment}"
            ),
            "comments": [demo.review_comment.as_json()],
        }
    return {
        "verdict": "approve",
        "summary": demo.approval,
        "comments": [comment.as_json() for comment in demo.approval_comments],
    }
