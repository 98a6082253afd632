"""A job's history as a caller may see it: read from the store (the source of truth), and for
a job the caller may not see, no history at all (exactly as a job that does not exist)."""

from __future__ import annotations

from uuid import UUID

from vdo_gateway.auth import Principal
from vdo_kernel.domain import Job
from vdo_kernel.store import JobNotFoundError, JobStore, StoredJobEvent


def visible_history(store: JobStore, principal: Principal, job_id: UUID) -> list[StoredJobEvent]:
    """The job's events in order; JobNotFoundError (answered 404) when there is no such job or
    the caller may not see it."""
    events = store.job_events(job_id)
    if not events or events[0].type != "JobSubmitted":
        raise JobNotFoundError(str(job_id))
    submitted_by = events[0].data.get("submitted_by")
    if not isinstance(submitted_by, str) or not principal.may_see_job(submitted_by):
        raise JobNotFoundError(str(job_id))
    return events


def replayed(events: list[StoredJobEvent]) -> Job:
    """The job as its events leave it (the domain's own view: which step results each attempt
    has, including results a retry reused from an earlier attempt)."""
    job: Job | None = None
    for stored in events:
        mutated = stored.event.mutate(job)
        assert isinstance(mutated, Job)
        job = mutated
    assert job is not None
    return job
