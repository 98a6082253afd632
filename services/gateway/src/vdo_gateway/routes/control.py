"""Acting on a job: cancel it (queued or running), or retry it from a phase once it has ended.

Both are commands on the job in the event store (`JobCancelled`, `JobRetried`); the job's rules
decide whether they are allowed. A running job's work stops when its services hear of the
cancellation; a retried job goes back to the queue, where the scheduler admits it in turn.

Who may: an admin, on any job; a member, on their own (another's answers 404, as a job that does
not exist); a viewer, on none (403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, HTTPException, status

from vdo_gateway.auth import ActorDep, Principal
from vdo_gateway.deps import ResourcesDep, StoreDep
from vdo_gateway.models import ErrorPublic, JobCancel, JobDetail, JobRetry
from vdo_gateway.routes.jobs import queued_ahead
from vdo_kernel.domain import DomainError, Job, step_named
from vdo_kernel.store import ConcurrencyError, JobNotFoundError, JobStore

router = APIRouter(prefix="/jobs", tags=["jobs"])

RESPONSES: dict[int | str, dict[str, object]] = {
    403: {"model": ErrorPublic, "description": "a viewer may not act on jobs"},
    404: {"model": ErrorPublic, "description": "no such job"},
    409: {"model": ErrorPublic, "description": "the job's state does not allow it"},
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}
# Tries of a command that keeps meeting a concurrent change of the job (its step finishing).
TRIES = 10


@router.post("/{job_id}/cancel", responses=RESPONSES)
def cancel_job(
    job_id: UUID,
    store: StoreDep,
    principal: ActorDep,
    body: Annotated[JobCancel | None, Body()] = None,
) -> JobDetail:
    """Cancel a queued or running job: it leaves the queue, or the step in hand is stopped (its
    model call abandoned, its sandbox run killed) and nothing more is done. 409 for a job that
    has ended."""
    reason = (body or JobCancel()).reason

    def cancel(job: Job) -> None:
        job.cancel(reason=reason, by=principal.name, causation_id=job.correlation_id)

    return _act(store, principal, job_id, cancel)


@router.post("/{job_id}/retry", responses=RESPONSES)
def retry_job(
    job_id: UUID, body: JobRetry, store: StoreDep, principal: ActorDep, resources: ResourcesDep
) -> JobDetail:
    """Start a new attempt of a completed, failed or cancelled job from a phase or a step: the
    steps before it keep the last attempt's results (a retry from testing reuses its build),
    and the job goes back to the queue. The attempt counts like any other: `max_attempts` grows
    to it if needed. 409 when the job has not ended, or when a step before the start has no
    good result to reuse (the message says from where a retry is possible)."""
    start = step_named(body.start)

    def retry(job: Job) -> None:
        job.retry(
            start,
            by=principal.name,
            reason=body.reason,
            priority=body.priority,
            causation_id=job.correlation_id,
        )

    retried = _act(store, principal, job_id, retry)
    # At the end of its priority's line: behind every queued job of that priority or higher.
    place = queued_ahead(resources, retried.priority)
    return retried.model_copy(update={"queue_position": None if place is None else place + 1})


def _act(
    store: JobStore, principal: Principal, job_id: UUID, command: Callable[[Job], None]
) -> JobDetail:
    for _ in range(TRIES):
        job = store.get(job_id)
        if not _may_act(principal, job.submitted_by):
            raise JobNotFoundError(str(job_id))
        try:
            command(job)
        except DomainError as refused:
            raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(refused)) from None
        try:
            positions = store.save(job)
        except ConcurrencyError:
            continue  # a step recorded something meanwhile: decide again on the job as it is
        return JobDetail.from_job(job, position=positions[-1])
    raise HTTPException(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="the job kept changing while this was asked; try again",
    )


def _may_act(principal: Principal, submitted_by: str) -> bool:
    return principal.is_admin or submitted_by == principal.name
