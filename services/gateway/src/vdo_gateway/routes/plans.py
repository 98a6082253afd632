"""A job's plan: what the planner decided (summary, steps, files, test strategy, run command),
read from the plan's blob named in the job's history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from vdo_gateway.auth import PrincipalDep
from vdo_gateway.deps import SettingsDep, StoreDep
from vdo_gateway.history import replayed, visible_history
from vdo_gateway.models import ErrorPublic
from vdo_kernel.blobs import BlobNotFoundError, BlobStore
from vdo_kernel.domain import Step

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorPublic, "description": "no such job, or no plan yet"},
    410: {"model": ErrorPublic, "description": "the plan's blob is not in this blob store"},
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}


class PlanPublic(BaseModel):
    job_id: UUID
    attempt: int = Field(description="the attempt whose planning step made it")
    drafted_at: datetime = Field(description="when the planning step finished")
    sha256: str = Field(description="the plan's blob")
    summary: str
    steps: list[str] = Field(description="the plan's steps, in order")
    files: list[str] = Field(description="the files it means to write")
    dependencies: list[str] = Field(description="PyPI requirements")
    test_strategy: str
    run_command: list[str] = Field(description="how the result is started (its argv)")
    ready_check: dict[str, Any] | None = Field(description="how the sandbox knows it is up")
    model: str | None = Field(description="the model that planned it (provider:model)")


@router.get("/{job_id}/plan", responses=ERRORS)
def get_plan(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    attempt: Annotated[
        int | None,
        Query(ge=1, le=10_000, description="the plan in force at this attempt (default: the last)"),
    ] = None,
) -> PlanPublic:
    """The job's plan: the last one drafted (a retry from planning drafts another), or the one
    in force at an attempt."""
    events = visible_history(store, principal, job_id)
    job = replayed(events)
    drafted = sorted(
        number
        for (step, number), record in job.steps.items()
        if step is Step.PLAN
        and "plan" in record.artifacts
        and (attempt is None or number <= attempt)
    )
    if not drafted:
        raise HTTPException(status_code=404, detail=f"job {job_id} has no plan yet")
    number = drafted[-1]
    digest = job.steps[(Step.PLAN, number)].artifacts["plan"]
    try:
        document = json.loads(BlobStore(settings.blobs_dir).get(digest))
    except BlobNotFoundError:
        raise HTTPException(
            status_code=410, detail=f"the plan's blob {digest} is not in this blob store"
        ) from None
    finished = [
        e.timestamp
        for e in events
        if e.type == "StepFinished"
        and e.data.get("step") == Step.PLAN.value
        and e.data.get("attempt") == number
    ]
    return PlanPublic(
        job_id=job_id,
        attempt=number,
        drafted_at=finished[-1] if finished else events[-1].timestamp,
        sha256=digest,
        summary=str(document.get("summary", "")),
        steps=[str(s) for s in document.get("steps", [])],
        files=[str(f) for f in document.get("files", [])],
        dependencies=[str(d) for d in document.get("dependencies", [])],
        test_strategy=str(document.get("test_strategy", "")),
        run_command=[str(a) for a in document.get("run_command") or []],
        ready_check=document.get("ready_check"),
        model=document.get("model"),
    )
