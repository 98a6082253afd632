"""The API's request and response bodies (and so its OpenAPI schema).

Requests are strict: unknown fields and wrong types are refused, never coerced or ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, cast
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    WithJsonSchema,
    computed_field,
    field_validator,
)

from vdo_kernel.accounts import TOKEN_NAME_MAX, Token, User
from vdo_kernel.domain import (
    AI_PHASES,
    ALLOWED_OUTCOMES,
    ATTEMPT_START,
    DEFAULT_PRIORITY,
    DESCRIPTION_MAX,
    MAX_ATTEMPTS_LIMIT,
    MODEL_PROVIDERS,
    PIPELINE,
    PRIORITY_MAX,
    PRIORITY_MIN,
    REJECTING_OUTCOMES,
    STATUS_LABELS,
    STEP_PHASE,
    STEP_ROLE,
    TITLE_MAX,
    AiPhase,
    Job,
    Outcome,
    Phase,
    Status,
    Step,
)
from vdo_kernel.readmodels import (
    CallsSummary,
    DayCost,
    DayJobs,
    JobRow,
    ModelCallRow,
    ModelCost,
    PhaseDuration,
    StepRow,
    TokenRow,
    UserRow,
)
from vdo_kernel.store import StoredJobEvent

# The providers a route may name; "gemini" is taken as google's other name.
PROVIDERS: Final = MODEL_PROVIDERS
PROVIDER_ALIASES: Final = {"gemini": "google"}
ROUTES_PER_PHASE_MAX: Final = 5
ROUTE_MAX: Final = 200
# A model's name: printable, no spaces (e.g. claude-sonnet-4-5, gpt-4.1, org/model:tag).
_MODEL_NAME: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")

# An AI phase's name (requests are JSON, validated in Python's mode: a name, not an instance),
# published as the names inline.
AiPhaseName = Annotated[
    AiPhase,
    Strict(False),
    WithJsonSchema({"type": "string", "enum": [phase.value for phase in AI_PHASES]}),
]


def copied_fields(names: Iterable[str], source: object, **overrides: Any) -> dict[str, Any]:
    """Each named field read from the source's attribute of the same name (a read model's row
    or figure), but `overrides` (for what it has not, or has otherwise)."""
    return {name: getattr(source, name) for name in names if name not in overrides} | overrides


def normalise_route(value: str) -> str:
    """``provider:model`` with the provider checked and written the one way (lower case,
    gemini as google), or a ValueError saying what is wrong (without repeating the value)."""
    provider, sep, model = value.strip().partition(":")
    provider = provider.strip().lower()
    provider = PROVIDER_ALIASES.get(provider, provider)
    model = model.strip()
    if not sep or not provider or not model:
        raise ValueError("a route is provider:model, e.g. anthropic:claude-sonnet-4-5")
    if provider not in PROVIDERS:
        raise ValueError(
            f"the provider must be one of {', '.join(PROVIDERS)} (gemini is taken as google)"
        )
    if not _MODEL_NAME.fullmatch(model):
        raise ValueError("the model's name must not contain spaces or control characters")
    return f"{provider}:{model}"


Route = Annotated[
    str,
    Field(
        min_length=3,
        max_length=ROUTE_MAX,
        description="provider:model; provider is anthropic, openai, google (or gemini) or "
        "scripted (the built-in scripted model)",
        examples=["anthropic:claude-sonnet-4-5", "openai:gpt-4.1", "google:gemini-2.5-pro"],
    ),
    AfterValidator(normalise_route),
]
Routes = dict[
    AiPhaseName,
    Annotated[
        list[Route],
        Field(
            min_length=1,
            max_length=ROUTES_PER_PHASE_MAX,
            description="the route to try first, then its fallbacks in order",
        ),
    ],
]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=TITLE_MAX,
            description="required, unless the template gives it",
            examples=["todo API"],
        ),
    ] = None
    description: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=DESCRIPTION_MAX,
            description="what to build, in plain language; required, unless the template gives it",
            examples=["a FastAPI todo API with SQLite and tests"],
        ),
    ] = None
    template: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="a template (its id, or its name: a built-in one's such as todo-api, "
            "see GET /api/templates) whose fields fill in what the request leaves out; model "
            "routes are merged by phase, the request's first",
            examples=["todo-api"],
        ),
    ] = None
    max_attempts: Annotated[
        int | None,
        Field(ge=1, le=MAX_ATTEMPTS_LIMIT, description="build/test/review rounds at most"),
    ] = None
    budget_usd: Annotated[
        float | None,
        Field(
            description="hard cap on model spending for this job, in USD: more than 0, at most "
            "10000 (default: the deployment's)",
            json_schema_extra={"exclusiveMinimum": 0, "maximum": 10_000},
            examples=[2.5],
        ),
    ] = None
    routes: Annotated[
        Routes | None,
        Field(
            description="the models each AI phase uses, by phase: 1 to 5 routes each, the first "
            "tried first and the others as fallbacks in order; a phase left out uses the "
            "deployment's default routes",
            examples=[{"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"]}],
        ),
    ] = None
    priority: Annotated[
        int | None,
        Field(
            ge=PRIORITY_MIN,
            le=PRIORITY_MAX,
            description=f"the job's place in the queue: {PRIORITY_MIN} to {PRIORITY_MAX}, "
            f"higher runs first, first come first served within a priority (default: "
            f"{DEFAULT_PRIORITY})",
        ),
    ] = None

    @field_validator("title", "description")
    @classmethod
    def _storable_text(cls, value: str | None) -> str | None:
        # The store would keep them, but no reader could show them faithfully.
        if value is None:
            return value
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
        return value


REASON_MAX: Final = 2000
# Where a retry may start: a phase (its first step) or a step.
RetryStart = Literal[
    "planning",
    "building",
    "testing",
    "reviewing",
    "sandboxing",
    "plan",
    "build",
    "write_tests",
    "run_tests",
    "review",
    "sandbox_run",
]


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


class JobCancel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: Annotated[
        str,
        AfterValidator(_text),
        Field(max_length=REASON_MAX, description="why, for the job's history"),
    ] = "cancelled on request"


class JobRetry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    start: Annotated[
        RetryStart,
        Field(
            alias="from",
            description="where the new attempt starts: a phase (at its first step: testing "
            "writes the tests again) or a step (run_tests runs the same tests again); the steps "
            "before it keep the results of the job's last attempt, which must have been good",
        ),
    ]
    reason: Annotated[
        str,
        AfterValidator(_text),
        Field(
            max_length=REASON_MAX,
            description="what to do differently: the builder is told it as feedback (without "
            "one, why the job ended)",
        ),
    ] = ""
    priority: Annotated[
        int | None,
        Field(
            ge=PRIORITY_MIN,
            le=PRIORITY_MAX,
            description="its priority in the queue from now on (default: the job's)",
        ),
    ] = None


class StepPublic(BaseModel):
    step: str
    phase: str | None
    attempt: int
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    summary: str | None = None
    artifacts: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    failed_reason: str | None = None
    resumed: int = 0

    @classmethod
    def from_row(cls, row: StepRow) -> StepPublic:
        return cls.model_validate(row, from_attributes=True)


class ModelCallPublic(BaseModel):
    """One try of one model call (a retry or a fallback is another try of the same call)."""

    key: str = Field(description="<job>:<step>:<attempt>:<call>:<try>")
    step: str
    phase: str | None = Field(description="the pipeline phase of the step")
    attempt: int
    call: int = Field(description="the call's number within the step")
    try_number: int = Field(description="1 for the first try; more for retries and fallbacks")
    provider: str
    model: str
    route: str = Field(description="provider:model")
    reserved_usd: float = Field(description="the worst case held against the budget meanwhile")
    note: str = Field(description="why this try was made (a fallback, a repair), if said")
    started_at: datetime | None
    finished_at: datetime | None = Field(description="none while it runs, or if interrupted")
    outcome: str | None = Field(description="ok, error, refused or interrupted; none while it runs")
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None = Field(description="input tokens read from the prompt cache")
    cache_write_tokens: int | None = Field(description="input tokens written to the cache")
    cost_usd: float | None
    cost_basis: str | None = Field(
        description="how cost_usd was arrived at: reported (the provider's usage, or nothing "
        "billed), estimated (output tokens estimated from the text that arrived before a "
        "failure) or worst_case (nothing known); none while it runs"
    )
    latency_ms: float | None
    reply: str | None = Field(description="sha256 of the reply's blob; empty when none")

    @classmethod
    def from_row(cls, row: ModelCallRow) -> ModelCallPublic:
        return cls.model_validate(
            copied_fields(
                cls.model_fields, row, phase=_phase(row.step), route=f"{row.provider}:{row.model}"
            )
        )


def calls_from_events(events: Iterable[StoredJobEvent]) -> list[ModelCallPublic]:
    """A job's model calls read from its events (for a job the read models have not reached;
    the same values the projector gives)."""
    calls: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.data
        if event.type not in ("ModelCallStarted", "ModelCallFinished"):
            continue
        key = str(data["key"])
        call = calls.get(key)
        if call is None:
            call = calls[key] = {
                "key": key,
                "step": str(data["step"]),
                "phase": _phase(str(data["step"])),
                "attempt": int(data["attempt"]),
                "call": int(data["call"]),
                "try_number": int(data["try_number"]),
                "provider": str(data["provider"]),
                "model": str(data["model"]),
                "reserved_usd": 0.0,
                "note": "",
                "started_at": None,
                "finished_at": None,
                "outcome": None,
                "error": None,
                "input_tokens": None,
                "output_tokens": None,
                "cached_tokens": None,
                "cache_write_tokens": None,
                "cost_usd": None,
                "cost_basis": None,
                "latency_ms": None,
                "reply": None,
            }
        if event.type == "ModelCallStarted":
            call.update(
                provider=str(data["provider"]),
                model=str(data["model"]),
                reserved_usd=float(data.get("reserved_usd", 0.0)),
                note=str(data.get("note", "")),
                started_at=event.timestamp,
            )
        else:
            call.update(
                finished_at=event.timestamp,
                outcome=str(data["outcome"]),
                error=str(data.get("error", "")),
                input_tokens=int(data.get("input_tokens", 0)),
                output_tokens=int(data.get("output_tokens", 0)),
                cached_tokens=int(data.get("cached_tokens", 0)),
                cache_write_tokens=int(data.get("cache_write_tokens", 0)),
                cost_usd=float(data.get("cost_usd", 0.0)),
                cost_basis=str(data.get("cost_basis", "reported")),
                latency_ms=float(data.get("latency_ms", 0.0)),
                reply=str(data.get("reply", "")),
            )
    return [
        ModelCallPublic(**call, route=f"{call['provider']}:{call['model']}")
        for call in calls.values()
    ]


class ModelCallsSummary(BaseModel):
    """A job's model calls in figures; every try counts as a call."""

    count: int
    open: int = Field(description="started and not finished: running, or interrupted")
    failed: int = Field(description="finished with another outcome than ok")
    cost_usd: float = Field(description="what the finished calls cost")
    held_usd: float = Field(description="what the open calls hold of the budget")
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int

    @classmethod
    def from_summary(cls, summary: CallsSummary) -> ModelCallsSummary:
        return cls.model_validate(summary, from_attributes=True)

    @classmethod
    def from_calls(cls, calls: list[ModelCallPublic]) -> ModelCallsSummary:
        finished = [c for c in calls if c.finished_at is not None]
        return cls(
            count=len(calls),
            open=len(calls) - len(finished),
            failed=sum(1 for c in finished if c.outcome != "ok"),
            cost_usd=sum(c.cost_usd or 0.0 for c in finished),
            held_usd=sum(c.reserved_usd for c in calls if c.finished_at is None),
            input_tokens=sum(c.input_tokens or 0 for c in finished),
            output_tokens=sum(c.output_tokens or 0 for c in finished),
            cached_tokens=sum(c.cached_tokens or 0 for c in finished),
            cache_write_tokens=sum(c.cache_write_tokens or 0 for c in finished),
        )


