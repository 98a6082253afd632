"""Every stream, subject and consumer name on the bus, in one place.

Each stored event of a job is published on ``vdo.job.<EventType>``; step events add the step
(``vdo.job.StepFinished.build``) so that a service can filter on exactly what makes its step due.
The accounts' events (users and tokens) go on ``vdo.account.<EventType>`` and the job
templates' on ``vdo.template.<EventType>``, in the same stream, so that whatever follows jobs
(``vdo.job.>``) never sees them.
"""

from __future__ import annotations

from typing import Final

from vdo_kernel.accounts import is_account_event
from vdo_kernel.domain import ATTEMPT_START, PIPELINE, Step
from vdo_kernel.templates import is_template_event

STREAM: Final = "VDO_EVENTS"
SUBJECT_PREFIX: Final = "vdo.job"
# Every job event.
ALL_EVENTS: Final = f"{SUBJECT_PREFIX}.>"
ACCOUNT_SUBJECT_PREFIX: Final = "vdo.account"
ACCOUNT_EVENTS: Final = f"{ACCOUNT_SUBJECT_PREFIX}.>"
TEMPLATE_SUBJECT_PREFIX: Final = "vdo.template"
TEMPLATE_EVENTS: Final = f"{TEMPLATE_SUBJECT_PREFIX}.>"
# Everything the stream holds: every stored event.
STREAM_SUBJECTS: Final = (ALL_EVENTS, ACCOUNT_EVENTS, TEMPLATE_EVENTS)

HEADER_POSITION: Final = "Vdo-Position"
HEADER_MSG_ID: Final = "Nats-Msg-Id"

STEP_EVENTS: Final = frozenset({"StepStarted", "StepResumed", "StepFinished", "StepFailed"})
# Events published with the step they concern added to the subject: the step events, and the
# admission (whose step is the one it makes due: planning, or where a retry resumes).
STEP_ROUTED_EVENTS: Final = STEP_EVENTS | {"JobAdmitted"}
# What ends a job.
END_EVENTS: Final = frozenset({"JobCompleted", "JobFailed", "JobCancelled"})


def event_subject(event_type: str, step: str | None = None) -> str:
    if is_account_event(event_type):
        return f"{ACCOUNT_SUBJECT_PREFIX}.{event_type}"
    if is_template_event(event_type):
        return f"{TEMPLATE_SUBJECT_PREFIX}.{event_type}"
    if event_type in STEP_ROUTED_EVENTS and step:
        return f"{SUBJECT_PREFIX}.{event_type}.{step}"
    return f"{SUBJECT_PREFIX}.{event_type}"


# What makes each step due: the events after which the rules may name that step next, derived
# from the pipeline's order. The admission of a job makes its next step due (planning for a new
# job, any step for a retried one); the step before one in the pipeline finishing makes it due;
# and a new attempt makes the step it starts at due.
def _triggers(step: Step) -> tuple[str, ...]:
    index = PIPELINE.index(step)
    before = (event_subject("StepFinished", PIPELINE[index - 1]),) if index > 0 else ()
    attempt = (event_subject("AttemptStarted"),) if step is ATTEMPT_START else ()
    return (event_subject("JobAdmitted", step), *before, *attempt)


STEP_TRIGGERS: Final[dict[Step, tuple[str, ...]]] = {step: _triggers(step) for step in PIPELINE}

# A job's cancellation, which every phase service watches (on core NATS) to abandon the work it
# is doing for that job.
JOB_CANCELLED: Final = event_subject("JobCancelled")

# The durable consumer projectors were once woken through: they follow the store now, and
# delete it when they find it (`vdo_projector.service.retire_bus_consumer`).
RETIRED_CONSUMER_PROJECTOR: Final = "projector"
# The scheduler's name in the tracking records of its admissions.
SCHEDULER: Final = "scheduler"


def step_consumer(step: Step) -> str:
    """A step's durable consumer; the replicas of the service doing it share it."""
    return f"step-{step.value.replace('_', '-')}"


# Live log lines (model tokens, sandbox output) go out on core NATS, not the stream: they are for
# watching. What matters of them is kept as blobs and events when the step ends.
LIVE_LOG_PREFIX: Final = "vdo.log"


def live_log_subject(job_id: object) -> str:
    return f"{LIVE_LOG_PREFIX}.{job_id}"


# Admin requests answered on core NATS (request/reply), outside the stream: asking the projector
# to check the live read models against the log (`POST /api/admin/verify`). Its replicas answer
# in one queue group, so each request is answered once.
ADMIN_VERIFY: Final = "vdo.admin.verify"
VERIFY_QUEUE: Final = "projector-verify"

# The secret store changed (a provider key added or removed in Settings): the AI services read
# their keys again and report anew. Core NATS; a message missed is caught at the next step.
SECRETS_CHANGED: Final = "vdo.admin.secrets-changed"
# Trying a provider's key from Settings: one AI service answers (request/reply, a queue group).
PROVIDER_TEST: Final = "vdo.admin.provider-test"
PROVIDER_TEST_QUEUE: Final = "provider-test"
