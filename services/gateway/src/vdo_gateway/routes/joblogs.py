"""A job's log, read back from its history: by phase, attempt and stream, a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from vdo_gateway.auth import PrincipalDep
from vdo_gateway.deps import MAX_POSITION, SettingsDep, StoreDep
from vdo_gateway.history import visible_history
from vdo_gateway.joblog import LogFilter, LogLine, job_log
from vdo_gateway.models import ErrorPublic
from vdo_kernel.blobs import BlobStore
from vdo_kernel.domain import Phase

router = APIRouter(prefix="/jobs", tags=["logs"])

ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorPublic, "description": "no such job"},
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}


class LogLinePublic(BaseModel):
    position: int = Field(
        description="the global position of the event the line comes from (the lines of a "
        "run's output or of a reply share their event's)"
    )
    line: int | None = Field(
        description="the line's number in the run's output or the reply; none for the event's "
        "own line"
    )
    timestamp: datetime = Field(description="when the event was recorded")
    phase: str | None = Field(description="none for the job's own milestones")
    step: str | None
    attempt: int | None
    stream: Literal["event", "model", "sandbox"] = Field(
        description="event: a step's start, result or failure, or the job's milestones; "
        "model: a model call's try (and its reply's text); sandbox: a run's output"
    )
    level: Literal["info", "warning", "error"]
    text: str

    @classmethod
    def of(cls, line: LogLine) -> LogLinePublic:
        return cls(
            position=line.position,
            line=line.line,
            timestamp=line.timestamp,
            phase=line.phase,
            step=line.step,
            attempt=line.attempt,
            stream=line.stream,
            level=line.level,
            text=line.text,
        )


class JobLogPage(BaseModel):
    job_id: UUID
    items: list[LogLinePublic] = Field(description="in the order they happened")
    total: int = Field(description="lines that match the filters")
    limit: int
    offset: int


@router.get("/{job_id}/logs", responses=ERRORS)
def get_job_log(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    phase: Annotated[Phase | None, Query(description="only this phase's lines")] = None,
    attempt: Annotated[int | None, Query(ge=1, le=10_000, description="only this attempt's")] = (
        None
    ),
    stream: Annotated[
        Literal["event", "model", "sandbox"] | None, Query(description="only this stream's")
    ] = None,
    include: Annotated[
        list[Literal["replies"]] | None,
        Query(description="replies: each model reply's text too, line by line"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> JobLogPage:
    """The job's log: every step's start and result (with its summary), every model call's try
    (outcome, error, tokens, cost), every run's output line by line, and with
    ``include=replies`` each model reply's text. A line of the job's own (submitted,
    completed…) has no phase, so a phase filter leaves it out."""
    events = visible_history(store, principal, job_id)
    lines = job_log(
        events,
        BlobStore(settings.blobs_dir),
        LogFilter(
            phase=phase.value if phase else None,
            attempt=attempt,
            stream=stream,
            replies="replies" in (include or []),
        ),
    )
    return JobLogPage(
        job_id=job_id,
        items=[LogLinePublic.of(line) for line in lines[offset : offset + limit]],
        total=len(lines),
        limit=limit,
        offset=offset,
    )