class ModelCallsPage(BaseModel):
    job_id: UUID
    items: list[ModelCallPublic] = Field(description="in the order they were started")
    total: int
    limit: int
    offset: int
    source: Literal["read_model", "store"] = Field(
        description="read_model normally; store when the read models have not caught up with "
        "this job yet"
    )


class JobPublic(BaseModel):
    id: UUID
    title: str
    status: Status
    phase: str | None = Field(description="the phase running or due next; none once completed")
    step: str | None = Field(description="the step running or due next; none once completed")
    attempt: int
    max_attempts: int
    budget_usd: float
    cost_usd: float = Field(
        description="what the job's model calls have cost so far, in USD (every finished try)"
    )
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    finished_reason: str | None
    version: int = Field(description="the number of the job's last event")
    position: int | None = Field(
        description="global position of the job's last event (none when not yet projected)"
    )
    priority: int = Field(description="its priority in the queue (higher runs first)")
    queue_position: int | None = Field(
        description="its place in the queue while it waits there (1 runs next, unless its "
        "submitter already has as many jobs running as a user may); none when not queued"
    )

    @computed_field(description="the status as people read it (completed: 'ready for review')")
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @classmethod
    def row_fields(cls, row: JobRow) -> dict[str, Any]:
        # Every field is the row's of the same name but the position of the job's last event.
        fields = JobPublic.model_fields
        return copied_fields(fields, row, position=row.last_position)

    @classmethod
    def from_row(cls, row: JobRow) -> JobPublic:
        return cls(**cls.row_fields(row))


