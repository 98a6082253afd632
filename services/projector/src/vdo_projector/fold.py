"""The read models folded in memory from the log: the rows `updates` writes event by event,
produced in one pass, for a replay to write in bulk.

Each rule here mirrors one statement in `updates` (an ``INSERT ... ON CONFLICT DO UPDATE`` is a
dictionary lookup, an ``UPDATE ... WHERE id`` of a job that is not there does nothing), and the
values are the same Python values `updates` hands to PostgreSQL, so both ways give the same rows;
the tests compare their checksums on random histories. A change to one is a change to both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from vdo_kernel.domain import PIPELINE, STEP_PHASE, Status
from vdo_projector.eventlog import LoggedEvent
from vdo_projector.updates import finished_call, next_step, phase_of, routes_of, started_call

Row = tuple[Any, ...]

_FIRST = PIPELINE[0]
# A new attempt starts again at the build: the plan is made once per job.
_RETRY = PIPELINE[1]


@dataclass(slots=True)
class JobState:
    """One row of ``jobs``, in its columns' order."""

    id: UUID
    title: str
    description: str
    status: str
    phase: str | None
    step: str | None
    attempt: int
    max_attempts: int
    budget_usd: float
    cost_usd: float
    routes: Any
    submitted_by: str
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    finished_reason: str | None
    version: int
    last_position: int

    def row(self) -> Row:
        return (
            self.id,
            self.title,
            self.description,
            self.status,
            self.phase,
            self.step,
            self.attempt,
            self.max_attempts,
            self.budget_usd,
            self.cost_usd,
            json.dumps(self.routes),
            self.submitted_by,
            self.created_at,
            self.updated_at,
            self.started_at,
            self.finished_at,
            self.finished_reason,
            self.version,
            self.last_position,
        )


@dataclass(slots=True)
class StepState:
    """One row of ``steps``, in its columns' order (the defaults are the table's)."""

    job_id: UUID
    step: str
    attempt: int
    phase: str | None
    first_position: int
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    summary: str | None = None
    artifacts: Any = field(default_factory=dict)
    details: Any = field(default_factory=dict)
    failed_reason: str | None = None
    resumed: int = 0

    def row(self) -> Row:
        return (
            self.job_id,
            self.step,
            self.attempt,
            self.phase,
            self.worker,
            self.started_at,
            self.finished_at,
            self.outcome,
            self.summary,
            json.dumps(self.artifacts),
            json.dumps(self.details),
            self.failed_reason,
            self.resumed,
            self.first_position,
        )


@dataclass(slots=True)
class CallState:
    """One row of ``model_calls``, in its columns' order (the defaults are the table's)."""

    job_id: UUID
    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    provider: str
    model: str
    first_position: int
    reserved_usd: float = 0.0
    note: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    reply: str | None = None

    def row(self) -> Row:
        return (
            self.job_id,
            self.key,
            self.step,
            self.attempt,
            self.call,
            self.try_number,
            self.provider,
            self.model,
            self.reserved_usd,
            self.note,
            self.started_at,
            self.finished_at,
            self.outcome,
            self.error,
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.cost_usd,
            self.latency_ms,
            self.reply,
            self.first_position,
        )


StepKey = tuple[UUID, str, int]
Rule = Callable[["Fold", "JobState | None", LoggedEvent, dict[str, Any]], None]


