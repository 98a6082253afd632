"""Stats: how many jobs in each state, how long completed ones took, and what the model calls
cost (in all, per day, per model). A member's stats are of their own jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from vdo_gateway.auth import PrincipalDep
from vdo_gateway.deps import ReadDbDep, StoreDep
from vdo_gateway.models import (
    DayCostPublic,
    DayJobsPublic,
    ModelCostPublic,
    PhaseDurationPublic,
    StatsPublic,
)
from vdo_kernel import readmodels

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("")
def get_stats(
    db: ReadDbDep,
    store: StoreDep,
    principal: PrincipalDep,
    days: Annotated[
        int,
        Query(
            ge=1,
            le=366,
            description="how many days cost_by_day and jobs_by_day list (those with any)",
        ),
    ] = 30,
) -> StatsPublic:
    """Jobs by status, the success rate, how long each phase takes, jobs and spending per day,
    spending per model (a member's: of their own jobs)."""
    stats = readmodels.stats(db, days=days, submitted_by=principal.jobs_filter)
    flow = readmodels.flow_stats(db, days=days, submitted_by=principal.jobs_filter)
    return StatsPublic(
        by_status=stats.by_status,
        total_jobs=stats.total_jobs,
        total_events=store.max_position(),
        projected_position=readmodels.projector_position(db),
        mean_duration_seconds=stats.mean_completed_seconds,
        total_cost_usd=stats.total_cost_usd,
        cost_by_day=[DayCostPublic.from_cost(c) for c in stats.cost_by_day],
        cost_by_model=[ModelCostPublic.from_cost(c) for c in stats.cost_by_model],
        ended_jobs=flow.ended,
        success_rate=flow.success_rate,
        phase_durations=[PhaseDurationPublic.from_duration(d) for d in flow.phase_durations],
        jobs_by_day=[DayJobsPublic.from_day(d) for d in flow.jobs_by_day],
    )