class JobDetail(JobPublic):
    description: str
    routes: dict[str, list[str]] = Field(
        description="the model routes chosen at submission, by AI phase (planner, builder, "
        "tester, reviewer); a phase not listed uses the deployment's defaults"
    )
    model_calls: ModelCallsSummary = Field(
        description="the job's model calls in figures; GET /api/jobs/{id}/calls lists them"
    )
    steps: list[StepPublic]
    source: Literal["read_model", "store"] = Field(
        description="read_model normally; store when the read models have not caught up with "
        "this job yet (then step times are not known)"
    )

    @classmethod
    def from_rows(cls, row: JobRow, steps: list[StepRow], calls: CallsSummary) -> JobDetail:
        return cls(
            **cls.row_fields(row),
            description=row.description,
            routes=row.routes,
            model_calls=ModelCallsSummary.from_summary(calls),
            steps=[StepPublic.from_row(s) for s in steps],
            source="read_model",
        )

    @classmethod
    def from_job(
        cls,
        job: Job,
        *,
        position: int | None = None,
        calls: list[ModelCallPublic] | None = None,
        queue_position: int | None = None,
    ) -> JobDetail:
        # A queued job is at the step its admission will make due.
        due = job.next_step()
        steps = [
            StepPublic(
                step=step.value,
                phase=STEP_PHASE[step].value,
                attempt=attempt,
                outcome=rec.outcome.value if rec.outcome else None,
                summary=rec.summary or None,
                artifacts=dict(rec.artifacts),
                details=dict(rec.details),
                failed_reason=rec.failed_reason,
                resumed=rec.resumed,
            )
            for (step, attempt), rec in job.steps.items()
        ]
        return cls(
            id=job.id,
            title=job.title,
            description=job.description,
            status=job.status,
            phase=due.phase.value if due else None,
            step=due.step.value if due else None,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            budget_usd=job.budget_usd,
            cost_usd=job.spent_usd,
            routes={phase: list(chain) for phase, chain in job.routes.items()},
            model_calls=ModelCallsSummary.from_calls(calls or []),
            submitted_by=job.submitted_by,
            created_at=job.created_on,
            updated_at=job.modified_on,
            started_at=None,
            finished_at=job.modified_on if job.is_finished else None,
            finished_reason=job.finished_reason,
            version=job.version,
            position=position,
            priority=job.priority,
            queue_position=queue_position if job.is_queued else None,
            steps=steps,
            source="store",
        )


