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

from vdo_kernel.accounts import is_account_event
from vdo_kernel.domain import ATTEMPT_START, PIPELINE, STEP_PHASE, Status
from vdo_kernel.templates import is_template_event
from vdo_projector.eventlog import LoggedEvent
from vdo_projector.updates import (
    created_token,
    finished_call,
    next_step,
    optional_text,
    phase_of,
    priority_of,
    routes_of,
    started_call,
    template_fields,
)

Row = tuple[Any, ...]

_FIRST = PIPELINE[0]


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
    priority: int
    queued_position: int | None

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
            self.priority,
            self.queued_position,
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
    cost_basis: str | None = None
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
            self.cost_basis,
            self.latency_ms,
            self.reply,
            self.first_position,
        )


@dataclass(slots=True)
class UserState:
    """One row of ``users``, in its columns' order."""

    id: UUID
    name: str
    role: str
    created_at: str
    created_by: str
    updated_at: str
    version: int
    last_position: int

    def row(self) -> Row:
        return (
            self.id,
            self.name,
            self.role,
            self.created_at,
            self.created_by,
            self.updated_at,
            self.version,
            self.last_position,
        )


@dataclass(slots=True)
class TokenState:
    """One row of ``tokens``, in its columns' order."""

    id: UUID
    token_id: str
    user_id: str
    user_name: str
    name: str
    sha256: str
    prefix: str
    created_at: str
    created_by: str
    expires_at: str | None
    last_position: int
    revoked_at: str | None = None
    revoked_by: str | None = None

    def row(self) -> Row:
        return (
            self.id,
            self.token_id,
            self.user_id,
            self.user_name,
            self.name,
            self.sha256,
            self.prefix,
            self.created_at,
            self.created_by,
            self.expires_at,
            self.revoked_at,
            self.revoked_by,
            self.last_position,
        )


@dataclass(slots=True)
class TemplateState:
    """One row of ``templates``, in its columns' order."""

    id: UUID
    name: str
    title: str
    description: str
    summary: str
    routes: Any
    max_attempts: int | None
    budget_usd: float | None
    priority: int | None
    from_job: str | None
    from_template: str | None
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str
    version: int
    last_position: int

    def row(self) -> Row:
        return (
            self.id,
            self.name,
            self.title,
            self.description,
            self.summary,
            json.dumps(self.routes),
            self.max_attempts,
            self.budget_usd,
            self.priority,
            self.from_job,
            self.from_template,
            self.created_at,
            self.created_by,
            self.updated_at,
            self.updated_by,
            self.version,
            self.last_position,
        )


StepKey = tuple[UUID, str, int]
Rule = Callable[["Fold", "JobState | None", LoggedEvent, dict[str, Any]], None]


