"""Random job histories for the projector's tests: every path the rules allow, interleaved,
with awkward text and JSON."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID, uuid4

from vdo_kernel.domain import ALLOWED_OUTCOMES, REJECTING_OUTCOMES, Job
from vdo_kernel.store import JobStore

AWKWARD_TEXT = [
    "plain",
    "",
    "tab\tnew\nline\r\\back\\slash",
    "quotes \" and '",
    "nul \x00 inside",
    "accents é, ü; emoji 🚀; hangul 한국어",
    "looks like \\u0000 but is not",
    "\\N",
]
AWKWARD_DETAILS: list[dict[str, Any]] = [
    {},
    {"tokens": 12, "cost_usd": 0.1, "ratio": 1e-7, "big": 2**60, "ok": True, "none": None},
    {"nested": {"list": [1, "two", [3.5]], "empty": {}}},
    {"key\x00with nul": "value\x00", "tab\tkey": "x"},
    # A value the library wraps (a UUID), and a dict that only looks wrapped: both take the
    # store's own decoding.
    {"run": uuid4(), "kind": {"_type_": "not a wrapper"}},
]


def random_history(store: JobStore, rng: random.Random, after_each: Any = None) -> None:
    """Jobs driven at random, interleaved: every path the rules allow gets taken somewhere."""
    open_jobs: list[UUID] = []
    for number in range(rng.randint(3, 7)):
        job = Job.submit(
            title=f"job {number} {rng.choice(AWKWARD_TEXT)}".replace("\x00", ""),
            description=rng.choice(AWKWARD_TEXT).replace("\x00", "") or "something",
            max_attempts=rng.randint(1, 3),
            budget_usd=rng.choice([1, 0.1, 2.5, 10_000]),
            submitted_by=rng.choice(["anonymous", "ciso@example.com", "é"]),
        )
        store.save(job)
        open_jobs.append(job.id)
    for _ in range(rng.randint(40, 120)):
        if not open_jobs:
            break
        job_id = rng.choice(open_jobs)
        job = store.get(job_id)
        due = job.due()
        if due is None:
            open_jobs.remove(job_id)
            continue
        roll = rng.random()
        if roll < 0.04:
            job.cancel(reason=rng.choice(AWKWARD_TEXT), by="someone", causation_id="test")
        elif roll < 0.08:
            job.fail_step(due, reason=rng.choice(AWKWARD_TEXT), causation_id="test")
        elif not job.record(due.step, due.attempt).started or roll < 0.15:
            job.start_step(due, worker=f"worker-{rng.randint(1, 3)}", causation_id="test")
        else:
            job.finish_step(
                due,
                # Mostly good outcomes, so that some jobs get to the end.
                outcome=rng.choice(
                    sorted(ALLOWED_OUTCOMES[due.step] - {REJECTING_OUTCOMES.get(due.step)})
                    if rng.random() < 0.75
                    else sorted(ALLOWED_OUTCOMES[due.step])
                ),
                summary=rng.choice(AWKWARD_TEXT),
                causation_id="test",
                artifacts=rng.choice([{}, {"files": "ab" * 32, "tests": "cd" * 32}]),
                details=rng.choice(AWKWARD_DETAILS),
            )
        store.save(job)
        if after_each is not None:
            after_each(rng)