class JobsPage(BaseModel):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class EventPublic(BaseModel):
    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: datetime
    correlation_id: str
    causation_id: str
    data: dict[str, Any]

    @classmethod
    def from_stored(cls, event: StoredJobEvent) -> EventPublic:
        return cls(
            position=event.position,
            job_id=event.job_id,
            version=event.version,
            type=event.type,
            timestamp=event.timestamp,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            data=event.data,
        )


class JobEvents(BaseModel):
    job_id: UUID
    items: list[EventPublic]


class AuditStepPublic(BaseModel):
    """One step of one attempt, as its events tell it."""

    step: str
    attempt: int
    phase: str
    workers: list[str] = Field(description="who started it, then who resumed it, if anyone")
    started: datetime | None
    finished: datetime | None
    result: str = Field(description="its outcome, or 'could not be done', or 'no result'")
    summary: str
    failed_reason: str | None
    resumed: int = Field(description="how many times another worker took it up again")
    scripted: bool = Field(description="the built-in scripted model made it")
    artifacts: dict[str, str] = Field(description="artifact name -> blob sha256")
    details: dict[str, Any]


class AuditCallPublic(BaseModel):
    """One try of one model call: a retry or a fallback is another try of the same call."""

    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    route: str = Field(description="provider:model")
    headline: str = Field(description="which try this was and why, in words")
    outcome: str | None = Field(description="none while it has no result")
    result: str
    reserved_usd: float = Field(description="what it held of the budget while it ran")
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cost_usd: float
    latency_ms: float
    started: datetime | None
    finished: datetime | None
    note: str


