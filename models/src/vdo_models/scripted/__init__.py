"""VDO's built-in scripted model: what answers the AI phases when no provider is configured.

It handles a few demo jobs for real (a FastAPI todo API, a word-count tool, a CSV summary
script) and refuses any other job; see `client` for how, and ``demos/`` for the projects.
"""

from vdo_models.scripted.client import (
    DEMOS,
    MODEL,
    PROVIDER,
    ScriptedModelClient,
    demo_list,
    find_demo,
)
from vdo_models.scripted.demo import Demo, Stage

__all__ = [
    "DEMOS",
    "MODEL",
    "PROVIDER",
    "Demo",
    "ScriptedModelClient",
    "Stage",
    "demo_list",
    "find_demo",
]