class Fold:
    """Jobs, steps and model calls as the events so far leave them; each event's timeline row
    is handed back as it is applied, so the (largest) timeline never has to be held."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, JobState] = {}
        self.steps: dict[StepKey, StepState] = {}
        self.calls: dict[str, CallState] = {}

    def apply(self, event: LoggedEvent) -> Row:
        """Fold one event in; returns its ``timeline`` row."""
        data = event.data
        timeline = (
            event.position,
            event.job_id,
            event.version,
            event.type,
            event.timestamp,
            json.dumps(data),
        )
        if event.type == "JobSubmitted":
            self._submitted(event, data)
            return timeline
        job = self.jobs.get(event.job_id)
        if job is not None:
            job.updated_at = event.timestamp
            job.version = event.version
            job.last_position = event.position
        rule = _RULES.get(event.type)
        if rule is not None:
            rule(self, job, event, data)
        return timeline

    def job_rows(self) -> Iterator[Row]:
        return (job.row() for job in self.jobs.values())

    def step_rows(self) -> Iterator[Row]:
        return (step.row() for step in self.steps.values())

    def call_rows(self) -> Iterator[Row]:
        return (call.row() for call in self.calls.values())

    # ---- the rules, one per event type (as in `updates`) --------------------------------

    def _submitted(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        self.jobs[event.job_id] = JobState(
            id=event.job_id,
            title=data["title"],
            description=data["description"],
            status=Status.QUEUED.value,
            phase=STEP_PHASE[_FIRST].value,
            step=_FIRST.value,
            attempt=1,
            max_attempts=data["max_attempts"],
            budget_usd=float(data["budget_usd"]),
            cost_usd=0.0,
            routes=routes_of(data),
            submitted_by=data["submitted_by"],
            created_at=event.timestamp,
            updated_at=event.timestamp,
            started_at=None,
            finished_at=None,
            finished_reason=None,
            version=event.version,
            last_position=event.position,
        )

    def _attempt_started(
        self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]
    ) -> None:
        attempt = data["attempt"]
        if job is not None:
            job.attempt = attempt
            job.phase = STEP_PHASE[_RETRY].value
            job.step = _RETRY.value

    def _step_started(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        step, phase, worker = data["step"], data["phase"], data["worker"]
        if job is not None:
            job.status = Status.RUNNING.value
            job.phase = phase
            job.step = step
            if job.started_at is None:
                job.started_at = event.timestamp
        key = (event.job_id, step, data["attempt"])
        record = self.steps.get(key)
        if record is None:
            self.steps[key] = StepState(
                event.job_id,
                step,
                key[2],
                phase,
                event.position,
                worker=worker,
                started_at=event.timestamp,
            )
        else:
            record.phase = phase
            record.worker = worker
            record.started_at = event.timestamp

    def _step_resumed(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        step = data["step"]
        phase = phase_of(step)
        if job is not None:
            job.phase = phase
            job.step = step
        key = (event.job_id, step, data["attempt"])
        record = self.steps.get(key)
        if record is None:
            self.steps[key] = StepState(
                event.job_id, step, key[2], phase, event.position, worker=data["worker"], resumed=1
            )
        else:
            record.worker = data["worker"]
            record.resumed += 1

    def _step_finished(
        self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]
    ) -> None:
        step, outcome, summary = data["step"], data["outcome"], data["summary"]
        artifacts, details = data.get("artifacts", {}), data.get("details", {})
        key = (event.job_id, step, data["attempt"])
        record = self.steps.get(key)
        if record is None:
            self.steps[key] = StepState(
                event.job_id,
                step,
                key[2],
                data["phase"],
                event.position,
                finished_at=event.timestamp,
                outcome=outcome,
                summary=summary,
                artifacts=artifacts,
                details=details,
            )
        else:
            record.finished_at = event.timestamp
            record.outcome = outcome
            record.summary = summary
            record.artifacts = artifacts
            record.details = details
        following = next_step(step, outcome)
        if following is not None and job is not None:
            job.phase = STEP_PHASE[following].value
            job.step = following.value

    def _step_failed(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        reason = data["reason"]
        key = (event.job_id, data["step"], data["attempt"])
        record = self.steps.get(key)
        if record is None:
            self.steps[key] = StepState(
                event.job_id,
                key[1],
                key[2],
                data["phase"],
                event.position,
                finished_at=event.timestamp,
                failed_reason=reason,
            )
        else:
            record.finished_at = event.timestamp
            record.failed_reason = reason

    def _call_started(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        call = started_call(data)
        record = self.calls.get(call.key)
        if record is None:
            self.calls[call.key] = CallState(
                event.job_id,
                call.key,
                call.step,
                call.attempt,
                call.call,
                call.try_number,
                call.provider,
                call.model,
                event.position,
                reserved_usd=call.reserved_usd,
                note=call.note,
                started_at=event.timestamp,
            )
        else:
            record.provider = call.provider
            record.model = call.model
            record.reserved_usd = call.reserved_usd
            record.note = call.note
            record.started_at = event.timestamp

    def _call_finished(
        self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]
    ) -> None:
        call = finished_call(data)
        record = self.calls.get(call.key)
        if record is None:
            record = self.calls[call.key] = CallState(
                event.job_id,
                call.key,
                call.step,
                call.attempt,
                call.call,
                call.try_number,
                call.provider,
                call.model,
                event.position,
            )
        record.finished_at = event.timestamp
        record.outcome = call.outcome
        record.error = call.error
        record.input_tokens = call.input_tokens
        record.output_tokens = call.output_tokens
        record.cached_tokens = call.cached_tokens
        record.cache_write_tokens = call.cache_write_tokens
        record.cost_usd = call.cost_usd
        record.latency_ms = call.latency_ms
        record.reply = call.reply
        if job is not None:
            job.cost_usd += call.cost_usd

    def _completed(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        attempts = data["attempts"]
        if job is not None:
            # Nothing is current any more once a job is done.
            job.status = Status.COMPLETED.value
            job.phase = None
            job.step = None
            job.attempt = attempts
            job.finished_at = event.timestamp

    @staticmethod
    def _ended(status: Status) -> Rule:
        # A failed or cancelled job keeps the phase and step it stopped in.
        def rule(
            fold: Fold, job: JobState | None, event: LoggedEvent, data: dict[str, Any]
        ) -> None:
            reason = data["reason"]
            if job is not None:
                job.status = status.value
                job.finished_at = event.timestamp
                job.finished_reason = reason

        return rule


_RULES: dict[str, Rule] = {
    "AttemptStarted": Fold._attempt_started,
    "StepStarted": Fold._step_started,
    "StepResumed": Fold._step_resumed,
    "StepFinished": Fold._step_finished,
    "StepFailed": Fold._step_failed,
    "ModelCallStarted": Fold._call_started,
    "ModelCallFinished": Fold._call_finished,
    "JobCompleted": Fold._completed,
    "JobFailed": Fold._ended(Status.FAILED),
    "JobCancelled": Fold._ended(Status.CANCELLED),
}
