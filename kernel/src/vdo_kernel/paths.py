"""What a file's path in a job's result may be: the one rule for the builder and the tester
(before they store a model's files) and for the gateway (before a path names anything it
serves). A path is relative to the project's top, '/'-separated and normalised, printable,
not under ``.git``, and short enough."""

from __future__ import annotations

import unicodedata
from typing import Final

MAX_PATH: Final = 255
MAX_DEPTH: Final = 12


def path_problem(raw: str) -> str | None:
    """What is wrong with `raw` as a file's path in a result ("is absolute…", to follow the
    path's name in a message), or None when nothing is."""
    if not raw:
        return "is empty"
    if len(raw) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in raw):
        return "contains control characters"
    if "\\" in raw or (len(raw) > 1 and raw[1] == ":"):
        return "is not a relative POSIX path (no backslashes or drive letters)"
    if raw.startswith(("/", "~")):
        return "is absolute; files stay inside the project"
    parts = raw.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "leaves the project or is not normalised (no '..', '.' or '//')"
    if parts[0] == ".git":
        return "is under .git, which is not allowed"
    if len(parts) > MAX_DEPTH:
        return f"is more than {MAX_DEPTH} levels deep"
    return None
