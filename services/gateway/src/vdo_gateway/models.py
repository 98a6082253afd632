"""The API's request and response bodies (and so its OpenAPI schema).

Requests are strict: unknown fields and wrong types are refused, never coerced or ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vdo_kernel.domain import (
    DESCRIPTION_MAX,
    MAX_ATTEMPTS_LIMIT,
    STEP_PHASE,
    TITLE_MAX,
    Job,
    Status,
)
from vdo_kernel.readmodels import JobRow, StepRow
from vdo_kernel.store import StoredJobEvent


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX, examples=["todo API"])]
    description: Annotated[
        str,
        Field(
            min_length=1,
            max_length=DESCRIPTION_MAX,
            examples=["a FastAPI todo API with SQLite and tests"],
        ),
    ]
    max_attempts: Annotated[
        int | None,
        Field(ge=1, le=MAX_ATTEMPTS_LIMIT, description="build/test/review rounds at most"),
    ] = None
    budget_usd: Annotated[
        float | None, Field(description="hard cap on model spending for this job, in USD")
    ] = None

    @field_validator("title", "description")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        # The store would keep them, but no reader could show them faithfully.
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
        return value


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
        return cls(
            step=row.step,
            phase=row.phase,
            attempt=row.attempt,
            worker=row.worker,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=row.outcome,
            summary=row.summary,
            artifacts=row.artifacts,
            details=row.details,
            failed_reason=row.failed_reason,
            resumed=row.resumed,
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

    @classmethod
    def row_fields(cls, row: JobRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "title": row.title,
            "status": Status(row.status),
            "phase": row.phase,
            "step": row.step,
            "attempt": row.attempt,
            "max_attempts": row.max_attempts,
            "budget_usd": row.budget_usd,
            "submitted_by": row.submitted_by,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "finished_reason": row.finished_reason,
            "version": row.version,
            "position": row.last_position,
        }

    @classmethod
    def from_row(cls, row: JobRow) -> JobPublic:
        return cls(**cls.row_fields(row))


class JobDetail(JobPublic):
    description: str
    steps: list[StepPublic]
    source: Literal["read_model", "store"] = Field(
        description="read_model normally; store when the read models have not caught up with "
        "this job yet (then step times are not known)"
    )

    @classmethod
    def from_rows(cls, row: JobRow, steps: list[StepRow]) -> JobDetail:
        return cls(
            **cls.row_fields(row),
            description=row.description,
            steps=[StepPublic.from_row(s) for s in steps],
            source="read_model",
        )

    @classmethod
    def from_job(cls, job: Job, *, position: int | None = None) -> JobDetail:
        due = job.due()
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
            submitted_by=job.submitted_by,
            created_at=job.created_on,
            updated_at=job.modified_on,
            started_at=None,
            finished_at=job.modified_on if job.is_finished else None,
            finished_reason=job.finished_reason,
            version=job.version,
            position=position,
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


class StatsPublic(BaseModel):
    by_status: dict[str, int]
    total_jobs: int
    total_events: int = Field(description="events in the store")
    projected_position: int = Field(description="the store position the read models reflect")
    mean_duration_seconds: float | None = Field(
        description="mean time from submission to completion of completed jobs"
    )


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
