"""The built-in scripted tester: fixed, clearly labelled unit tests for the scripted program."""

from __future__ import annotations

import asyncio
import json

from vdo_kernel.domain import Outcome
from vdo_kernel.steps import StepContext, StepResult

SCRIPTED_MODEL = "scripted (built-in; no AI model configured)"
TEST_COMMAND = ["python3", "-m", "unittest", "-v"]

TESTS = '''"""Tests written by VDO's built-in scripted model."""

import unittest

from app import greeting


class GreetingTest(unittest.TestCase):
    def test_greets_by_name(self) -> None:
        self.assertEqual(greeting("world"), "Hello, world!")

    def test_greets_anyone(self) -> None:
        self.assertEqual(greeting("Ada"), "Hello, Ada!")


if __name__ == "__main__":
    unittest.main()
'''


async def write_tests(ctx: StepContext) -> StepResult:
    await asyncio.sleep(ctx.settings.scripted_delay_seconds)
    files = {"test_app.py": TESTS}
    manifest = {path: ctx.blobs.put_text(text) for path, text in files.items()}
    digest = ctx.blobs.put(json.dumps(manifest, sort_keys=True).encode())
    return StepResult(
        outcome=Outcome.OK,
        summary=f"[scripted model] wrote {len(files)} test file(s)",
        artifacts={"tests": digest},
        details={"model": SCRIPTED_MODEL, "command": TEST_COMMAND, "files": sorted(files)},
    )
