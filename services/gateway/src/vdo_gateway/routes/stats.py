"""Stats: how many jobs in each state, how long completed ones took, and what the model calls
cost (in all, per day, per model)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from vdo_gateway.deps import ReadDbDep, StoreDep
from vdo_gateway.models import DayCostPublic, ModelCostPublic, StatsPublic
from vdo_kernel import readmodels

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("")
def get_stats(
    db: ReadDbDep,
    store: StoreDep,
    days: Annotated[
        int, Query(ge=1, le=366, description="how many days (with model calls) cost_by_day lists")
    ] = 30,
) -> StatsPublic:
    stats = readmodels.stats(db, days=days)
    return StatsPublic(
        by_status=stats.by_status,
        total_jobs=stats.total_jobs,
        total_events=store.max_position(),
        projected_position=readmodels.projector_position(db),
        mean_duration_seconds=stats.mean_completed_seconds,
        total_cost_usd=stats.total_cost_usd,
        cost_by_day=[DayCostPublic.from_cost(c) for c in stats.cost_by_day],
        cost_by_model=[ModelCostPublic.from_cost(c) for c in stats.cost_by_model],
    )
