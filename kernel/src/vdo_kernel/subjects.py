"""Every stream, subject and consumer name on the bus, in one place.

Each stored event is published on ``vdo.job.<EventType>``; step events add the step
(``vdo.job.StepFinished.build``) so that a service can filter on exactly what makes its step due.
"""

from __future__ import annotations

from typing import Final

from vdo_kernel.domain import Step

STREAM: Final = "VDO_EVENTS"
SUBJECT_PREFIX: Final = "vdo.job"
ALL_EVENTS: Final = f"{SUBJECT_PREFIX}.>"

HEADER_POSITION: Final = "Vdo-Position"
HEADER_MSG_ID: Final = "Nats-Msg-Id"

STEP_EVENTS: Final = frozenset({"StepStarted", "StepResumed", "StepFinished", "StepFailed"})


def event_subject(event_type: str, step: str | None = None) -> str:
    if event_type in STEP_EVENTS and step:
        return f"{SUBJECT_PREFIX}.{event_type}.{step}"
    return f"{SUBJECT_PREFIX}.{event_type}"


# What makes each step due: the events after which the rules may name that step next.
STEP_TRIGGERS: Final[dict[Step, tuple[str, ...]]] = {
    Step.PLAN: (event_subject("JobSubmitted"),),
    Step.BUILD: (event_subject("StepFinished", Step.PLAN), event_subject("AttemptStarted")),
    Step.WRITE_TESTS: (event_subject("StepFinished", Step.BUILD),),
    Step.RUN_TESTS: (event_subject("StepFinished", Step.WRITE_TESTS),),
    Step.REVIEW: (event_subject("StepFinished", Step.RUN_TESTS),),
    Step.SANDBOX_RUN: (event_subject("StepFinished", Step.REVIEW),),
}

# Durable consumer names; replicas of one service share their service's consumer.
CONSUMER_PROJECTOR: Final = "projector"


def step_consumer(step: Step) -> str:
    return f"step-{step.value.replace('_', '-')}"


# Live log lines (model tokens, sandbox output) go out on core NATS, not the stream: they are for
# watching. What matters of them is kept as blobs and events when the step ends.
LIVE_LOG_PREFIX: Final = "vdo.log"


def live_log_subject(job_id: object) -> str:
    return f"{LIVE_LOG_PREFIX}.{job_id}"