class Fold:
    """Jobs, steps, model calls, users and tokens as the events so far leave them; each job
    event's timeline row is handed back as it is applied, so the (largest) timeline never has
    to be held."""

    def __init__(self) -> None:
        self.jobs: dict[UUID, JobState] = {}
        self.steps: dict[StepKey, StepState] = {}
        self.calls: dict[str, CallState] = {}
        self.users: dict[UUID, UserState] = {}
        self.tokens: dict[UUID, TokenState] = {}
        self.templates: dict[UUID, TemplateState] = {}

    def apply(self, event: LoggedEvent) -> Row | None:
        """Fold one event in; returns its ``timeline`` row (None for an account event, which
        the timeline does not hold)."""
        data = event.data
        if is_account_event(event.type):
            _ACCOUNT_RULES[event.type](self, event, data)
            return None
        if is_template_event(event.type):
            _TEMPLATE_RULES[event.type](self, event, data)
            return None
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

    def user_rows(self) -> Iterator[Row]:
        return (user.row() for user in self.users.values())

    def token_rows(self) -> Iterator[Row]:
        return (token.row() for token in self.tokens.values())

    def template_rows(self) -> Iterator[Row]:
        return (template.row() for template in self.templates.values())

    # ---- the templates' rules (as in `updates`) -----------------------------------------

    def _template_created(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        if event.job_id in self.templates:
            return  # as the INSERT ... ON CONFLICT DO NOTHING of `updates`
        template = template_fields(data)
        self.templates[event.job_id] = TemplateState(
            id=event.job_id,
            name=template.name,
            title=template.title,
            description=template.description,
            summary=template.summary,
            routes=template.routes,
            max_attempts=template.max_attempts,
            budget_usd=template.budget_usd,
            priority=template.priority,
            from_job=optional_text(data.get("from_job")),
            from_template=optional_text(data.get("from_template")),
            created_at=event.timestamp,
            created_by=template.by,
            updated_at=event.timestamp,
            updated_by=template.by,
            version=event.version,
            last_position=event.position,
        )

    def _template_updated(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        row = self.templates.get(event.job_id)
        if row is None:
            return
        template = template_fields(data)
        row.name = template.name
        row.title = template.title
        row.description = template.description
        row.summary = template.summary
        row.routes = template.routes
        row.max_attempts = template.max_attempts
        row.budget_usd = template.budget_usd
        row.priority = template.priority
        row.updated_at = event.timestamp
        row.updated_by = template.by
        row.version = event.version
        row.last_position = event.position

    def _template_deleted(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        self.templates.pop(event.job_id, None)

    # ---- the accounts' rules (as in `updates`) ------------------------------------------

    def _user_added(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        self.users[event.job_id] = UserState(
            id=event.job_id,
            name=data["name"],
            role=data["role"],
            created_at=event.timestamp,
            created_by=data["by"],
            updated_at=event.timestamp,
            version=event.version,
            last_position=event.position,
        )

    def _user_role_changed(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        user = self.users.get(event.job_id)
        if user is not None:
            user.role = data["role"]
            user.updated_at = event.timestamp
            user.version = event.version
            user.last_position = event.position

    def _token_created(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        token = created_token(data)
        # As the INSERT ... ON CONFLICT DO UPDATE of `updates`: a revocation already there
        # (never, in a log the rules wrote) would stay.
        previous = self.tokens.get(event.job_id)
        self.tokens[event.job_id] = TokenState(
            id=event.job_id,
            token_id=token.token_id,
            user_id=token.user_id,
            user_name=token.user_name,
            name=token.name,
            sha256=token.sha256,
            prefix=token.prefix,
            created_at=event.timestamp,
            created_by=token.by,
            expires_at=token.expires_at,
            last_position=event.position,
            revoked_at=previous.revoked_at if previous else None,
            revoked_by=previous.revoked_by if previous else None,
        )

    def _token_revoked(self, event: LoggedEvent, data: dict[str, Any]) -> None:
        token = self.tokens.get(event.job_id)
        if token is not None:
            token.revoked_at = event.timestamp
            token.revoked_by = data["by"]
            token.last_position = event.position

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
            priority=priority_of(data),
            queued_position=event.position,
        )

    def _admitted(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        step = data["step"]
        if job is not None:
            job.status = Status.RUNNING.value
            job.phase = phase_of(step)
            job.step = step
            job.queued_position = None

    def _retried(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        step = data["from_step"]
        if job is not None:
            job.status = Status.QUEUED.value
            job.phase = phase_of(step)
            job.step = step
            job.attempt = data["attempt"]
            job.max_attempts = data["max_attempts"]
            job.priority = data["priority"]
            job.queued_position = event.position
            job.finished_at = None
            job.finished_reason = None

    def _attempt_started(
        self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]
    ) -> None:
        attempt = data["attempt"]
        if job is not None:
            job.attempt = attempt
            job.phase = STEP_PHASE[ATTEMPT_START].value
            job.step = ATTEMPT_START.value

    def _step_started(self, job: JobState | None, event: LoggedEvent, data: dict[str, Any]) -> None:
        step, phase, worker = data["step"], data["phase"], data["worker"]
        if job is not None:
            job.status = Status.RUNNING.value
            job.phase = phase
            job.step = step
            if job.started_at is None:
                job.started_at = event.timestamp
            job.queued_position = None
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
        record.cost_basis = call.cost_basis
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
                job.queued_position = None

        return rule


_RULES: dict[str, Rule] = {
    "JobAdmitted": Fold._admitted,
    "JobRetried": Fold._retried,
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
AccountRule = Callable[["Fold", LoggedEvent, dict[str, Any]], None]
_TEMPLATE_RULES: dict[str, AccountRule] = {
    "TemplateCreated": Fold._template_created,
    "TemplateUpdated": Fold._template_updated,
    "TemplateDeleted": Fold._template_deleted,
}
_ACCOUNT_RULES: dict[str, AccountRule] = {
    "UserAdded": Fold._user_added,
    "UserRoleChanged": Fold._user_role_changed,
    "TokenCreated": Fold._token_created,
    "TokenRevoked": Fold._token_revoked,
}
