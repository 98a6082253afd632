"""What each stored event changes in the read models.

Every value written here comes from the event (its data, time, version and position), never
from the clock or from the rows' current state beyond what earlier events put there, so
replaying the log gives the same rows. An event type this version does not know still lands in
the timeline and moves the job's version and position; only its meaning is not projected.

The accounts' events (users and tokens) go to their own tables only: the timeline is the jobs'
history, which every reader of jobs may see, and a token's digest is for the gateway alone. The
templates' events go to their own table too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from vdo_kernel.accounts import is_account_event
from vdo_kernel.domain import (
    ATTEMPT_START,
    DEFAULT_PRIORITY,
    PIPELINE,
    STEP_PHASE,
    Outcome,
    Status,
    Step,
    step_after,
)
from vdo_kernel.store import StoredJobEvent
from vdo_kernel.templates import is_template_event

Connection = psycopg.Connection[Any]
Update = Callable[[Connection, StoredJobEvent], None]


def apply(conn: Connection, event: StoredJobEvent) -> None:
    """Project one event. The caller holds the transaction and the tracking lock."""
    event = replace(event, data=storable(event.data))
    if is_account_event(event.type):
        _ACCOUNT_UPDATES[event.type](conn, event)
        return
    if is_template_event(event.type):
        _TEMPLATE_UPDATES[event.type](conn, event)
        return
    conn.execute(
        "INSERT INTO vdo_read.timeline (position, job_id, version, type, timestamp, data) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (
            event.position,
            event.job_id,
            event.version,
            event.type,
            event.timestamp,
            Jsonb(event.data),
        ),
    )
    if event.type == "JobSubmitted":
        _submitted(conn, event)
        return
    conn.execute(
        "UPDATE vdo_read.jobs SET updated_at = %s, version = %s, last_position = %s WHERE id = %s",
        (event.timestamp, event.version, event.position, event.job_id),
    )
    update = _UPDATES.get(event.type)
    if update is not None:
        update(conn, event)


def _submitted(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    first = PIPELINE[0]
    conn.execute(
        "INSERT INTO vdo_read.jobs (id, title, description, status, phase, step, attempt, "
        "max_attempts, budget_usd, routes, submitted_by, created_at, updated_at, version, "
        "last_position, priority, queued_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            event.job_id,
            data["title"],
            data["description"],
            Status.QUEUED.value,
            STEP_PHASE[first].value,
            first.value,
            data["max_attempts"],
            float(data["budget_usd"]),
            Jsonb(routes_of(data)),
            data["submitted_by"],
            event.timestamp,
            event.timestamp,
            event.version,
            event.position,
            priority_of(data),
            event.position,
        ),
    )


def _admitted(conn: Connection, event: StoredJobEvent) -> None:
    # Out of the queue; the step it names is the one due now.
    step = event.data["step"]
    conn.execute(
        "UPDATE vdo_read.jobs SET status = %s, phase = %s, step = %s, queued_position = NULL "
        "WHERE id = %s",
        (Status.RUNNING.value, phase_of(step), step, event.job_id),
    )


def _retried(conn: Connection, event: StoredJobEvent) -> None:
    # Back in the queue, at the end of its priority's line, no longer ended.
    data = event.data
    step = data["from_step"]
    conn.execute(
        "UPDATE vdo_read.jobs SET status = %s, phase = %s, step = %s, attempt = %s, "
        "max_attempts = %s, priority = %s, queued_position = %s, finished_at = NULL, "
        "finished_reason = NULL WHERE id = %s",
        (
            Status.QUEUED.value,
            phase_of(step),
            step,
            data["attempt"],
            data["max_attempts"],
            data["priority"],
            event.position,
            event.job_id,
        ),
    )


def _attempt_started(conn: Connection, event: StoredJobEvent) -> None:
    first = ATTEMPT_START
    conn.execute(
        "UPDATE vdo_read.jobs SET attempt = %s, phase = %s, step = %s WHERE id = %s",
        (event.data["attempt"], STEP_PHASE[first].value, first.value, event.job_id),
    )


def _step_started(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    conn.execute(
        # (A step's start counts as an admission, `ADMITTING_EVENTS`: a job submitted before
        # the queue existed leaves it so.)
        "UPDATE vdo_read.jobs SET status = %s, phase = %s, step = %s, "
        "started_at = COALESCE(started_at, %s), queued_position = NULL WHERE id = %s",
        (Status.RUNNING.value, data["phase"], data["step"], event.timestamp, event.job_id),
    )
    conn.execute(
        "INSERT INTO vdo_read.steps "
        "(job_id, step, attempt, phase, worker, started_at, first_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (job_id, step, attempt) DO UPDATE SET "
        "phase = EXCLUDED.phase, worker = EXCLUDED.worker, started_at = EXCLUDED.started_at",
        (
            event.job_id,
            data["step"],
            data["attempt"],
            data["phase"],
            data["worker"],
            event.timestamp,
            event.position,
        ),
    )


def _step_resumed(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    phase = phase_of(data["step"])
    conn.execute(
        "UPDATE vdo_read.jobs SET phase = %s, step = %s WHERE id = %s",
        (phase, data["step"], event.job_id),
    )
    conn.execute(
        "INSERT INTO vdo_read.steps (job_id, step, attempt, phase, worker, resumed, "
        "first_position) VALUES (%s, %s, %s, %s, %s, 1, %s) "
        "ON CONFLICT (job_id, step, attempt) DO UPDATE SET "
        "worker = EXCLUDED.worker, resumed = vdo_read.steps.resumed + 1",
        (event.job_id, data["step"], data["attempt"], phase, data["worker"], event.position),
    )


def _step_finished(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    conn.execute(
        "INSERT INTO vdo_read.steps (job_id, step, attempt, phase, finished_at, outcome, "
        "summary, artifacts, details, first_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (job_id, step, attempt) DO UPDATE SET "
        "finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, "
        "summary = EXCLUDED.summary, artifacts = EXCLUDED.artifacts, details = EXCLUDED.details",
        (
            event.job_id,
            data["step"],
            data["attempt"],
            data["phase"],
            event.timestamp,
            data["outcome"],
            data["summary"],
            Jsonb(data.get("artifacts", {})),
            Jsonb(data.get("details", {})),
            event.position,
        ),
    )
    following = next_step(data["step"], data["outcome"])
    if following is not None:
        conn.execute(
            "UPDATE vdo_read.jobs SET phase = %s, step = %s WHERE id = %s",
            (STEP_PHASE[following].value, following.value, event.job_id),
        )


def _step_failed(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    conn.execute(
        "INSERT INTO vdo_read.steps "
        "(job_id, step, attempt, phase, finished_at, failed_reason, first_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (job_id, step, attempt) DO UPDATE SET "
        "finished_at = EXCLUDED.finished_at, failed_reason = EXCLUDED.failed_reason",
        (
            event.job_id,
            data["step"],
            data["attempt"],
            data["phase"],
            event.timestamp,
            data["reason"],
            event.position,
        ),
    )


def _call_started(conn: Connection, event: StoredJobEvent) -> None:
    call = started_call(event.data)
    conn.execute(
        "INSERT INTO vdo_read.model_calls (job_id, key, step, attempt, call, try_number, "
        "provider, model, reserved_usd, note, started_at, first_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (key) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model, "
        "reserved_usd = EXCLUDED.reserved_usd, note = EXCLUDED.note, "
        "started_at = EXCLUDED.started_at",
        (
            event.job_id,
            call.key,
            call.step,
            call.attempt,
            call.call,
            call.try_number,
            call.provider,
            call.model,
            call.reserved_usd,
            call.note,
            event.timestamp,
            event.position,
        ),
    )


def _call_finished(conn: Connection, event: StoredJobEvent) -> None:
    call = finished_call(event.data)
    conn.execute(
        "INSERT INTO vdo_read.model_calls (job_id, key, step, attempt, call, try_number, "
        "provider, model, finished_at, outcome, error, input_tokens, output_tokens, "
        "cached_tokens, cache_write_tokens, cost_usd, cost_basis, latency_ms, reply, "
        "first_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (key) DO UPDATE SET finished_at = EXCLUDED.finished_at, "
        "outcome = EXCLUDED.outcome, error = EXCLUDED.error, "
        "input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens, "
        "cached_tokens = EXCLUDED.cached_tokens, "
        "cache_write_tokens = EXCLUDED.cache_write_tokens, cost_usd = EXCLUDED.cost_usd, "
        "cost_basis = EXCLUDED.cost_basis, latency_ms = EXCLUDED.latency_ms, "
        "reply = EXCLUDED.reply",
        (
            event.job_id,
            call.key,
            call.step,
            call.attempt,
            call.call,
            call.try_number,
            call.provider,
            call.model,
            event.timestamp,
            call.outcome,
            call.error,
            call.input_tokens,
            call.output_tokens,
            call.cached_tokens,
            call.cache_write_tokens,
            call.cost_usd,
            call.cost_basis,
            call.latency_ms,
            call.reply,
            event.position,
        ),
    )
    # What the job has spent: every finished try, whatever its outcome, in log order.
    conn.execute(
        "UPDATE vdo_read.jobs SET cost_usd = cost_usd + %s WHERE id = %s",
        (call.cost_usd, event.job_id),
    )


def _completed(conn: Connection, event: StoredJobEvent) -> None:
    # Nothing is current any more once a job is done.
    conn.execute(
        "UPDATE vdo_read.jobs SET status = %s, phase = NULL, step = NULL, attempt = %s, "
        "finished_at = %s WHERE id = %s",
        (Status.COMPLETED.value, event.data["attempts"], event.timestamp, event.job_id),
    )


def _ended(status: Status) -> Update:
    # A failed or cancelled job keeps the phase and step it stopped in: that is where to look.
    def update(conn: Connection, event: StoredJobEvent) -> None:
        conn.execute(
            "UPDATE vdo_read.jobs SET status = %s, finished_at = %s, finished_reason = %s, "
            "queued_position = NULL WHERE id = %s",
            (status.value, event.timestamp, event.data["reason"], event.job_id),
        )

    return update


# ---- accounts -------------------------------------------------------------------------------


def _user_added(conn: Connection, event: StoredJobEvent) -> None:
    data = event.data
    conn.execute(
        "INSERT INTO vdo_read.users (id, name, role, created_at, created_by, updated_at, "
        "version, last_position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, "
        "created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by, "
        "updated_at = EXCLUDED.updated_at, version = EXCLUDED.version, "
        "last_position = EXCLUDED.last_position",
        (
            event.job_id,
            data["name"],
            data["role"],
            event.timestamp,
            data["by"],
            event.timestamp,
            event.version,
            event.position,
        ),
    )


def _user_role_changed(conn: Connection, event: StoredJobEvent) -> None:
    conn.execute(
        "UPDATE vdo_read.users SET role = %s, updated_at = %s, version = %s, last_position = %s "
        "WHERE id = %s",
        (event.data["role"], event.timestamp, event.version, event.position, event.job_id),
    )


def _token_created(conn: Connection, event: StoredJobEvent) -> None:
    token = created_token(event.data)
    conn.execute(
        "INSERT INTO vdo_read.tokens (id, token_id, user_id, user_name, name, sha256, prefix, "
        "created_at, created_by, expires_at, last_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET token_id = EXCLUDED.token_id, "
        "user_id = EXCLUDED.user_id, user_name = EXCLUDED.user_name, name = EXCLUDED.name, "
        "sha256 = EXCLUDED.sha256, prefix = EXCLUDED.prefix, created_at = EXCLUDED.created_at, "
        "created_by = EXCLUDED.created_by, expires_at = EXCLUDED.expires_at, "
        "last_position = EXCLUDED.last_position",
        (
            event.job_id,
            token.token_id,
            token.user_id,
            token.user_name,
            token.name,
            token.sha256,
            token.prefix,
            event.timestamp,
            token.by,
            token.expires_at,
            event.position,
        ),
    )


def _token_revoked(conn: Connection, event: StoredJobEvent) -> None:
    conn.execute(
        "UPDATE vdo_read.tokens SET revoked_at = %s, revoked_by = %s, last_position = %s "
        "WHERE id = %s",
        (event.timestamp, event.data["by"], event.position, event.job_id),
    )


# ---- templates ------------------------------------------------------------------------------


def _template_created(conn: Connection, event: StoredJobEvent) -> None:
    template = template_fields(event.data)
    conn.execute(
        "INSERT INTO vdo_read.templates (id, name, title, description, summary, routes, "
        "max_attempts, budget_usd, priority, from_job, from_template, created_at, created_by, "
        "updated_at, updated_by, version, last_position) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        (
            event.job_id,
            template.name,
            template.title,
            template.description,
            template.summary,
            Jsonb(template.routes),
            template.max_attempts,
            template.budget_usd,
            template.priority,
            optional_text(event.data.get("from_job")),
            optional_text(event.data.get("from_template")),
            event.timestamp,
            template.by,
            event.timestamp,
            template.by,
            event.version,
            event.position,
        ),
    )


def _template_updated(conn: Connection, event: StoredJobEvent) -> None:
    template = template_fields(event.data)
    conn.execute(
        "UPDATE vdo_read.templates SET name = %s, title = %s, description = %s, summary = %s, "
        "routes = %s, max_attempts = %s, budget_usd = %s, priority = %s, updated_at = %s, "
        "updated_by = %s, "
        "version = %s, last_position = %s WHERE id = %s",
        (
            template.name,
            template.title,
            template.description,
            template.summary,
            Jsonb(template.routes),
            template.max_attempts,
            template.budget_usd,
            template.priority,
            event.timestamp,
            template.by,
            event.version,
            event.position,
            event.job_id,
        ),
    )


def _template_deleted(conn: Connection, event: StoredJobEvent) -> None:
    # A deleted template is no longer listed, and its name is free again; its history stays.
    conn.execute("DELETE FROM vdo_read.templates WHERE id = %s", (event.job_id,))


class TemplateFields(NamedTuple):
    """The fields of a ``TemplateCreated`` or ``TemplateUpdated`` as the read models hold
    them."""

    name: str
    title: str
    description: str
    summary: str
    routes: dict[str, Any]
    max_attempts: int | None
    budget_usd: float | None
    priority: int | None
    by: str


def template_fields(data: dict[str, Any]) -> TemplateFields:
    attempts, budget, priority = (
        data.get("max_attempts"),
        data.get("budget_usd"),
        data.get("priority"),
    )
    return TemplateFields(
        name=str(data["name"]),
        title=str(data["title"]),
        description=str(data["description"]),
        summary=str(data.get("summary", "")),
        routes=routes_of(data),
        max_attempts=int(attempts) if attempts is not None else None,
        budget_usd=float(budget) if budget is not None else None,
        priority=int(priority) if priority is not None else None,
        by=str(data["by"]),
    )


def optional_text(value: Any) -> str | None:
    return str(value) if value is not None else None


class CreatedToken(NamedTuple):
    """The fields of a ``TokenCreated`` as the read models hold them."""

    token_id: str
    user_id: str
    user_name: str
    name: str
    sha256: str
    prefix: str
    by: str
    expires_at: str | None


def created_token(data: dict[str, Any]) -> CreatedToken:
    expires = data.get("expires_at")
    return CreatedToken(
        token_id=str(data["token_id"]),
        user_id=str(data["user_id"]),
        user_name=str(data["user_name"]),
        name=str(data["name"]),
        sha256=str(data["sha256"]),
        prefix=str(data["prefix"]),
        by=str(data["by"]),
        expires_at=str(expires) if expires else None,
    )


def storable(value: Any) -> Any:
    """The value with NUL characters and unpaired surrogates replaced: PostgreSQL text and
    jsonb cannot hold them, and one such event must not stop the projection for ever. The
    replacement is deterministic, so a replay writes the same rows."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def priority_of(data: dict[str, Any]) -> int:
    """A submission's priority (none in a version 1 or 2 event, which the store upcasts)."""
    priority = data.get("priority")
    return priority if isinstance(priority, int) else DEFAULT_PRIORITY


