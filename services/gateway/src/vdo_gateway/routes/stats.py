"""Stats: how many jobs in each state, and how long completed ones took."""

from __future__ import annotations

from fastapi import APIRouter

from vdo_gateway.deps import ReadDbDep, StoreDep
from vdo_gateway.models import StatsPublic
from vdo_kernel import readmodels

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("")
def get_stats(db: ReadDbDep, store: StoreDep) -> StatsPublic:
    stats = readmodels.stats(db)
    return StatsPublic(
        by_status=stats.by_status,
        total_jobs=stats.total_jobs,
        total_events=store.max_position(),
        projected_position=readmodels.projector_position(db),
        mean_duration_seconds=stats.mean_completed_seconds,
    )
