"""Jobs: submit one, list them, read one, its model calls, its history and its audit.

Submissions go to the event store; lists, details and model calls come from the read models,
except for a job the projector has not reached yet (answered from the store, so a new job's id
is never a 404) and a job's history (always from the store: it is the source of truth).

A member sees only the jobs they submitted: another's answers 404, exactly as a job that does not
exist (so ids cannot be probed). A viewer sees every job and may not submit.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import psycopg
import psycopg_pool
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from vdo_gateway.auth import ActorDep, Principal, PrincipalDep
from vdo_gateway.deps import (
    MAX_POSITION,
    POOL_WAIT_SECONDS,
    ReadDbDep,
    ResourcesDep,
    SettingsDep,
    StoreDep,
)
from vdo_gateway.history import visible_history
from vdo_gateway.models import (
    ErrorPublic,
    EventPublic,
    JobAuditPublic,
    JobCreate,
    JobDetail,
    JobEvents,
    JobPublic,
    JobsPage,
    ModelCallPublic,
    ModelCallsPage,
    calls_from_events,
)
from vdo_gateway.resources import Resources
from vdo_gateway.routes.templates import with_template
from vdo_kernel import readmodels
from vdo_kernel.audit import audit, plain_text
from vdo_kernel.domain import DEFAULT_PRIORITY, Job, Status
from vdo_kernel.store import JobNotFoundError, StoredJobEvent

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS = {
    404: {"model": ErrorPublic, "description": "no such job"},
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        400: {"model": ErrorPublic, "description": "malformed JSON"},
        403: {"model": ErrorPublic, "description": "a viewer may not submit"},
        404: {"model": ErrorPublic, "description": "no such template"},
        413: {"model": ErrorPublic, "description": "the body is too large"},
        422: ERRORS[422],
    },
)
def submit_job(
    body: JobCreate,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    principal: ActorDep,
    resources: ResourcesDep,
) -> JobDetail:
    """Submit a job. `routes` picks the models of the AI phases for this job (the deployment's
    defaults otherwise); `budget_usd` caps what its model calls may cost; `template` fills in
    what the request leaves out."""
    body = with_template(body, resources)
    job = Job.submit(
        title=body.title or "",
        description=body.description or "",
        max_attempts=body.max_attempts or settings.default_max_attempts,
        budget_usd=(
            body.budget_usd if body.budget_usd is not None else settings.default_budget_usd
        ),
        submitted_by=principal.name,
        routes={str(phase): list(chain) for phase, chain in (body.routes or {}).items()},
        priority=body.priority if body.priority is not None else DEFAULT_PRIORITY,
    )
    (position,) = store.save(job)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    ahead = queued_ahead(resources, job.priority)
    return JobDetail.from_job(
        job, position=position, queue_position=None if ahead is None else ahead + 1
    )


@router.get("")
def list_jobs(
    db: ReadDbDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    status: Status | None = None,
    owner: Annotated[
        str | None,
        Query(
            max_length=200, pattern=r"^[^\x00]*$", description="only the jobs this user submitted"
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[^\x00]*$",
            description="only jobs whose title or description "
            "contains this text (case-insensitive)",
        ),
    ] = None,
) -> JobsPage:
    """Jobs the caller may see (a member: their own), newest first; with `status=queued`, the
    queue in the order its jobs are to run (`queue_position` is each one's place in the whole
    queue). Filters combine."""
    rows, total = readmodels.list_jobs(
        db,
        limit=limit,
        offset=offset,
        status=status.value if status else None,
        submitted_by=principal.jobs_filter,
        owner=owner,
        text=q,
    )
    return JobsPage(
        items=[JobPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job(job_id: UUID, db: ReadDbDep, store: StoreDep, principal: PrincipalDep) -> JobDetail:
    """The job, its steps and its model calls in figures (`/calls` lists them)."""
    row = readmodels.get_job(db, job_id)
    if row is not None:
        _require_visible(principal, job_id, row.submitted_by)
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
    _require_visible(principal, job_id, job.submitted_by)
    return JobDetail.from_job(
        job,
        position=events[-1].position,
        calls=calls_from_events(events),
        # Not projected yet, so behind every queued job the read models know of its priority.
        queue_position=readmodels.queued_ahead(db, job.priority) + 1 if job.is_queued else None,
    )


def queued_ahead(resources: Resources, priority: int) -> int | None:
    """For a job just queued: how many queued jobs the read models know of are ahead of it
    (those of its priority or higher); None when they cannot say now (a command does not wait
    for them)."""
    try:
        with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            resources.require_current_read_models(conn)
            return readmodels.queued_ahead(conn, priority)
    except (readmodels.OutdatedReadModelsError, psycopg.Error, psycopg_pool.PoolTimeout):
        return None


@router.get("/{job_id}/calls", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job_calls(
    job_id: UUID,
    db: ReadDbDep,
    store: StoreDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> ModelCallsPage:
    """The job's model calls, one item per try (a retry or a fallback is another try of the
    same call), in the order they were started: route, outcome, error, tokens, cost, latency."""
    items: list[ModelCallPublic]
    row = readmodels.get_job(db, job_id)
    if row is not None:
        _require_visible(principal, job_id, row.submitted_by)
        rows, total = readmodels.job_calls(db, job_id, limit=limit, offset=offset)
        items = [ModelCallPublic.from_row(r) for r in rows]
        source: Literal["read_model", "store"] = "read_model"
    else:
        events = store.job_events(job_id)
        if not events:
            raise JobNotFoundError(str(job_id))
        _require_visible(principal, job_id, _submitter(events))
        calls = calls_from_events(events)
        total, items, source = len(calls), calls[offset : offset + limit], "store"
    return ModelCallsPage(
        job_id=job_id, items=items, total=total, limit=limit, offset=offset, source=source
    )


@router.get("/{job_id}/events", responses={404: ERRORS[404], 422: ERRORS[422]})
def get_job_events(
    job_id: UUID,
    store: StoreDep,
    principal: PrincipalDep,
    after: Annotated[
        int,
        Query(
            ge=0, le=MAX_POSITION, description="only events after this global position (to resume)"
        ),
    ] = 0,
) -> JobEvents:
    """The job's history in order, each event with its global position."""
    events = store.job_events(job_id)
    if not events:
        raise JobNotFoundError(str(job_id))
    _require_visible(principal, job_id, _submitter(events))
    return JobEvents(
        job_id=job_id, items=[EventPublic.from_stored(e) for e in events if e.position > after]
    )