class AuditEventPublic(BaseModel):
    position: int
    timestamp: datetime
    type: str
    text: str = Field(description="the event in a sentence")
    data: dict[str, Any]


class AuditArtifactPublic(BaseModel):
    step: str
    attempt: int
    name: str
    sha256: str


class JobAuditPublic(BaseModel):
    """A job's complete history from the event log: who submitted it, every step, every model
    call with its cost, every event, the artifacts."""

    job_id: UUID
    title: str
    description: str
    submitted_by: str | None
    submitted_at: datetime
    correlation_id: str
    max_attempts: int | None
    budget_usd: float | None
    priority: int | None
    models: str = Field(description="the routes chosen at submission, in words")
    status: str = Field(description="how it ended, or where it is")
    cost_usd: float = Field(description="what its model calls cost")
    spending: str = Field(description="the cost against the budget, in words")
    first_position: int
    last_position: int
    steps: list[AuditStepPublic]
    model_calls: list[AuditCallPublic]
    history: list[AuditEventPublic]
    artifacts: list[AuditArtifactPublic]


class DayCostPublic(BaseModel):
    day: date = Field(description="a day in UTC")
    calls: int = Field(description="model calls finished that day (every try)")
    cost_usd: float

    @classmethod
    def from_cost(cls, cost: DayCost) -> DayCostPublic:
        return cls.model_validate(cost, from_attributes=True)


class ModelCostPublic(BaseModel):
    route: str = Field(description="provider:model")
    provider: str
    model: str
    calls: int = Field(description="finished calls (every try)")
    failed: int = Field(description="finished with another outcome than ok")
    cost_usd: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int

    @classmethod
    def from_cost(cls, cost: ModelCost) -> ModelCostPublic:
        return cls.model_validate(
            copied_fields(cls.model_fields, cost, route=f"{cost.provider}:{cost.model}")
        )


class StatsPublic(BaseModel):
    by_status: dict[str, int]
    total_jobs: int
    total_events: int = Field(description="events in the store")
    projected_position: int = Field(description="the store position the read models reflect")
    mean_duration_seconds: float | None = Field(
        description="mean time from submission to completion of completed jobs"
    )
    total_cost_usd: float = Field(description="what every finished model call cost, in USD")
    cost_by_day: list[DayCostPublic] = Field(
        description="spending per UTC day: the most recent days with model calls, oldest first"
    )
    cost_by_model: list[ModelCostPublic] = Field(
        description="spending per model (provider:model), the most expensive first"
    )
    ended_jobs: int = Field(default=0, description="jobs completed, failed or cancelled")
    success_rate: float | None = Field(
        default=None,
        description="completed jobs over ended ones (completed, failed or cancelled), 0 to 1; "
        "none before any job ended",
    )
    phase_durations: list[PhaseDurationPublic] = Field(
        default_factory=list,
        description="how long each phase's steps take, from their start to their result, in "
        "pipeline order",
    )
    jobs_by_day: list[DayJobsPublic] = Field(
        default_factory=list,
        description="jobs submitted and ended per UTC day: the most recent days with any, "
        "oldest first",
    )


class PhaseDurationPublic(BaseModel):
    phase: str
    steps: int = Field(description="steps timed (started and with a result)")
    mean_seconds: float
    p50_seconds: float = Field(description="the median")
    p95_seconds: float
    max_seconds: float

    @classmethod
    def from_duration(cls, duration: PhaseDuration) -> PhaseDurationPublic:
        return cls.model_validate(duration, from_attributes=True)


class DayJobsPublic(BaseModel):
    day: date = Field(description="a day in UTC")
    submitted: int
    completed: int = Field(description="jobs that completed that day")
    failed: int
    cancelled: int

    @classmethod
    def from_day(cls, day: DayJobs) -> DayJobsPublic:
        return cls.model_validate(day, from_attributes=True)


ComponentStatus = Literal["ok", "lagging", "down", "unknown"]


class ComponentHealth(BaseModel):
    status: ComponentStatus
    detail: str | None = None
    position: int | None = None
    lag: int | None = Field(default=None, description="events behind the store")


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    position: int | None = Field(description="the store's last position")
    components: dict[str, ComponentHealth]


