"""The one rule for a file's path in a job's result."""

from __future__ import annotations

import pytest

from vdo_kernel.paths import path_problem


@pytest.mark.parametrize(
    "path", ["wordcount.py", "tests/test_wordcount.py", "a/b/c.d", "é/🚀.txt", "x" * 255]
)
def test_plain_relative_paths_are_fine(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "is empty"),
        ("x" * 256, "is longer than 255 characters"),
        ("a\x00b", "contains control characters"),
        ("a\nb", "contains control characters"),
        ("a\u202eb", "contains control characters"),
        ("a\\b", "is not a relative POSIX path"),
        ("C:/x", "is not a relative POSIX path"),
        ("/etc/passwd", "is absolute"),
        ("~/.ssh/id_rsa", "is absolute"),
        ("../x", "leaves the project"),
        ("a/../../x", "leaves the project"),
        ("./a", "is not normalised"),
        ("a//b", "is not normalised"),
        ("a/", "is not normalised"),
        (".git/config", "is under .git"),
        ("/".join("d" * 13), "is more than 12 levels deep"),
    ],
)
def test_what_could_leave_the_project_or_hide_is_refused(path: str, problem: str) -> None:
    found = path_problem(path)
    assert found is not None
    assert problem in found