@router.get(
    "/{job_id}/audit",
    response_model=None,
    responses={
        200: {
            "model": JobAuditPublic,
            "description": "the audit: plain text, or JSON when asked for",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        404: ERRORS[404],
        422: ERRORS[422],
    },
)
def get_job_audit(
    job_id: UUID,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    output: Annotated[
        Literal["text", "json"] | None,
        Query(
            alias="format",
            description="text or json (default: as the Accept header prefers, else text)",
        ),
    ] = None,
) -> Response:
    """The job's complete history, told from the event log itself (not the read models): who
    submitted it with which limits and models, every step of every attempt (worker, times,
    result, summary, resumes), every model call's try with its route, tokens and cost, every
    event in a sentence, the end, and the artifacts' digests. As plain text (what `vdo audit`
    prints off a terminal), or as JSON with `format=json` or `Accept: application/json`."""
    job = audit(visible_history(store, principal, job_id))
    if _wants_json(output, request.headers.get("accept")):
        body = JobAuditPublic.model_validate(job.to_json())
        return JSONResponse(body.model_dump(mode="json"))
    return PlainTextResponse(plain_text(job))


def _wants_json(output: str | None, accept: str | None) -> bool:
    """JSON when asked by `format`, else when the Accept header ranks it above plain text."""
    if output is not None:
        return output == "json"
    ranks: dict[str, tuple[float, int]] = {}
    for index, part in enumerate((accept or "").split(",")):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks.setdefault(media, (quality, -index))
    json_rank = ranks.get("application/json")
    if json_rank is None or json_rank[0] <= 0:
        return False
    text_rank = ranks.get("text/plain", ranks.get("text/*", ranks.get("*/*", (0.0, 0))))
    return json_rank > text_rank


def _require_visible(principal: Principal, job_id: UUID, submitted_by: str | None) -> None:
    """A job the caller may not see is, to them, a job that does not exist."""
    if submitted_by is None or not principal.may_see_job(submitted_by):
        raise JobNotFoundError(str(job_id))


def _submitter(events: list[StoredJobEvent]) -> str | None:
    """Who submitted the job, from its first event."""
    first = events[0]
    if first.type != "JobSubmitted":
        return None
    by = first.data.get("submitted_by")
    return by if isinstance(by, str) else None