def _phase(step: str) -> str | None:
    try:
        return STEP_PHASE[Step(step)].value
    except ValueError:
        return None


class ErrorPublic(BaseModel):
    detail: str


class BundleLoaded(BaseModel):
    """What a restore or an import did."""

    outcome: Literal["restored", "imported", "already_present"] = Field(
        description="already_present: the store already held exactly these events; nothing "
        "was added but blobs still missing"
    )
    detail: str = Field(description="what was done, in one sentence")
    kind: str = Field(description="the bundle's kind: backup (the whole log) or export")
    since: int = Field(description="the position the bundle's events follow")
    last_position: int = Field(description="the bundle's last position: the store's now")
    events: int
    jobs: int
    blobs: int = Field(description="blobs in the bundle")
    blobs_written: int = Field(description="blobs this deployment did not have yet")
    seconds: float = Field(description="time spent loading (after the upload)")
    projected_position: int = Field(description="the position the read models reflect now")
    read_models: str = Field(description="how the read models come up to date")


class RowDifferencePublic(BaseModel):
    """One row that is not the same in the live read models and in the log's replay."""

    kind: Literal["missing", "extra", "different"] = Field(
        description="missing: the log gives the row, the live read models lack it; extra: the "
        "live read models hold a row the log does not give; different: both hold it, with "
        "other values"
    )
    key: dict[str, Any] = Field(description="the row's primary key")
    columns: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="for a row that differs: column -> [live value, value from the log]",
    )


class TableComparisonPublic(BaseModel):
    table: str
    equal: bool
    live_checksum: str
    replayed_checksum: str = Field(description="the checksum of the table replayed from the log")
    missing: int = 0
    extra: int = 0
    different: int = 0
    rows: list[RowDifferencePublic] = Field(
        default_factory=list,
        description="the differing rows, the first 20 (the counts above count them all)",
    )


class VerifyReportPublic(BaseModel):
    """The live read models compared with a replay of the log, as `vdo replay --verify --json`
    prints it."""

    equal: bool = Field(description="every table equal (and something to compare)")
    position: int = Field(description="the position the live read models reflect, replayed to")
    duration_seconds: float
    tables: list[TableComparisonPublic] = Field(default_factory=list)
    problem: str | None = Field(
        default=None, description="why nothing could be compared (no read models yet, say)"
    )

    @classmethod
    def from_report(cls, raw: Any) -> VerifyReportPublic:
        """From the projector's reply (`VerifyReport.to_json()`); ValueError if it is not one."""
        if not isinstance(raw, dict) or not isinstance(raw.get("tables"), list):
            raise ValueError("not a verify report")
        tables = [
            TableComparisonPublic.model_validate(
                {**table, "equal": table.get("live_checksum") == table.get("replayed_checksum")}
            )
            for table in raw["tables"]
            if isinstance(table, dict)
        ]
        return cls.model_validate({**raw, "tables": tables})


# ---- accounts ------------------------------------------------------------------------------

RoleName = Literal["admin", "member", "viewer"]
USER_NAME_PATTERN: Final = r"^[a-z][a-z0-9._-]{0,63}$"
TokenStatus = Literal["active", "expired", "revoked"]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[
        str,
        Field(
            pattern=USER_NAME_PATTERN,
            description="1 to 64 characters: a lower-case letter, then lower-case letters, "
            "digits, '.', '_' or '-'",
            examples=["ada"],
        ),
    ]
    role: RoleName = Field(
        default="member",
        description="admin: everything; member: submits jobs, sees and acts on their own; "
        "viewer: sees every job, acts on none",
    )


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: RoleName


class UserPublic(BaseModel):
    name: str
    role: RoleName
    created_at: datetime
    created_by: str = Field(description="who added the user ('first start': the deployment)")
    updated_at: datetime

    @classmethod
    def from_row(cls, row: UserRow) -> UserPublic:
        return cls(
            name=row.name,
            role=_role(row.role),
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
        )

    @classmethod
    def from_user(cls, user: User) -> UserPublic:
        return cls(
            name=user.name,
            role=_role(user.role.value),
            created_at=user.created_on,
            created_by=user.added_by,
            updated_at=user.modified_on,
        )