def routes_of(data: dict[str, Any]) -> dict[str, Any]:
    """A submission's model routes (none in a version 1 event, which the store upcasts)."""
    routes = data.get("routes")
    return routes if isinstance(routes, dict) else {}


class StartedCall(NamedTuple):
    """The fields of a ``ModelCallStarted`` as the read models hold them."""

    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    provider: str
    model: str
    reserved_usd: float
    note: str


class FinishedCall(NamedTuple):
    """The fields of a ``ModelCallFinished`` as the read models hold them."""

    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    provider: str
    model: str
    outcome: str
    error: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    cost_usd: float
    cost_basis: str
    latency_ms: float
    reply: str


def started_call(data: dict[str, Any]) -> StartedCall:
    return StartedCall(
        key=str(data["key"]),
        step=str(data["step"]),
        attempt=int(data["attempt"]),
        call=int(data["call"]),
        try_number=int(data["try_number"]),
        provider=str(data["provider"]),
        model=str(data["model"]),
        reserved_usd=float(data.get("reserved_usd", 0.0)),
        note=str(data.get("note", "")),
    )


def finished_call(data: dict[str, Any]) -> FinishedCall:
    return FinishedCall(
        key=str(data["key"]),
        step=str(data["step"]),
        attempt=int(data["attempt"]),
        call=int(data["call"]),
        try_number=int(data["try_number"]),
        provider=str(data["provider"]),
        model=str(data["model"]),
        outcome=str(data["outcome"]),
        error=str(data.get("error", "")),
        input_tokens=int(data.get("input_tokens", 0)),
        output_tokens=int(data.get("output_tokens", 0)),
        cached_tokens=int(data.get("cached_tokens", 0)),
        cache_write_tokens=int(data.get("cache_write_tokens", 0)),
        cost_usd=float(data.get("cost_usd", 0.0)),
        cost_basis=str(data.get("cost_basis", "reported")),
        latency_ms=float(data.get("latency_ms", 0.0)),
        reply=str(data.get("reply", "")),
    )


