"""Jobs: submit one, list them, read one, its model calls and its history.

Submissions go to the event store; lists, details and model calls come from the read models,
except for a job the projector has not reached yet (answered from the store, so a new job's id
is never a 404) and a job's history (always from the store: it is the source of truth).
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response, status

from vdo_gateway.deps import ReadDbDep, SettingsDep, StoreDep
from vdo_gateway.models import (
    ErrorPublic,
    EventPublic,
    JobCreate,
    JobDetail,
    JobEvents,
    JobPublic,
    JobsPage,
    ModelCallPublic,
    ModelCallsPage,
    calls_from_events,
)
from vdo_kernel import readmodels
from vdo_kernel.domain import Job, Status
from vdo_kernel.store import JobNotFoundError

router = APIRouter(prefix="/jobs", tags=["jobs"])

# Until there are accounts, every job is submitted by the same nobody.
ANONYMOUS = "anonymous"

ERRORS = {
    404: {"model": ErrorPublic, "description": "no such job"},
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        400: {"model": ErrorPublic, "description": "malformed JSON"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: ERRORS[422],
    },
)
def submit_job(
    body: JobCreate, store: StoreDep, settings: SettingsDep, response: Response
) -> JobDetail:
    """Submit a job. `routes` picks the models of the AI phases for this job (the deployment's
    defaults otherwise); `budget_usd` caps what its model calls may cost."""
    job = Job.submit(
        title=body.title,
        description=body.description,
        max_attempts=body.max_attempts or settings.default_max_attempts,
        budget_usd=(
            body.budget_usd if body.budget_usd is not None else settings.default_budget_usd
        ),
        submitted_by=ANONYMOUS,
        routes={phase: list(chain) for phase, chain in (body.routes or {}).items()},
    )
    (position,) = store.save(job)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return JobDetail.from_job(job, position=position)


@router.get("")
def list_jobs(
    db: ReadDbDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Status | None = None,
) -> JobsPage:
    """Jobs, newest first."""
    rows, total = readmodels.list_jobs(
        db, limit=limit, offset=offset, status=status.value if status else None
    )
    return JobsPage(
        items=[JobPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job(job_id: UUID, db: ReadDbDep, store: StoreDep) -> JobDetail:
    """The job, its steps and its model calls in figures (`/calls` lists them)."""
    row = readmodels.get_job(db, job_id)
    if row is not None:
        return JobDetail.from_rows(
            row, readmodels.job_steps(db, job_id), readmodels.calls_summary(db, job_id)
        )
    # Not projected yet: the store knows. The job is replayed from the same read that gives
    # the positions, so the two agree.
    events = store.job_events(job_id)
    job: Job | None = None
    for stored in events:
        job = stored.event.mutate(job)
    if job is None:
        raise JobNotFoundError(str(job_id))
    return JobDetail.from_job(job, position=events[-1].position, calls=calls_from_events(events))


@router.get("/{job_id}/calls", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job_calls(
    job_id: UUID,
    db: ReadDbDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelCallsPage:
    """The job's model calls, one item per try (a retry or a fallback is another try of the
    same call), in the order they were started: route, outcome, error, tokens, cost, latency."""
    items: list[ModelCallPublic]
    if readmodels.get_job(db, job_id) is not None:
        rows, total = readmodels.job_calls(db, job_id, limit=limit, offset=offset)
        items = [ModelCallPublic.from_row(r) for r in rows]
        source: Literal["read_model", "store"] = "read_model"
    else:
        events = store.job_events(job_id)
        if not events:
            raise JobNotFoundError(str(job_id))
        calls = calls_from_events(events)
        total, items, source = len(calls), calls[offset : offset + limit], "store"
    return ModelCallsPage(
        job_id=job_id, items=items, total=total, limit=limit, offset=offset, source=source
    )


@router.get("/{job_id}/events", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job_events(
    job_id: UUID,
    store: StoreDep,
    after: Annotated[
        int, Query(ge=0, description="only events after this global position (to resume)")
    ] = 0,
) -> JobEvents:
    """The job's history in order, each event with its global position."""
    events = store.job_events(job_id)
    if not events:
        raise JobNotFoundError(str(job_id))
    return JobEvents(
        job_id=job_id, items=[EventPublic.from_stored(e) for e in events if e.position > after]
    )
