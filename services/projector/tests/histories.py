"""Random job histories for the projector's tests: every path the rules allow, interleaved,
with awkward text and JSON, and the accounts' events (users, roles, tokens made and revoked)
and the templates' (made, changed, deleted) among them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.domain import (
    ALLOWED_OUTCOMES,
    CALL_OUTCOMES,
    PIPELINE,
    REJECTING_OUTCOMES,
    DomainError,
    Due,
    Job,
    call_key,
)
from vdo_kernel.store import JobStore
from vdo_kernel.templates import Template, TemplateFields

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
    # Five routes (the most a phase may have), one with a model name that is not ASCII.
    {
        "builder": ["scripted:demo"],
        "tester": ["openai:gpt-4.1", "google:é ü", "anthropic:b", "scripted:d", "openai:f"],
    },
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


TOKEN_NAMES = ["laptop", "ci", "é and 🚀, \\N", "quotes \" '", "x" * 100]


class Accounts:
    """Users and tokens changed at random: every account event, with awkward names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.users: list[str] = []
        self.tokens: list[str] = []

    def step(self, store: JobStore) -> None:
        rng = self.rng
        roll = rng.random()
        if not self.users or roll < 0.3:
            name = f"u{rng.getrandbits(40):010x}{rng.choice(['', '.a', 'b-c', 'd_e'])}"
            store.save(User.add(name=name, role=rng.choice(list(Role)), by="someone"))
            self.users.append(name)
        elif roll < 0.45:
            user = store.get_user(rng.choice(self.users))
            assert user is not None
            user.change_role(rng.choice([r for r in Role if r is not user.role]), by="an admin")
            store.save(user)
        elif roll < 0.8 or not self.tokens:
            user = store.get_user(rng.choice(self.users))
            assert user is not None
            expires = rng.choice(
                [None, datetime(2030, 1, 2, 3, 4, 5, 6789, tzinfo=UTC), datetime.now(UTC)]
            )
            if expires is not None and rng.random() < 0.5:
                expires -= timedelta(days=1)  # expired already
            token = Token.create(
                new_token(),
                user=user,
                name=rng.choice(TOKEN_NAMES),
                by="an admin",
                expires_at=expires,
            )
            store.save(token)
            self.tokens.append(token.token_id)
        else:
            found = store.get_token(rng.choice(self.tokens))
            assert found is not None
            if not found.revoked:
                found.revoke(by=rng.choice(["an admin", "é"]))
                store.save(found)


class Templates:
    """Job templates made, changed and deleted at random, with awkward text."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.live: list[UUID] = []

    def fields(self, name: str) -> TemplateFields:
        rng = self.rng
        return TemplateFields(
            name=name,
            title=f"template {rng.choice(AWKWARD_TEXT)}".replace("\x00", ""),
            description=rng.choice(AWKWARD_TEXT).replace("\x00", "") or "something",
            summary=rng.choice(AWKWARD_TEXT).replace("\x00", ""),
            routes=rng.choice(ROUTES),
            max_attempts=rng.choice([None, 1, 3]),
            budget_usd=rng.choice([None, 0.1, 2.5, 3]),
            priority=rng.choice([None, 0, 9]),
        )

    def step(self, store: JobStore) -> None:
        rng = self.rng
        roll = rng.random()
        if not self.live or roll < 0.5:
            template = Template.create(
                self.fields(f"t{rng.getrandbits(40):010x}"),
                by=rng.choice(["ada", "é"]),
                taken=(),
                from_job=rng.choice([None, str(uuid4())]),
            )
            store.save(template)
            self.live.append(template.id)
            return
        found = store.get_template(rng.choice(self.live))
        assert found is not None
        if roll < 0.8:
            found.update(self.fields(found.name), by="bob", taken=())
        else:
            found.delete(by="an admin")
            self.live.remove(found.id)
        store.save(found)


def random_history(store: JobStore, rng: random.Random, after_each: Any = None) -> None:
    """Jobs driven at random, interleaved: every path the rules allow gets taken somewhere;
    the accounts change now and then among them."""
    open_jobs: list[UUID] = []
    tries: dict[str, int] = {}
    accounts = Accounts(rng)
    templates = Templates(rng)
    for number in range(rng.randint(3, 7)):
        job = Job.submit(
            title=f"job {number} {rng.choice(AWKWARD_TEXT)}".replace("\x00", ""),
            description=rng.choice(AWKWARD_TEXT).replace("\x00", "") or "something",
            max_attempts=rng.randint(1, 3),
            budget_usd=rng.choice([1, 0.1, 2.5, 10_000]),
            submitted_by=rng.choice(["anonymous", "ciso@example.com", "é"]),
            routes=rng.choice(ROUTES),
            priority=rng.choice([0, 5, 5, 9]),
        )
        store.save(job)
        open_jobs.append(job.id)
    retries: dict[UUID, int] = {}
    for _ in range(rng.randint(80, 200)):
        if not open_jobs:
            break
        if rng.random() < 0.08:
            accounts.step(store)
        if rng.random() < 0.05:
            templates.step(store)
        job_id = rng.choice(open_jobs)
        job = store.get(job_id)
        if job.is_queued:
            # Let it run, or cancel it while it waits.
            if rng.random() < 0.1:
                job.cancel(reason=rng.choice(AWKWARD_TEXT), by="someone", causation_id="test")
            else:
                job.admit(by="scheduler", causation_id="test")
            store.save(job)
            continue
        due = job.due()
        if due is None:
            # Ended: now and then retried, from a step the rules allow.
            if job.is_finished and retries.get(job_id, 0) < 2 and rng.random() < 0.4:
                retries[job_id] = retries.get(job_id, 0) + 1
                try:
                    job.retry(
                        rng.choice(PIPELINE),
                        by="someone",
                        reason=rng.choice(AWKWARD_TEXT),
                        priority=rng.choice([None, 0, 9]),
                        causation_id="test",
                    )
                except DomainError:
                    continue  # nothing good to reuse from there; it may try again
                store.save(job)
                continue
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