def phase_of(step: str) -> str | None:
    try:
        return STEP_PHASE[Step(step)].value
    except ValueError:
        return None


def next_step(step: str, outcome: str) -> Step | None:
    """The step due after this one finished, as the rules would have it (`step_after`); None
    when the job's next event (a new attempt, or its end) decides instead, or when the step or
    outcome is not one this version knows."""
    try:
        done, verdict = Step(step), Outcome(outcome)
    except ValueError:
        return None
    return step_after(done, verdict)


_UPDATES: dict[str, Update] = {
    "JobAdmitted": _admitted,
    "JobRetried": _retried,
    "AttemptStarted": _attempt_started,
    "StepStarted": _step_started,
    "StepResumed": _step_resumed,
    "StepFinished": _step_finished,
    "StepFailed": _step_failed,
    "ModelCallStarted": _call_started,
    "ModelCallFinished": _call_finished,
    "JobCompleted": _completed,
    "JobFailed": _ended(Status.FAILED),
    "JobCancelled": _ended(Status.CANCELLED),
}
_TEMPLATE_UPDATES: dict[str, Update] = {
    "TemplateCreated": _template_created,
    "TemplateUpdated": _template_updated,
    "TemplateDeleted": _template_deleted,
}
_ACCOUNT_UPDATES: dict[str, Update] = {
    "UserAdded": _user_added,
    "UserRoleChanged": _user_role_changed,
    "TokenCreated": _token_created,
    "TokenRevoked": _token_revoked,
}