class UsersPage(BaseModel):
    items: list[UserPublic]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user: Annotated[
        str | None,
        Field(
            pattern=USER_NAME_PATTERN,
            description="the user the token acts for (default: the caller)",
        ),
    ] = None
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=TOKEN_NAME_MAX,
            description="a label to tell the token apart (where it is used, say)",
        ),
    ] = "token"
    expires_in_days: Annotated[
        int | None,
        Field(ge=1, le=3650, description="days until it stops working (default: never)"),
    ] = None


class TokenPublic(BaseModel):
    id: str = Field(description="the token's short public id (to revoke it)")
    prefix: str = Field(description="the token's first characters, to recognise it")
    user: str
    name: str
    status: TokenStatus
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    @classmethod
    def from_row(cls, row: TokenRow, now: datetime) -> TokenPublic:
        return cls(
            id=row.token_id,
            prefix=row.prefix,
            user=row.user_name,
            name=row.name,
            status=_token_status(row.revoked_at, row.expires_at, now),
            created_at=row.created_at,
            created_by=row.created_by,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            revoked_by=row.revoked_by,
        )

    @classmethod
    def token_fields(cls, token: Token, now: datetime) -> dict[str, Any]:
        return {
            "id": token.token_id,
            "prefix": token.prefix,
            "user": token.user_name,
            "name": token.name,
            "status": _token_status(token.revoked_at, token.expires_at, now),
            "created_at": token.created_on,
            "created_by": token.created_by,
            "expires_at": token.expires_at,
            "revoked_at": token.revoked_at,
            "revoked_by": token.revoked_by,
        }

    @classmethod
    def from_token(cls, token: Token, now: datetime) -> TokenPublic:
        return cls(**cls.token_fields(token, now))


class TokenCreated(TokenPublic):
    token: str = Field(
        description="the token itself: shown this once and kept nowhere (only its digest is)"
    )


class TokensPage(BaseModel):
    items: list[TokenPublic]


class TokenIdentity(BaseModel):
    id: str
    name: str
    prefix: str
    expires_at: datetime | None


class MePublic(BaseModel):
    name: str = Field(description="the user the request acts for")
    role: RoleName
    authentication: Literal["on", "off"] = Field(
        description="off: every request acts as the local admin (loopback only)"
    )
    token: TokenIdentity | None = Field(description="the token used (none when off)")


class ProviderPublic(BaseModel):
    name: str = Field(description="anthropic, openai or google")
    configured: bool = Field(description="whether a key for it is set (for some phase)")
    key_source: str | None = Field(
        description="where the key in use comes from: the environment variable it was found in, "
        "or `settings` for a key entered in Settings (the key itself is never shown)"
    )
    base_url: str | None = Field(
        description="a base URL other than the provider's own, if set (without credentials)"
    )
    phases: list[str] = Field(description="the phases whose service has its key")
    stored_key: str | None = Field(
        default=None,
        description="a key entered in Settings: `…` and its last four characters (only `…` "
        "when it is too short to show any); null when none is stored",
    )
    stored_base_url: str | None = Field(
        default=None, description="a base URL entered in Settings (without credentials)"
    )
    stored_at: datetime | None = Field(default=None, description="when it was entered")
    stored_by: str | None = Field(default=None, description="who entered it")
    environment_wins: bool = Field(
        default=False,
        description="a key entered in Settings that is not used: the environment sets one too, "
        "and the environment's wins",
    )


class PhaseModelsPublic(BaseModel):
    phase: str = Field(description="planner, builder, tester or reviewer")
    routes: list[str] = Field(
        default_factory=list,
        description="provider:model, in the order tried: the main route, then its fallbacks",
    )
    source: str | None = Field(
        default=None,
        description="why these routes: `default` (the deployment's default), `setting` "
        "(VDO_<PHASE>_MODEL), `fallback` (the default's provider has no key, so a configured "
        "provider's model for the role), `scripted` (no provider configured)",
    )
    why: str | None = Field(default=None, description="the reason, in words")
    scripted: bool = Field(
        default=False, description="no provider configured: the built-in scripted model runs"
    )
    problem: str | None = Field(default=None, description="why no route can be used, if so")
    providers: list[ProviderPublic] = Field(default_factory=list)
    reported_at: str | None = Field(
        default=None, description="when the phase's service reported (null: not started yet)"
    )


class ProvidersPublic(BaseModel):
    providers: list[ProviderPublic]
    phases: list[PhaseModelsPublic]
    scripted: bool = Field(description="every phase reported runs on the built-in scripted model")
    reported_at: str | None = Field(description="the latest report's time")


