"""What a test run printed, read back: the counts (pytest or unittest) and the part of the
output worth showing the builder when tests fail."""

from __future__ import annotations

import re
from dataclasses import dataclass

# pytest's last line: "3 passed, 1 failed, 2 errors in 0.12s", "1 error in 0.05s",
# "no tests ran in 0.01s", between "=" rules when not -q.
_PYTEST_COUNT = re.compile(
    r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)"
)
_PYTEST_SUMMARY = re.compile(
    r"^=*\s*(?:(?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)"
    r"(?:, )?)+|no tests ran) in [\d.]+s?\b"
)
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ")
_UNITTEST_VERDICT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?\s*$")
_UNITTEST_BLOCK = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): ")


@dataclass(frozen=True)
class TestCounts:
    passed: int
    failed: int
    errors: int
    skipped: int
    total: int
    framework: str  # pytest | unittest

    def as_details(self) -> dict[str, int]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "total": self.total,
        }

    def describe(self) -> str:
        parts = [f"{self.passed} passed", f"{self.failed} failed", f"{self.errors} errors"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return f"{', '.join(parts)} of {self.total} ({self.framework})"


def parse_counts(output: str) -> TestCounts | None:
    """The counts of the last pytest or unittest summary in `output`, or None."""
    lines = output.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if _PYTEST_SUMMARY.match(line):
            return _pytest(line)
        ran = _UNITTEST_RAN.match(line)
        if ran:
            return _unittest(int(ran.group(1)), lines[index + 1 :])
    return None


def _pytest(line: str) -> TestCounts:
    found: dict[str, int] = {}
    for number, word in _PYTEST_COUNT.findall(line.split(" in ")[0]):
        key = {"error": "errors", "warning": "warnings"}.get(word, word)
        found[key] = found.get(key, 0) + int(number)
    passed = found.get("passed", 0) + found.get("xpassed", 0)
    failed = found.get("failed", 0)
    errors = found.get("errors", 0)
    skipped = found.get("skipped", 0) + found.get("xfailed", 0)
    return TestCounts(passed, failed, errors, skipped, passed + failed + errors + skipped, "pytest")


def _unittest(ran: int, after: list[str]) -> TestCounts:
    found: dict[str, int] = {}
    for line in after:
        verdict = _UNITTEST_VERDICT.match(line.strip())
        if verdict:
            for part in (verdict.group(2) or "").split(","):
                name, _, number = part.strip().partition("=")
                if number.strip().isdigit():
                    found[name.strip()] = int(number)
            break
    failed = found.get("failures", 0) + found.get("unexpected successes", 0)
    errors = found.get("errors", 0)
    skipped = found.get("skipped", 0) + found.get("expected failures", 0)
    passed = max(ran - failed - errors - skipped, 0)
    return TestCounts(passed, failed, errors, skipped, ran, "unittest")


def failure_excerpt(output: str, max_lines: int = 60) -> str:
    """The part of a failed run's output that says what failed: pytest's FAILURES/ERRORS
    sections and short summary, unittest's FAIL/ERROR blocks, or else the end of the output;
    at most `max_lines` lines (the start and the end of it when longer)."""
    lines = output.rstrip().splitlines()
    start = _first(lines, lambda s: bool(re.match(r"^=+ (FAILURES|ERRORS) =+$", s)))
    if start is None:
        start = _first(lines, lambda s: bool(_UNITTEST_BLOCK.match(s)))
        if start is not None and start > 0 and set(lines[start - 1]) == {"="}:
            start -= 1
    if start is None:
        return "\n".join(lines[-max_lines:])
    chosen = lines[start:]
    if len(chosen) <= max_lines:
        return "\n".join(chosen)
    # The short summary (pytest) or the verdict lines (unittest) are at the end: keep them
    # with as much of the first failure as fits.
    end = _first(chosen, lambda s: bool(re.match(r"^=+ short test summary info =+$", s)))
    tail_size = min(len(chosen) - end, max_lines // 3) if end is not None else 6
    head_size = max_lines - tail_size - 1
    skipped = len(chosen) - head_size - tail_size
    return "\n".join(
        [*chosen[:head_size], f"[... {skipped} lines ...]", *chosen[len(chosen) - tail_size :]]
    )


def _first(lines: list[str], test: object) -> int | None:
    assert callable(test)
    for index, line in enumerate(lines):
        if test(line):
            return index
    return None
