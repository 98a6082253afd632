"""The job pipeline's vocabulary, as the domain states it: the steps in order with their phase,
the AI phase doing each and the verdict that rejects; the phases and the outcomes. Clients (the
dashboard) read it here instead of keeping a copy of the rules."""

from __future__ import annotations

from fastapi import APIRouter

from vdo_gateway.auth import PrincipalDep
from vdo_gateway.models import PipelinePublic

router = APIRouter(prefix="/pipeline", tags=["pipeline"])


@router.get("")
def get_pipeline(principal: PrincipalDep) -> PipelinePublic:
    """The steps of a job in the order they run, each with its phase, the AI phase whose models
    it uses and the verdict that sends the job back; the phases and the outcomes (for everyone
    signed in)."""
    return PipelinePublic.from_domain()