class PhaseDefaultPublic(BaseModel):
    phase: str = Field(description="planner, builder, tester or reviewer")
    routes: list[str] = Field(description="the models a job gets unless it chooses its own")
    source: str | None = Field(description="default, setting, fallback or scripted")
    why: str | None = Field(description="why these models, in words")
    problem: str | None = Field(description="why no model can be used, if so")


class ModelDefaultsPublic(BaseModel):
    """What a new job gets unless it chooses otherwise; for everyone who may submit."""

    phases: list[PhaseDefaultPublic]
    scripted: bool = Field(
        description="no AI provider is configured: every phase runs on the built-in scripted "
        "model, which does the demo jobs only"
    )
    providers: list[str] = Field(description="the providers that have a key")
    budget_usd: float = Field(description="a job's budget unless it sets one")
    max_attempts: int = Field(description="a job's attempts unless it sets them")
    max_output_tokens: int = Field(description="the output limit of each model call")
    reported_at: str | None = Field(description="the latest report's time (null: none yet)")


class ProviderKeyIn(BaseModel):
    """A provider's key and base URL, entered in Settings. A field left out is unchanged."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(
        default=None,
        description="the provider's API key (kept encrypted, never shown again: only its last "
        "four characters)",
    )
    base_url: str | None = Field(
        default=None,
        max_length=2048,
        description="another address for the provider's API (an OpenAI-compatible server such "
        "as Ollama, vLLM or llama.cpp: http://host:port/v1); empty removes it",
    )

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value().strip()
        # Never quote the value in a message: it is a secret.
        if not key:
            raise ValueError("the key is empty")
        if len(key) > 4096:
            raise ValueError("the key is longer than 4096 characters")
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ValueError("the key holds spaces or control characters: paste it alone")
        return SecretStr(key)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip()
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// address with a host")
        if any(ch.isspace() or not ch.isprintable() for ch in url):
            raise ValueError("must not hold spaces or control characters")
        return url


class ProviderTestPublic(BaseModel):
    provider: str
    ok: bool = Field(description="whether the provider answered")
    model: str | None = Field(description="the model asked")
    key_source: str | None = Field(description="where the key tried comes from")
    answer: str = Field(description="the start of the provider's answer")
    error: str | None = Field(description="the provider's error, if it failed (no key in it)")
    latency_ms: float | None = Field(description="how long the request took")


class PipelineStepPublic(BaseModel):
    """One step of the pipeline, as the domain states it."""

    step: Step
    phase: Phase = Field(description="the phase the step belongs to")
    role: AiPhase | None = Field(
        description="the AI phase whose models the step's calls use; null: it calls no model"
    )
    outcomes: list[Outcome] = Field(description="the outcomes the step may finish with")
    rejecting: Outcome | None = Field(
        description="the verdict that sends the job back to the build with feedback (or fails "
        "it on its last attempt); null: the step gives no verdict"
    )


class PipelinePublic(BaseModel):
    """The job pipeline's vocabulary, for clients to keep no copy of their own."""

    steps: list[PipelineStepPublic] = Field(description="every step, in the order they run")
    phases: list[Phase] = Field(description="the phases, in the order they run")
    outcomes: list[Outcome] = Field(description="every outcome a step may finish with")
    ai_phases: list[AiPhase] = Field(description="the phases done with a model, in order")
    attempt_start: Step = Field(
        description="the step a new attempt starts at (the plan is made once per job)"
    )

    @classmethod
    def from_domain(cls) -> PipelinePublic:
        return cls(
            steps=[
                PipelineStepPublic(
                    step=step,
                    phase=STEP_PHASE[step],
                    role=STEP_ROLE.get(step),
                    outcomes=[o for o in Outcome if o in ALLOWED_OUTCOMES[step]],
                    rejecting=REJECTING_OUTCOMES.get(step),
                )
                for step in PIPELINE
            ],
            phases=list(Phase),
            outcomes=list(Outcome),
            ai_phases=list(AI_PHASES),
            attempt_start=ATTEMPT_START,
        )


def _role(value: str) -> RoleName:
    # Checked when the model is made: a role this code does not know is an error, not a
    # member.
    return cast(RoleName, value)


def _token_status(
    revoked_at: datetime | None, expires_at: datetime | None, now: datetime
) -> TokenStatus:
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"
