"""What a scripted demo is: a finished project, and the earlier versions the demo loops show.

Each demo's finished files are package data under ``demos/<name>/`` (Python sources stored as
``<path>.txt`` so they are read as data, not imported or linted as part of VDO). Earlier versions
are the finished files with `Patch`es undone: the deliberate bug of a "repair loop" job's first
attempt, and the version from before the review's comment of a "review loop" job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

REPAIR_LOOP = re.compile(r"\brepair[\s_-]*loop\b")
REVIEW_LOOP = re.compile(r"\breview[\s_-]*loop\b")

PYTEST_COMMAND = ("python3", "-m", "pytest", "-q", "tests")
UNITTEST_COMMAND = ("python3", "-m", "unittest", "discover", "-s", "tests", "-v")


class DemoSourceError(RuntimeError):
    """A demo's patch no longer matches its file (the demo's sources were edited carelessly)."""


@dataclass(frozen=True)
class Patch:
    """One place where an earlier version of a demo file differs from the finished one."""

    path: str
    finished: str  # the text as it stands in the finished file (exactly once)
    earlier: str  # what stands there instead in the earlier version


@dataclass(frozen=True)
class Comment:
    path: str
    comment: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "comment": self.comment}


@dataclass(frozen=True)
class Stage:
    """Where a demo job stands, from what it asks for and the attempt number.

    A job that mentions "repair loop" gets a first attempt with a deliberate bug. A job that
    mentions "review loop" is asked for changes by the first review it reaches (attempt 1, or 2
    when the repair loop comes first), and the next attempt applies the comment.
    """

    attempt: int
    buggy: bool  # this attempt carries the repair-loop demo's deliberate bug
    reviewed: bool  # this attempt has the review's comment applied (or there is no review loop)
    review_requests_changes: bool  # the reviewer asks for changes on this attempt
    repair_loop: bool
    review_loop: bool

    @classmethod
    def of(cls, task: str, attempt: int) -> Stage:
        text = task.lower()
        attempt = max(attempt, 1)
        repair = REPAIR_LOOP.search(text) is not None
        review = REVIEW_LOOP.search(text) is not None
        first_review = 2 if repair else 1
        return cls(
            attempt=attempt,
            buggy=repair and attempt == 1,
            reviewed=not review or attempt > first_review,
            review_requests_changes=review and attempt == first_review,
            repair_loop=repair,
            review_loop=review,
        )


@dataclass(frozen=True)
class Demo:
    name: str  # the folder under demos/
    description: str  # what job it is, for messages: "a command-line word-count tool"
    matches: Callable[[str], bool]  # given the job's text, lower-cased
    plan: dict[str, Any]  # the planner's reply (a PLAN document)
    build_files: tuple[str, ...]  # what the builder writes, paths in the project
    test_files: tuple[str, ...]  # what the tester writes, all under tests/
    test_command: tuple[str, ...]
    bug: tuple[Patch, ...]  # the repair-loop demo's deliberate bug
    bug_comment: Comment  # what a review of the buggy version says
    before_review: tuple[Patch, ...]  # the review-loop demo's version before the comment
    review_comment: Comment  # the comment the review-loop demo's review makes
    approval: str  # the reviewer's summary when it approves
    approval_comments: tuple[Comment, ...] = ()

    def source(self, path: str, stage: Stage) -> str:
        """A file of the project as it stands at `stage`."""
        text = _data(self.name, path)
        patches = (self.bug if stage.buggy else ()) + (() if stage.reviewed else self.before_review)
        for patch in patches:
            if patch.path != path:
                continue
            found = text.count(patch.finished)
            if found != 1:
                raise DemoSourceError(
                    f"demo {self.name}: a patch for {path} matches {found} places, not 1"
                )
            text = text.replace(patch.finished, patch.earlier)
        return text

    def files(self, paths: tuple[str, ...], stage: Stage) -> list[dict[str, str]]:
        return [{"path": path, "content": self.source(path, stage)} for path in paths]


def _data(demo: str, path: str) -> str:
    name = f"{path}.txt" if path.endswith(".py") else path
    node = resources.files("vdo_models.scripted").joinpath("demos").joinpath(demo)
    for part in name.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")


def matcher(*patterns: str) -> Callable[[str], bool]:
    """True when every pattern (a regular expression) occurs in the text."""
    compiled = [re.compile(pattern) for pattern in patterns]

    def matches(text: str) -> bool:
        return all(pattern.search(text) for pattern in compiled)

    return matches
