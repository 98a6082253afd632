"""The Job aggregate: its events and the pipeline's rules, pure and without I/O.

A job moves through phases (planning, building, testing, reviewing, sandboxing). Each phase is
made of one or more *steps*, and each step is done by exactly one service. A step is bracketed by
``StepStarted`` and ``StepFinished`` (or ``StepFailed``); what follows a finished step (the next
step, a new attempt, the end of the job) is decided here, once, and recorded in the same
transaction as the step's result.

A submitted job waits in the queue until the scheduler admits it (``JobAdmitted``): nothing is
due before. An ended job (completed, failed or cancelled) may be retried from a chosen step
(``JobRetried``): a new attempt that reuses the previous attempt's results of the steps before
that one, and goes back to the queue.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

JSON = dict[str, Any]


class Phase(enum.StrEnum):
    PLANNING = "planning"
    BUILDING = "building"
    TESTING = "testing"
    REVIEWING = "reviewing"
    SANDBOXING = "sandboxing"


class Step(enum.StrEnum):
    """A unit of work done by one service. Values are stable: they appear in stored events."""

    PLAN = "plan"
    BUILD = "build"
    WRITE_TESTS = "write_tests"
    RUN_TESTS = "run_tests"
    REVIEW = "review"
    SANDBOX_RUN = "sandbox_run"


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# How a status reads to people: a completed job's result is up and waiting to be looked at.
STATUS_LABELS: dict[Status, str] = {
    Status.QUEUED: "queued",
    Status.RUNNING: "running",
    Status.COMPLETED: "ready for review",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
}


class Outcome(enum.StrEnum):
    """How a finished step went. ``OK`` moves on; the others are verdicts the rules act on."""

    OK = "ok"
    PASSED = "passed"
    FAILED = "failed"
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    UP = "up"
    DOWN = "down"


STEP_PHASE: dict[Step, Phase] = {
    Step.PLAN: Phase.PLANNING,
    Step.BUILD: Phase.BUILDING,
    Step.WRITE_TESTS: Phase.TESTING,
    Step.RUN_TESTS: Phase.TESTING,
    Step.REVIEW: Phase.REVIEWING,
    Step.SANDBOX_RUN: Phase.SANDBOXING,
}

# The order steps run in within one attempt. Planning happens once, before attempt 1's build.
PIPELINE: tuple[Step, ...] = (
    Step.PLAN,
    Step.BUILD,
    Step.WRITE_TESTS,
    Step.RUN_TESTS,
    Step.REVIEW,
    Step.SANDBOX_RUN,
)

# Verdicts that send the job back to the builder with feedback (or fail it when out of attempts).
REJECTING_OUTCOMES: dict[Step, Outcome] = {
    Step.RUN_TESTS: Outcome.FAILED,
    Step.REVIEW: Outcome.CHANGES_REQUESTED,
    Step.SANDBOX_RUN: Outcome.DOWN,
}

ALLOWED_OUTCOMES: dict[Step, frozenset[Outcome]] = {
    Step.PLAN: frozenset({Outcome.OK}),
    Step.BUILD: frozenset({Outcome.OK}),
    Step.WRITE_TESTS: frozenset({Outcome.OK}),
    Step.RUN_TESTS: frozenset({Outcome.PASSED, Outcome.FAILED}),
    Step.REVIEW: frozenset({Outcome.APPROVED, Outcome.CHANGES_REQUESTED}),
    Step.SANDBOX_RUN: frozenset({Outcome.UP, Outcome.DOWN}),
}

TITLE_MAX = 200
DESCRIPTION_MAX = 20_000
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_LIMIT = 10
# A job's place in the queue: higher first, first come first served within a priority.
PRIORITY_MIN = 0
PRIORITY_MAX = 9
DEFAULT_PRIORITY = 5

# The step each phase starts with (where a retry "from a phase" starts).
PHASE_FIRST_STEP: dict[Phase, Step] = {
    phase: next(step for step in PIPELINE if STEP_PHASE[step] is phase) for phase in Phase
}

# Where a new attempt starts after a rejecting verdict: at the build, the step after planning,
# since the plan is made once per job.
ATTEMPT_START: Step = PIPELINE[1]


class AiPhase(enum.StrEnum):
    """An AI phase: the service that does a step with a model, as model routes name it."""

    PLANNER = "planner"
    BUILDER = "builder"
    TESTER = "tester"
    REVIEWER = "reviewer"


# The AI phase (role) whose models a step's calls use; the steps not listed (running the tests,
# the sandbox run) call no model.
STEP_ROLE: dict[str, AiPhase] = {
    Step.PLAN: AiPhase.PLANNER,
    Step.BUILD: AiPhase.BUILDER,
    Step.WRITE_TESTS: AiPhase.TESTER,
    Step.REVIEW: AiPhase.REVIEWER,
}
# The AI phases in the pipeline's order.
AI_PHASES: tuple[AiPhase, ...] = tuple(STEP_ROLE.values())


def step_after(step: Step, outcome: Outcome) -> Step | None:
    """The step due next in the same attempt once `step` finished with `outcome`: the next one
    in the pipeline. None after the last step (the job is done) and after a rejecting verdict
    (a new attempt, starting at `ATTEMPT_START`, or the job's end follows instead)."""
    if REJECTING_OUTCOMES.get(step) is outcome:
        return None
    index = PIPELINE.index(step)
    return PIPELINE[index + 1] if index + 1 < len(PIPELINE) else None


class DomainError(Exception):
    """A command the job's rules refuse (the caller gets a clear message, nothing is written)."""


class OverBudgetError(DomainError):
    """A model call whose worst case is more than what is left of the job's budget."""


def step_named(name: str) -> Step:
    """A step by its name (``run_tests``), or the first step of a phase by the phase's name
    (``testing``: ``write_tests``); DomainError for anything else."""
    for phase in Phase:
        if name == phase.value:
            return PHASE_FIRST_STEP[phase]
    try:
        return Step(name)
    except ValueError:
        phases = [phase.value for phase in Phase]
        names = phases + [step.value for step in Step if step.value not in phases]
        raise DomainError(f"{name!r} is neither a phase nor a step: {', '.join(names)}") from None


def _check_priority(priority: int) -> None:
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        raise DomainError(
            f"priority must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX} (higher runs first)"
        )


def step_key(job_id: UUID, step: Step, attempt: int) -> str:
    """Deterministic key of one side effect: the same step of the same attempt of the same job."""
    return f"{job_id}:{step.value}:{attempt}"


@dataclass(frozen=True)
class Due:
    """The work the rules say is due now."""

    step: Step
    attempt: int

    @property
    def phase(self) -> Phase:
        return STEP_PHASE[self.step]


@dataclass
class StepRecord:
    """What the job remembers of one step of one attempt (for the rules and the read side)."""

    started: bool = False
    resumed: int = 0
    outcome: Outcome | None = None
    summary: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    details: JSON = field(default_factory=dict)
    failed_reason: str | None = None


@dataclass(frozen=True)
class OpenCall:
    """A model call started and not yet finished."""

    reserved_usd: float
    provider: str
    model: str


class Job(Aggregate):
    """One submitted software job. Every change to it is one of the events below."""

    class Event(Aggregate.Event):
        """The common envelope: job id, version and time come from the base class."""

        correlation_id: str
        causation_id: str

    class Submitted(Event, Aggregate.Created):
        # Version 2 added `routes`: per-phase model routes chosen at submission. Version 3
        # added `priority`: the job's place in the queue.
        class_version = 3

        title: str
        description: str
        max_attempts: int
        budget_usd: float
        submitted_by: str
        routes: dict[str, list[str]]
        priority: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["routes"] = {}

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["priority"] = DEFAULT_PRIORITY

    class Admitted(Event):
        """The queue let the job run: its next step (`step`, of `attempt`) is due from now on.
        Appended by the scheduler alone, within the deployment's limits of running jobs."""

        attempt: int
        step: str
        by: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.admitted = True
            job.status = Status.RUNNING

    class Retried(Event):
        """An ended job starts a new attempt (`attempt`) at `from_step`, reusing the results of
        the steps before it from `reused_attempt`, and goes back to the queue (with
        `priority`)."""

        from_step: str
        attempt: int
        reused_attempt: int
        max_attempts: int
        priority: int
        reason: str
        feedback: str
        by: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            start = Step(self.from_step)
            # The plan belongs to the whole job: it is redone only by a retry from planning.
            for step in PIPELINE[1 : PIPELINE.index(start)]:
                job.links[(step, self.attempt)] = job.origin(step, self.reused_attempt)
            if start is Step.PLAN:
                job.plan_attempt = self.attempt
            job.attempt = self.attempt
            job.max_attempts = self.max_attempts
            job.priority = self.priority
            job.feedback.append(self.feedback)
            job.status = Status.QUEUED
            job.admitted = False
            job.finished_reason = None

    class AttemptStarted(Event):
        attempt: int
        reason: str
        feedback: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.attempt = self.attempt
            job.feedback.append(self.feedback)

    class StepStarted(Event):
        step: str
        phase: str
        attempt: int
        key: str
        worker: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.status = Status.RUNNING
            # A step's start counts as an admission (`ADMITTING_EVENTS`).
            job.admitted = True
            job.step_record(self.step, self.attempt).started = True

    class StepResumed(Event):
        """The step was started before but its result was never recorded (a crash or a
        redelivery); it is being done again, and says so."""

        step: str
        attempt: int
        key: str
        worker: str
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            _job(aggregate).step_record(self.step, self.attempt).resumed += 1

    class StepFinished(Event):
        step: str
        phase: str
        attempt: int
        outcome: str
        summary: str
        artifacts: dict[str, str]
        details: dict[str, Any]

        def apply(self, aggregate: Aggregate) -> None:
            rec = _job(aggregate).step_record(self.step, self.attempt)
            rec.outcome = Outcome(self.outcome)
            rec.summary = self.summary
            rec.artifacts = dict(self.artifacts)
            rec.details = dict(self.details)

    class StepFailed(Event):
        step: str
        phase: str
        attempt: int
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            _job(aggregate).step_record(self.step, self.attempt).failed_reason = self.reason

    class ModelCallStarted(Event):
        """A paid model call is about to be made (one try of one route). `reserved_usd` is its
        worst case, held against the budget until the call is finished."""

        key: str
        step: str
        attempt: int
        call: int
        try_number: int
        provider: str
        model: str
        reserved_usd: float
        note: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.open_calls[self.key] = OpenCall(self.reserved_usd, self.provider, self.model)
            name = call_key(job.id, self.step, self.attempt, self.call)
            job.tries[name] = max(job.tries.get(name, 0), self.try_number)

    class ModelCallFinished(Event):
        """What one try of a model call came to: its reply (a blob) or its error, the tokens and
        the cost. `outcome` is ok, error, refused or interrupted. `cost_basis` says how the
        cost was arrived at: ``reported`` (the provider's usage, or nothing billed),
        ``estimated`` (the provider's usage with output tokens estimated from the text that
        arrived before a failure) or ``worst_case`` (nothing known: the try's worst case)."""

        # Version 2 added `cost_basis`. Before it, only an interrupted try was counted at its
        # worst case; every other cost was the provider's figures (a failed try's, nothing).
        class_version = 2

        key: str
        step: str
        attempt: int
        call: int
        try_number: int
        provider: str
        model: str
        outcome: str
        error: str
        input_tokens: int
        output_tokens: int
        cached_tokens: int
        cache_write_tokens: int
        cost_usd: float
        cost_basis: str
        latency_ms: float
        reply: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["cost_basis"] = "worst_case" if state["outcome"] == "interrupted" else "reported"

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.open_calls.pop(self.key, None)
            before = job.spent_usd
            job.spent_usd += self.cost_usd
            if before <= job.budget_usd + BUDGET_TOLERANCE < job.spent_usd:
                role = STEP_ROLE.get(self.step, self.step)
                job.overrun = (
                    f"budget exceeded: the {role}'s call to {self.provider}:{self.model} "
                    f"(try {self.try_number}) cost ${self.cost_usd:.4f}, taking the job's "
                    f"spending to ${job.spent_usd:.4f} of its ${job.budget_usd:.2f} budget "
                    f"(${job.spent_usd - job.budget_usd:.4f} over)"
                )
            if self.outcome == "ok" and self.reply:
                job.replies[call_key(job.id, self.step, self.attempt, self.call)] = self.reply

    class Completed(Event):
        attempts: int

        def apply(self, aggregate: Aggregate) -> None:
            _job(aggregate).status = Status.COMPLETED

    class Failed(Event):
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.status = Status.FAILED
            job.finished_reason = self.reason

    class Cancelled(Event):
        reason: str
        by: str

        def apply(self, aggregate: Aggregate) -> None:
            job = _job(aggregate)
            job.status = Status.CANCELLED
            job.finished_reason = self.reason

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def submit(
        cls,
        *,
        title: str,
        description: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        budget_usd: float = 1.0,
        submitted_by: str = "anonymous",
        routes: dict[str, list[str]] | None = None,
        priority: int = DEFAULT_PRIORITY,
        correlation_id: str | None = None,
        job_id: UUID | None = None,
    ) -> Job:
        title = title.strip()
        if not title:
            raise DomainError("title must not be empty")
        if len(title) > TITLE_MAX:
            raise DomainError(f"title is longer than {TITLE_MAX} characters")
        if not description.strip():
            raise DomainError("description must not be empty")
        if len(description) > DESCRIPTION_MAX:
            raise DomainError(f"description is longer than {DESCRIPTION_MAX} characters")
        for name, text in (("title", title), ("description", description)):
            if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
                raise DomainError(f"{name} contains characters that are not valid text")
        if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise DomainError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        if not 0 < budget_usd <= 10_000:
            raise DomainError("budget_usd must be more than 0 and at most 10000")
        _check_priority(priority)
        routes = {phase: list(chain) for phase, chain in (routes or {}).items()}
        for phase, chain in routes.items():
            if phase not in AI_PHASES:
                raise DomainError(f"routes: {phase!r} is not one of {', '.join(AI_PHASES)}")
            if not 1 <= len(chain) <= 5 or not all(
                isinstance(r, str)
                and 0 < len(r) <= 200
                and r.partition(":")[0] in MODEL_PROVIDERS
                and r.partition(":")[2].strip()
                for r in chain
            ):
                raise DomainError(
                    f"routes.{phase} must list 1 to 5 provider:model routes (main, then "
                    f"fallbacks), each provider one of {', '.join(MODEL_PROVIDERS)}"
                )
        job_id = job_id or uuid4()
        correlation = correlation_id or str(job_id)
        return cls._create(
            cls.Submitted,
            id=job_id,
            title=title,
            description=description,
            max_attempts=max_attempts,
            budget_usd=budget_usd,
            submitted_by=submitted_by,
            routes=routes,
            priority=priority,
            correlation_id=correlation,
            causation_id=correlation,
        )

    # The created event's apply runs through __init__ with the event's fields.
    def __init__(
        self,
        title: str,
        description: str,
        max_attempts: int,
        budget_usd: float,
        submitted_by: str,
        routes: dict[str, list[str]],
        priority: int,
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.title = title
        self.description = description
        self.max_attempts = max_attempts
        self.budget_usd = budget_usd
        self.submitted_by = submitted_by
        self.correlation_id = correlation_id
        self.status = Status.QUEUED
        self.attempt = 1
        self.steps: dict[tuple[Step, int], StepRecord] = {}
        self.feedback: list[str] = []
        self.finished_reason: str | None = None
        self.routes = routes
        self.spent_usd = 0.0
        # Why the job's spending went over its budget: the call that took it there (a call
        # may cost more than its worst case, when the provider counts more than estimated).
        self.overrun: str | None = None
        # Model calls started and not yet finished, by key.
        self.open_calls: dict[str, OpenCall] = {}
        # Replies of finished calls, by call key: a step redone after a crash reuses them.
        self.replies: dict[str, str] = {}
        # The highest try number used so far, by call key.
        self.tries: dict[str, int] = {}
        self.priority = priority
        # Whether the queue has let the job run (since its submission or its last retry).
        self.admitted = False
        # The attempt the job's plan is filed under: 1, unless a retry started from planning.
        self.plan_attempt = 1
        # Steps of an attempt that reuse another attempt's result (a retry from a later step):
        # (step, attempt) -> the attempt whose record it is.
        self.links: dict[tuple[Step, int], int] = {}

    # ---- queries (the rules) ------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    @property
    def is_queued(self) -> bool:
        """Waiting for the scheduler to let it run."""
        return self.status is Status.QUEUED and not self.admitted

    def origin(self, step: Step, attempt: int) -> int:
        """The attempt whose record the step of `attempt` is (itself, unless a retry reused an
        earlier attempt's result)."""
        return self.links.get((step, attempt), attempt)

    def record(self, step: Step, attempt: int | None = None) -> StepRecord:
        attempt = self.attempt if attempt is None else attempt
        # Planning is done once for the whole job (again only on a retry from planning): it is
        # filed under the attempt it was made in, 1 unless so retried.
        if step is Step.PLAN:
            attempt = self.plan_attempt
        return self.steps.get((step, self.origin(step, attempt)), StepRecord())

    def next_step(self) -> Due | None:
        """The step the job is at: due now if the job is admitted, due once it is if it is
        queued; None when it is finished (or a step failed)."""
        if self.is_finished:
            return None
        step: Step | None = PIPELINE[0]
        while step is not None:
            attempt = self.plan_attempt if step is Step.PLAN else self.attempt
            rec = self.record(step, attempt)
            if rec.failed_reason is not None:
                return None
            if rec.outcome is None:
                return Due(step, attempt)
            step = step_after(step, rec.outcome)
        return None

    def due(self) -> Due | None:
        """The one step that is due now, or None when the job is finished, waiting in the
        queue, or waiting."""
        if not self.admitted:
            return None
        return self.next_step()

    @property
    def budget_left_usd(self) -> float:
        """What may still be spent: the budget less what was spent and what open calls hold."""
        held = sum(call.reserved_usd for call in self.open_calls.values())
        return self.budget_usd - self.spent_usd - held

    def is_due(self, step: Step) -> Due | None:
        due = self.due()
        return due if due is not None and due.step is step else None

    # ---- commands -----------------------------------------------------------------------

    def start_step(self, due: Due, *, worker: str, causation_id: str) -> None:
        self._require_due(due)
        key = step_key(self.id, due.step, due.attempt)
        if self.record(due.step, due.attempt).started:
            self.trigger_event(
                self.StepResumed,
                step=due.step.value,
                attempt=due.attempt,
                key=key,
                worker=worker,
                reason="started before without a recorded result (interrupted or redelivered)",
                correlation_id=self.correlation_id,
                causation_id=causation_id,
            )
            return
        self.trigger_event(
            self.StepStarted,
            step=due.step.value,
            phase=due.phase.value,
            attempt=due.attempt,
            key=key,
            worker=worker,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )

    def finish_step(
        self,
        due: Due,
        *,
        outcome: Outcome,
        summary: str,
        causation_id: str,
        artifacts: dict[str, str] | None = None,
        details: JSON | None = None,
    ) -> None:
        """Record a step's result and whatever the rules say follows from it."""
        self._require_due(due)
        if not self.record(due.step, due.attempt).started:
            raise DomainError(f"step {due.step} of attempt {due.attempt} was never started")
        if outcome not in ALLOWED_OUTCOMES[due.step]:
            raise DomainError(f"outcome {outcome} is not a result of step {due.step}")
        self.trigger_event(
            self.StepFinished,
            step=due.step.value,
            phase=due.phase.value,
            attempt=due.attempt,
            outcome=outcome.value,
            summary=summary,
            artifacts=dict(artifacts or {}),
            details=dict(details or {}),
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        if REJECTING_OUTCOMES.get(due.step) is outcome:
            if self.attempt < self.max_attempts:
                self.trigger_event(
                    self.AttemptStarted,
                    attempt=self.attempt + 1,
                    reason=f"{due.step.value} {outcome.value}",
                    feedback=summary,
                    correlation_id=self.correlation_id,
                    causation_id=causation_id,
                )
            else:
                self.trigger_event(
                    self.Failed,
                    reason=(
                        f"{due.step.value} {outcome.value} on the last attempt "
                        f"({self.attempt} of {self.max_attempts}): {summary}"
                    ),
                    correlation_id=self.correlation_id,
                    causation_id=causation_id,
                )
        elif step_after(due.step, outcome) is None:
            self.trigger_event(
                self.Completed,
                attempts=self.attempt,
                correlation_id=self.correlation_id,
                causation_id=causation_id,
            )

    def fail_step(self, due: Due, *, reason: str, causation_id: str) -> None:
        """The step could not be done at all (not a verdict): the job fails with the reason."""
        self._require_due(due)
        self.trigger_event(
            self.StepFailed,
            step=due.step.value,
            phase=due.phase.value,
            attempt=due.attempt,
            reason=reason,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        self.trigger_event(
            self.Failed,
            reason=f"{due.phase.value} failed: {reason}",
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )

    def start_model_call(
        self,
        due: Due,
        *,
        call: int,
        try_number: int,
        provider: str,
        model: str,
        reserved_usd: float,
        note: str = "",
        causation_id: str,
    ) -> str:
        """Record that a model call is about to be made; its key names it in the history."""
        self._require_due(due)
        key = f"{call_key(self.id, due.step.value, due.attempt, call)}:{try_number}"
        if key in self.open_calls:
            raise DomainError(f"model call {key} is already open")
        if reserved_usd > self.budget_left_usd + 1e-12:
            if self.overrun is not None:
                raise OverBudgetError(f"{self.overrun}; no further call is made")
            raise OverBudgetError(
                f"budget exceeded: the call to {provider}:{model} could cost up to "
                f"${reserved_usd:.4f} and ${max(self.budget_left_usd, 0):.4f} of the job's "
                f"${self.budget_usd:g} is left"
            )
        self.trigger_event(
            self.ModelCallStarted,
            key=key,
            step=due.step.value,
            attempt=due.attempt,
            call=call,
            try_number=try_number,
            provider=provider,
            model=model,
            reserved_usd=reserved_usd,
            note=note,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        return key

    def finish_model_call(
        self,
        key: str,
        *,
        outcome: str,
        error: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        cost_usd: float = 0.0,
        cost_basis: str | None = None,
        latency_ms: float = 0.0,
        reply: str = "",
        causation_id: str,
    ) -> str | None:
        """Record what a try came to. When its cost takes the job's spending over the budget,
        the reason to fail the step with, naming the call and the overrun (None otherwise).
        `cost_basis` defaults to ``worst_case`` for an interrupted try (counted at what it
        held), ``reported`` for the others."""
        if key not in self.open_calls:
            raise DomainError(f"model call {key} is not open")
        if outcome not in CALL_OUTCOMES:
            raise DomainError(f"model call outcome {outcome!r} is not one of {CALL_OUTCOMES}")
        if cost_basis is None:
            cost_basis = "worst_case" if outcome == "interrupted" else "reported"
        if cost_basis not in COST_BASES:
            raise DomainError(f"model call cost basis {cost_basis!r} is not one of {COST_BASES}")
        job_step, attempt, call, try_number = _parse_call_key(key)
        started = self.open_calls[key]
        before = self.spent_usd
        self.trigger_event(
            self.ModelCallFinished,
            key=key,
            step=job_step,
            attempt=attempt,
            call=call,
            try_number=try_number,
            provider=started.provider,
            model=started.model,
            outcome=outcome,
            error=error,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            cache_write_tokens=cache_write_tokens,
            cost_usd=cost_usd,
            cost_basis=cost_basis,
            latency_ms=latency_ms,
            reply=reply,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        crossed = before <= self.budget_usd + BUDGET_TOLERANCE < self.spent_usd
        return self.overrun if crossed else None

    def admit(self, *, by: str, causation_id: str) -> Due:
        """Let a queued job run (the scheduler's decision): its next step becomes due."""
        if not self.is_queued:
            raise DomainError(f"job is {self.status}, not queued")
        upcoming = self.next_step()
        if upcoming is None:
            raise DomainError("job has no step left to run")
        self.trigger_event(
            self.Admitted,
            attempt=upcoming.attempt,
            step=upcoming.step.value,
            by=by,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        return upcoming

    def cancel(self, *, reason: str, by: str, causation_id: str) -> None:
        """Stop the job, queued or running: nothing of it is due any more."""
        if self.is_finished:
            raise DomainError(f"job is already {self.status}")
        self.trigger_event(
            self.Cancelled,
            reason=reason,
            by=by,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )

    def retry(
        self,
        from_step: Step,
        *,
        by: str,
        reason: str = "",
        priority: int | None = None,
        causation_id: str,
    ) -> int:
        """Start a new attempt of an ended job at `from_step`; returns its number.

        The steps before `from_step` keep the results of the job's last attempt (which must
        have been good: a retry from reviewing needs tests that passed), the plan unless the
        retry starts from planning. The job goes back to the queue, at the end of its
        priority's line (its priority unless another is given). The new attempt counts like
        any other: `max_attempts` grows to it when it would exceed it, so a rejection in it
        ends the job unless attempts were left. The builder is told `reason` as feedback, or,
        without one, why the job ended."""
        priority = self.priority if priority is None else priority
        _check_priority(priority)
        if not self.is_finished:
            raise DomainError(
                f"job is {self.status}: only a completed, failed or cancelled job can be "
                "retried (cancel it first)"
            )
        if from_step is not Step.PLAN and self.record(Step.PLAN).outcome is None:
            raise DomainError(
                f"cannot retry from {from_step.value}: the job has no plan; retry from planning"
            )
        for step in PIPELINE[1 : PIPELINE.index(from_step)]:
            rec = self.record(step, self.attempt)
            if rec.outcome is None or REJECTING_OUTCOMES.get(step) is rec.outcome:
                result = rec.outcome.value if rec.outcome else "no result"
                raise DomainError(
                    f"cannot retry from {from_step.value}: {step.value} of attempt "
                    f"{self.attempt} has no good result to reuse ({result}); retry from "
                    f"{STEP_PHASE[step].value} or earlier"
                )
        attempt = self.attempt + 1
        self.trigger_event(
            self.Retried,
            from_step=from_step.value,
            attempt=attempt,
            reused_attempt=self.attempt,
            max_attempts=max(self.max_attempts, attempt),
            priority=priority,
            reason=reason,
            feedback=reason or self.finished_reason or "",
            by=by,
            correlation_id=self.correlation_id,
            causation_id=causation_id,
        )
        return attempt

    def _require_due(self, due: Due) -> None:
        if self.is_due(due.step) != due:
            raise DomainError(
                f"step {due.step} of attempt {due.attempt} is not due (job is {self.status})"
            )

    def step_record(self, step: str, attempt: int) -> StepRecord:
        """The mutable record of a step, for the events' ``apply`` methods."""
        return self.steps.setdefault((Step(step), attempt), StepRecord())


# The providers a model route may name (``provider:model``).
MODEL_PROVIDERS = ("anthropic", "openai", "google", "scripted")
CALL_OUTCOMES = ("ok", "error", "refused", "interrupted")
COST_BASES = ("reported", "estimated", "worst_case")
# Spending within this much of the budget is within it (sums of floats).
BUDGET_TOLERANCE = 1e-9


def call_key(job_id: UUID, step: str, attempt: int, call: int) -> str:
    """The deterministic name of one model call of a step (its tries add ``:<try>``)."""
    return f"{job_id}:{step}:{attempt}:{call}"


def _parse_call_key(key: str) -> tuple[str, int, int, int]:
    _job_id, step, attempt, call, try_number = key.split(":")
    return step, int(attempt), int(call), int(try_number)


def _job(aggregate: Aggregate) -> Job:
    assert isinstance(aggregate, Job)
    return aggregate


EVENT_TYPES: dict[str, type[Job.Event]] = {
    "JobSubmitted": Job.Submitted,
    "JobAdmitted": Job.Admitted,
    "JobRetried": Job.Retried,
    "AttemptStarted": Job.AttemptStarted,
    "StepStarted": Job.StepStarted,
    "StepResumed": Job.StepResumed,
    "StepFinished": Job.StepFinished,
    "StepFailed": Job.StepFailed,
    "ModelCallStarted": Job.ModelCallStarted,
    "ModelCallFinished": Job.ModelCallFinished,
    "JobCompleted": Job.Completed,
    "JobFailed": Job.Failed,
    "JobCancelled": Job.Cancelled,
}
EVENT_NAMES: dict[type[Job.Event], str] = {cls: name for name, cls in EVENT_TYPES.items()}

# The events that let a job run: its admission by the queue, and, for a job submitted before
# the queue existed (it has no admission), its first step's start, which stands for one.
ADMITTING_EVENTS: frozenset[str] = frozenset({"JobAdmitted", "StepStarted"})


def admits(event_type: str) -> bool:
    """Whether an event of this type lets the job run (see `ADMITTING_EVENTS`)."""
    return event_type in ADMITTING_EVENTS
