"""Random job histories for the projector's tests: every path the rules allow, interleaved,
with awkward text and JSON."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID, uuid4

from vdo_kernel.domain import (
    ALLOWED_OUTCOMES,
    CALL_OUTCOMES,
    REJECTING_OUTCOMES,
    DomainError,
    Due,
    Job,
    call_key,
)
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


ROUTES = [
    {},
    {"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"], "reviewer": ["google:x"]},
    {"builder": ["scripted:demo"], "tester": ["openai:gpt-4.1", "é:ü", "a:b", "c:d", "e:f"]},
]
PROVIDERS = [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4.1"), ("google", "é 🚀")]
# Costs whose sums are not exact in binary, an integer (as JSON may hold it), and tiny ones.
COSTS: list[float] = [0.0, 0.1, 0.2, 0.3, 1e-9, 0.0123456789, 3]
TOKENS = [0, 1, 1234, 2**40]


def open_calls(job: Job, due: Due) -> list[str]:
    """The keys of the step's calls started and not finished."""
    prefix = call_key(job.id, due.step.value, due.attempt, 0)[:-1]
    return sorted(key for key in job.open_calls if key.startswith(prefix))


def model_call(job: Job, due: Due, rng: random.Random, tries: dict[str, int]) -> None:
    """Finish an open call of the step, or start another try (a new call, a retry, a
    fallback); some are left open for ever (interrupted)."""
    open_keys = open_calls(job, due)
    if open_keys and rng.random() < 0.8:
        outcome = rng.choice(CALL_OUTCOMES)
        job.finish_model_call(
            rng.choice(open_keys),
            outcome=outcome,
            error="" if outcome == "ok" else rng.choice(AWKWARD_TEXT),
            input_tokens=rng.choice(TOKENS),
            output_tokens=rng.choice(TOKENS),
            cached_tokens=rng.choice(TOKENS),
            cache_write_tokens=rng.choice(TOKENS),
            cost_usd=rng.choice(COSTS),
            latency_ms=rng.choice([0.0, 12.5, 60_000]),
            reply=rng.choice(["", "ef" * 32]) if outcome == "ok" else "",
            causation_id="test",
        )
        return
    call = rng.randint(1, 2)
    name = call_key(job.id, due.step.value, due.attempt, call)
    provider, model = rng.choice(PROVIDERS)
    # Now and then the last try again (the domain lets a finished try be started again): its
    # row is updated, not added.
    try_number = tries.get(name, 0) + (0 if name in tries and rng.random() < 0.1 else 1)
    try:
        job.start_model_call(
            due,
            call=call,
            try_number=try_number,
            provider=provider,
            model=model,
            reserved_usd=rng.choice([0.0, 0.001, 0.05, 0.3]),
            note=rng.choice(["", "fallback after a 429", *AWKWARD_TEXT]),
            causation_id="test",
        )
    except DomainError:
        return  # over the budget, or that try is still open
    tries[name] = try_number


def random_history(store: JobStore, rng: random.Random, after_each: Any = None) -> None:
    """Jobs driven at random, interleaved: every path the rules allow gets taken somewhere."""
    open_jobs: list[UUID] = []
    tries: dict[str, int] = {}
    for number in range(rng.randint(3, 7)):
        job = Job.submit(
            title=f"job {number} {rng.choice(AWKWARD_TEXT)}".replace("\x00", ""),
            description=rng.choice(AWKWARD_TEXT).replace("\x00", "") or "something",
            max_attempts=rng.randint(1, 3),
            budget_usd=rng.choice([1, 0.1, 2.5, 10_000]),
            submitted_by=rng.choice(["anonymous", "ciso@example.com", "é"]),
            routes=rng.choice(ROUTES),
        )
        store.save(job)
        open_jobs.append(job.id)
    for _ in range(rng.randint(80, 200)):
        if not open_jobs:
            break
        job_id = rng.choice(open_jobs)
        job = store.get(job_id)
        due = job.due()
        if due is None:
            open_jobs.remove(job_id)
            continue
        roll = rng.random()
        if roll < 0.025:
            job.cancel(reason=rng.choice(AWKWARD_TEXT), by="someone", causation_id="test")
        elif roll < 0.05:
            job.fail_step(due, reason=rng.choice(AWKWARD_TEXT), causation_id="test")
        elif not job.record(due.step, due.attempt).started or roll < 0.15:
            job.start_step(due, worker=f"worker-{rng.randint(1, 3)}", causation_id="test")
        elif roll < 0.5 or (open_calls(job, due) and rng.random() < 0.7):
            model_call(job, due, rng, tries)
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
