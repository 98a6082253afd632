"""The read models' schema and queries: the contract between the projector (writer) and the
gateway (reader).

The tables live in their own schema, ``vdo_read``, so they can be dropped and rebuilt from the
event log without touching the store. Every value in them is derived from events alone (times
are the events' times, never the clock's), so a replay gives the same rows, bit for bit; the
checksums below are how that is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from vdo_kernel.domain import Phase, Status

SCHEMA: Final = "vdo_read"
# The projector's row in the tracking table; a second replica locks the same row.
PROJECTOR: Final = "projector"
# The read-model tables (the tracking and schema_version tables are bookkeeping, not read
# models).
TABLES: Final = ("jobs", "steps", "model_calls", "timeline", "users", "tokens", "templates")
# The shape of the tables below. Read models are disposable, so a change of shape is not
# migrated in place: read models of another version are dropped and replayed from the log
# (the projector does it when it starts: `vdo_projector.projection.prepare`). Version 1 had no
# schema_version table; version 2 added model_calls and the jobs' cost_usd and routes;
# version 3 added users and tokens (and left the accounts' events out of the timeline);
# version 4 added templates; version 5 added the queue (the jobs' priority and queued_position);
# version 6 added the model calls' cost_basis.
SCHEMA_VERSION: Final = 6

_DDL: Final = """
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version integer NOT NULL
);
INSERT INTO {schema}.schema_version (version) VALUES ({version}) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS {schema}.jobs (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    description text NOT NULL,
    status text NOT NULL,
    phase text,
    step text,
    attempt integer NOT NULL,
    max_attempts integer NOT NULL,
    budget_usd double precision NOT NULL,
    cost_usd double precision NOT NULL DEFAULT 0,
    routes jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    submitted_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    finished_reason text,
    version integer NOT NULL,
    last_position bigint NOT NULL,
    -- The queue: higher priorities first, then by the position of the event that queued the
    -- job (its submission or its last retry); queued_position is null when it is not queued.
    priority integer NOT NULL,
    queued_position bigint
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON {schema}.jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON {schema}.jobs (status);
CREATE INDEX IF NOT EXISTS jobs_queue ON {schema}.jobs (priority DESC, queued_position)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_submitted_by
    ON {schema}.jobs (submitted_by, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS {schema}.steps (
    job_id uuid NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    phase text,
    worker text,
    started_at timestamptz,
    finished_at timestamptz,
    outcome text,
    summary text,
    artifacts jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    details jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    failed_reason text,
    resumed integer NOT NULL DEFAULT 0,
    first_position bigint NOT NULL,
    PRIMARY KEY (job_id, step, attempt)
);

-- One row per try of a model call (a retry or a fallback is another try of the same call).
CREATE TABLE IF NOT EXISTS {schema}.model_calls (
    job_id uuid NOT NULL,
    key text PRIMARY KEY,
    step text NOT NULL,
    attempt integer NOT NULL,
    call integer NOT NULL,
    try_number integer NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    reserved_usd double precision NOT NULL DEFAULT 0,
    note text NOT NULL DEFAULT '',
    started_at timestamptz,
    finished_at timestamptz,
    outcome text,
    error text,
    input_tokens bigint,
    output_tokens bigint,
    cached_tokens bigint,
    cache_write_tokens bigint,
    cost_usd double precision,
    cost_basis text,
    latency_ms double precision,
    reply text,
    first_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS model_calls_job ON {schema}.model_calls (job_id, first_position);
CREATE INDEX IF NOT EXISTS model_calls_finished_at ON {schema}.model_calls (finished_at);

CREATE TABLE IF NOT EXISTS {schema}.timeline (
    position bigint PRIMARY KEY,
    job_id uuid NOT NULL,
    version integer NOT NULL,
    type text NOT NULL,
    timestamp timestamptz NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_job ON {schema}.timeline (job_id, position);

-- The accounts: one row per user, one per token (its digest, never the token).
CREATE TABLE IF NOT EXISTS {schema}.users (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    last_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS users_name ON {schema}.users (name);

CREATE TABLE IF NOT EXISTS {schema}.tokens (
    id uuid PRIMARY KEY,
    token_id text NOT NULL,
    user_id uuid NOT NULL,
    user_name text NOT NULL,
    name text NOT NULL,
    sha256 text NOT NULL,
    prefix text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    revoked_by text,
    last_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_created_at ON {schema}.tokens (created_at, id);

-- The users' job templates (the built-in ones are the gateway's, in code): one row per
-- template that is not deleted.
CREATE TABLE IF NOT EXISTS {schema}.templates (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    title text NOT NULL,
    description text NOT NULL,
    summary text NOT NULL,
    routes jsonb NOT NULL,
    max_attempts integer,
    budget_usd double precision,
    priority integer,
    from_job text,
    from_template text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    version integer NOT NULL,
    last_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_name ON {schema}.templates (name, id);

INSERT INTO {schema}.tracking (name, position) VALUES ({projector}, 0)
ON CONFLICT (name) DO NOTHING;
"""

# Each read-model table's primary key: the order rows are hashed in (so the hash does not depend
# on storage order) and what names a row that differs.
PRIMARY_KEYS: Final = {
    "jobs": ("id",),
    "steps": ("job_id", "step", "attempt"),
    "model_calls": ("key",),
    "timeline": ("position",),
    "users": ("id",),
    "tokens": ("id",),
    "templates": ("id",),
}


# ---- schema ----------------------------------------------------------------------------------


class OutdatedReadModelsError(RuntimeError):
    """The schema holds read models of another version than this code's: they are rebuilt
    from the log (a newer version's are left to the newer code), never altered in place."""

    def __init__(self, schema: str, version: int) -> None:
        remedy = (
            "the projector rebuilds them from the log when it starts (or run "
            "`vdo projections rebuild`)"
            if version < SCHEMA_VERSION
            else "a newer version made them"
        )
        super().__init__(
            f"the read models in schema {schema} are of version {version}, this code's are of "
            f"version {SCHEMA_VERSION}: {remedy}"
        )
        self.schema = schema
        self.version = version


def ddl(schema: str = SCHEMA) -> sql.Composed:
    """The statements that create the read models in a schema (another one than ``vdo_read``
    holds a copy built aside, to be compared with the live one)."""
    return sql.SQL(_DDL).format(
        schema=sql.Identifier(schema),
        projector=sql.Literal(PROJECTOR),
        version=sql.Literal(SCHEMA_VERSION),
    )


def create_schema(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> None:
    """Create the read models if they are missing (idempotent; safe from every replica).

    Raises `OutdatedReadModelsError`, changing nothing, when the schema holds read models of
    another version: those are replaced by a replay of the log, not altered (the projector
    does it when it starts), so that they stay exactly what a replay gives.
    """
    with conn.transaction():
        # Two processes creating the schema at once would race on the catalog; serialise them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        version = schema_version(conn, schema)
        if version == SCHEMA_VERSION:
            # Already there (the DDL ran in one transaction: all of it or none). Running it
            # again would take table locks that deadlock with a replica in mid-batch.
            return
        if version is not None:
            raise OutdatedReadModelsError(schema, version)
        conn.execute(ddl(schema))


def schema_version(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> int | None:
    """The version of the read models in a schema: None when there are none, 1 for read models
    made before versions were recorded."""
    if not exists(conn, schema):
        return None
    row = conn.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (schema,)
    ).fetchone()
    if not (row and row[0]):
        return 1
    row = conn.execute(
        sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema))
    ).fetchone()
    return int(row[0]) if row else 1


def drop_schema(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def exists(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.tracking', %s::text)) IS NOT NULL", (schema,)
    ).fetchone()
    return bool(row and row[0])


def pin_text_form(conn: psycopg.Connection[Any]) -> None:
    """Pin, for the current transaction, the session settings that rows' text form depends on,
    so two databases (or two schemas) holding the same rows print them the same way."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    conn.execute("SET LOCAL IntervalStyle = 'iso_8601'")
    conn.execute("SET LOCAL extra_float_digits = 1")


# ---- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
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
    routes: dict[str, list[str]]
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    finished_reason: str | None
    version: int
    last_position: int
    priority: int
    queued_position: int | None
    # Not a column: the job's place in the queue (1 is next), when it is queued and asked for.
    queue_position: int | None = None


@dataclass(frozen=True)
class StepRow:
    job_id: UUID
    step: str
    attempt: int
    phase: str | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    summary: str | None
    artifacts: dict[str, Any]
    details: dict[str, Any]
    failed_reason: str | None
    resumed: int
    first_position: int


@dataclass(frozen=True)
class ModelCallRow:
    """One try of one model call; the result columns are None while it runs (or when it was
    interrupted and never finished)."""

    job_id: UUID
    key: str
    step: str
    attempt: int
    call: int
    try_number: int
    provider: str
    model: str
    reserved_usd: float
    note: str
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    cost_usd: float | None
    cost_basis: str | None
    latency_ms: float | None
    reply: str | None
    first_position: int


@dataclass(frozen=True)
class CallsSummary:
    """A job's model calls in figures (each try counts as a call)."""

    count: int
    # Started and not finished: running now, or interrupted.
    open: int
    # Finished with another outcome than ok.
    failed: int
    cost_usd: float
    # What the open calls hold of the budget.
    held_usd: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True)
class TimelineRow:
    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class UserRow:
    id: UUID
    name: str
    role: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    version: int
    last_position: int


@dataclass(frozen=True)
class TokenRow:
    id: UUID
    token_id: str
    user_id: UUID
    user_name: str
    name: str
    sha256: str
    prefix: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_position: int


@dataclass(frozen=True)
class Credential:
    """A token as authentication needs it: the token's row and its user's role (None when the
    user is missing), with the position the read models reflect."""

    token: TokenRow | None
    role: str | None
    projected: int


@dataclass(frozen=True)
class DayCost:
    day: date
    calls: int
    cost_usd: float


@dataclass(frozen=True)
class ModelCost:
    provider: str
    model: str
    calls: int
    failed: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    total_jobs: int
    mean_completed_seconds: float | None
    total_cost_usd: float = 0.0
    cost_by_day: list[DayCost] = field(default_factory=list)
    cost_by_model: list[ModelCost] = field(default_factory=list)


@dataclass(frozen=True)
class PhaseDuration:
    """How long a phase's steps took (from their start to their result), in seconds."""

    phase: str
    steps: int
    mean_seconds: float
    p50_seconds: float
    p95_seconds: float
    max_seconds: float


@dataclass(frozen=True)
class DayJobs:
    """One UTC day: the jobs submitted that day, and those that ended that day, by how."""

    day: date
    submitted: int
    completed: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class FlowStats:
    """How jobs flow: how many of those that ended completed, how long each phase takes, and
    jobs per day."""

    ended: int
    completed: int
    # completed / ended; None before any job ended.
    success_rate: float | None
    phase_durations: list[PhaseDuration]
    jobs_by_day: list[DayJobs]


@dataclass(frozen=True)
class TemplateRow:
    id: UUID
    name: str
    title: str
    description: str
    summary: str
    routes: dict[str, list[str]]
    max_attempts: int | None
    budget_usd: float | None
    priority: int | None
    from_job: str | None
    from_template: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    version: int
    last_position: int


# ---- queries ---------------------------------------------------------------------------------


def projector_position(conn: psycopg.Connection[Any]) -> int:
    """The last store position the read models reflect (0 when nothing is projected yet)."""
    row = conn.execute(
        "SELECT position FROM vdo_read.tracking WHERE name = %s", (PROJECTOR,)
    ).fetchone()
    return int(row[0]) if row else 0


# Each queued job's place in the queue (1 is next), among every queued job whoever submitted it:
# the highest priority first, then the first queued (as the scheduler admits them).
_QUEUE: Final = sql.SQL(
    "SELECT id, row_number() OVER (ORDER BY priority DESC, queued_position, id) "
    "AS queue_position FROM vdo_read.jobs WHERE status = 'queued'"
)
_JOBS_WHERE: Final = sql.SQL(
    "(%(status)s::text IS NULL OR status = %(status)s) "
    "AND (%(by)s::text IS NULL OR submitted_by = %(by)s) "
    "AND (%(owner)s::text IS NULL OR submitted_by = %(owner)s) "
    "AND (%(text)s::text IS NULL OR strpos(lower(title), lower(%(text)s)) > 0 "
    "OR strpos(lower(description), lower(%(text)s)) > 0)"
)


def list_jobs(
    conn: psycopg.Connection[Any],
    *,
    limit: int,
    offset: int,
    status: str | None = None,
    submitted_by: str | None = None,
    owner: str | None = None,
    text: str | None = None,
) -> tuple[list[JobRow], int]:
    """One page of jobs, newest first (the queued ones in the order they are to run, when only
    they are asked for), and how many there are in all (of that status, and submitted by that
    user, when given). Each queued job comes with its place in the whole queue."""
    params = {
        "status": status,
        "by": submitted_by,
        "owner": owner,
        "text": text,
        "limit": limit,
        "offset": offset,
    }
    order = sql.SQL(
        "q.queue_position" if status == Status.QUEUED.value else "created_at DESC, id DESC"
    )
    with conn.cursor(row_factory=class_row(JobRow)) as cur:
        cur.execute(
            sql.SQL(
                "SELECT j.*, q.queue_position FROM vdo_read.jobs AS j "
                "LEFT JOIN ({queue}) AS q USING (id) WHERE {where} "
                "ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
            ).format(queue=_QUEUE, where=_JOBS_WHERE, order=order),
            params,
        )
        rows = cur.fetchall()
    total = conn.execute(
        sql.SQL("SELECT count(*) FROM vdo_read.jobs WHERE {}").format(_JOBS_WHERE), params
    ).fetchone()
    return rows, int(total[0]) if total else 0


def get_job(conn: psycopg.Connection[Any], job_id: UUID) -> JobRow | None:
    """The job, with its place in the queue when it is queued."""
    with conn.cursor(row_factory=class_row(JobRow)) as cur:
        cur.execute(
            "SELECT j.*, CASE WHEN j.status = 'queued' THEN ("
            "SELECT count(*) FROM vdo_read.jobs AS q WHERE q.status = 'queued' "
            "AND (q.priority > j.priority OR (q.priority = j.priority "
            "AND (q.queued_position, q.id) <= (j.queued_position, j.id)))"
            ") END AS queue_position FROM vdo_read.jobs AS j WHERE j.id = %s",
            (job_id,),
        )
        return cur.fetchone()


def queued_ahead(conn: psycopg.Connection[Any], priority: int) -> int:
    """How many queued jobs a job queued now with this priority would wait behind."""
    row = conn.execute(
        "SELECT count(*) FROM vdo_read.jobs WHERE status = 'queued' AND priority >= %s",
        (priority,),
    ).fetchone()
    return int(row[0]) if row else 0


def job_steps(conn: psycopg.Connection[Any], job_id: UUID) -> list[StepRow]:
    """A job's steps in the order they were first started."""
    with conn.cursor(row_factory=class_row(StepRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.steps WHERE job_id = %s ORDER BY first_position", (job_id,)
        )
        return cur.fetchall()


def job_calls(
    conn: psycopg.Connection[Any], job_id: UUID, *, limit: int = 500, offset: int = 0
) -> tuple[list[ModelCallRow], int]:
    """One page of a job's model calls in the order they were started, and how many there
    are in all."""
    with conn.cursor(row_factory=class_row(ModelCallRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.model_calls WHERE job_id = %s "
            "ORDER BY first_position LIMIT %s OFFSET %s",
            (job_id, limit, offset),
        )
        rows = cur.fetchall()
    total = conn.execute(
        "SELECT count(*) FROM vdo_read.model_calls WHERE job_id = %s", (job_id,)
    ).fetchone()
    return rows, int(total[0]) if total else 0


def calls_summary(conn: psycopg.Connection[Any], job_id: UUID) -> CallsSummary:
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL), "
        "count(*) FILTER (WHERE outcome IS NOT NULL AND outcome <> 'ok'), "
        "coalesce(sum(cost_usd), 0), "
        "coalesce(sum(reserved_usd) FILTER (WHERE finished_at IS NULL), 0), "
        "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "coalesce(sum(cached_tokens), 0), coalesce(sum(cache_write_tokens), 0) "
        "FROM vdo_read.model_calls WHERE job_id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return CallsSummary(
        count=int(row[0]),
        open=int(row[1]),
        failed=int(row[2]),
        cost_usd=float(row[3]),
        held_usd=float(row[4]),
        input_tokens=int(row[5]),
        output_tokens=int(row[6]),
        cached_tokens=int(row[7]),
        cache_write_tokens=int(row[8]),
    )


def timeline(
    conn: psycopg.Connection[Any],
    *,
    job_id: UUID | None = None,
    after: int = 0,
    limit: int = 500,
) -> list[TimelineRow]:
    """Projected events after a position, in order (all jobs', or one job's)."""
    with conn.cursor(row_factory=class_row(TimelineRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.timeline "
            "WHERE position > %(after)s AND (%(job)s::uuid IS NULL OR job_id = %(job)s) "
            "ORDER BY position LIMIT %(limit)s",
            {"after": after, "job": job_id, "limit": limit},
        )
        return cur.fetchall()


def stats(
    conn: psycopg.Connection[Any], *, days: int = 30, submitted_by: str | None = None
) -> Stats:
    """Jobs by status, the mean time to completion, and what the finished model calls cost:
    in all, per UTC day (the ``days`` most recent days with calls, oldest first) and per
    model. With ``submitted_by``, of that user's jobs only."""
    by = {"by": submitted_by, "days": days, "completed": Status.COMPLETED.value}
    counts = {status.value: 0 for status in Status}
    rows = conn.execute(
        "SELECT status, count(*) FROM vdo_read.jobs "
        "WHERE %(by)s::text IS NULL OR submitted_by = %(by)s GROUP BY status",
        by,
    ).fetchall()
    for status, count in rows:
        counts[str(status)] = int(count)
    row = conn.execute(
        "SELECT avg(extract(epoch FROM finished_at - created_at)) "
        "FROM vdo_read.jobs WHERE status = %(completed)s "
        "AND (%(by)s::text IS NULL OR submitted_by = %(by)s)",
        by,
    ).fetchone()
    mean = float(row[0]) if row and row[0] is not None else None
    # The finished calls (of the user's jobs, when asked).
    calls = sql.SQL(
        "finished_at IS NOT NULL AND (%(by)s::text IS NULL OR job_id IN "
        "(SELECT id FROM vdo_read.jobs WHERE submitted_by = %(by)s))"
    )
    total = conn.execute(
        sql.SQL("SELECT coalesce(sum(cost_usd), 0) FROM vdo_read.model_calls WHERE {}").format(
            calls
        ),
        by,
    ).fetchone()
    by_day = conn.execute(
        sql.SQL(
            "SELECT day, calls, cost FROM ("
            "SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls, "
            "coalesce(sum(cost_usd), 0) AS cost FROM vdo_read.model_calls "
            "WHERE {} GROUP BY 1 ORDER BY 1 DESC LIMIT %(days)s"
            ") AS recent ORDER BY day"
        ).format(calls),
        by,
    ).fetchall()
    by_model = conn.execute(
        sql.SQL(
            "SELECT provider, model, count(*), count(*) FILTER (WHERE outcome <> 'ok'), "
            "coalesce(sum(cost_usd), 0), coalesce(sum(input_tokens), 0), "
            "coalesce(sum(output_tokens), 0), coalesce(sum(cached_tokens), 0), "
            "coalesce(sum(cache_write_tokens), 0) "
            "FROM vdo_read.model_calls WHERE {} "
            "GROUP BY provider, model ORDER BY 5 DESC, provider, model"
        ).format(calls),
        by,
    ).fetchall()
    return Stats(
        by_status=counts,
        total_jobs=sum(counts.values()),
        mean_completed_seconds=mean,
        total_cost_usd=float(total[0]) if total else 0.0,
        cost_by_day=[DayCost(day=d, calls=int(n), cost_usd=float(c)) for d, n, c in by_day],
        cost_by_model=[
            ModelCost(
                provider=str(r[0]),
                model=str(r[1]),
                calls=int(r[2]),
                failed=int(r[3]),
                cost_usd=float(r[4]),
                input_tokens=int(r[5]),
                output_tokens=int(r[6]),
                cached_tokens=int(r[7]),
                cache_write_tokens=int(r[8]),
            )
            for r in by_model
        ],
    )


def flow_stats(
    conn: psycopg.Connection[Any], *, days: int = 30, submitted_by: str | None = None
) -> FlowStats:
    """The success rate (completed of ended jobs), the duration of each phase's steps (mean,
    median, 95th percentile, longest), and jobs submitted and ended per UTC day (the ``days``
    most recent days with any, oldest first). With ``submitted_by``, of that user's jobs."""
    by = {"by": submitted_by, "days": days}
    mine = sql.SQL("(%(by)s::text IS NULL OR submitted_by = %(by)s)")
    ended_row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE status = %(completed)s), count(*) "
            "FROM vdo_read.jobs WHERE status = ANY(%(ended)s) AND {}"
        ).format(mine),
        {
            **by,
            "completed": Status.COMPLETED.value,
            "ended": [Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value],
        },
    ).fetchone()
    completed, ended = (int(ended_row[0]), int(ended_row[1])) if ended_row else (0, 0)
    durations = conn.execute(
        sql.SQL(
            "SELECT phase, count(*), avg(seconds), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds), "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds), max(seconds) "
            "FROM (SELECT phase, extract(epoch FROM finished_at - started_at)::float8 AS seconds "
            "FROM vdo_read.steps WHERE started_at IS NOT NULL AND finished_at IS NOT NULL "
            "AND phase IS NOT NULL AND (%(by)s::text IS NULL OR job_id IN "
            "(SELECT id FROM vdo_read.jobs WHERE {}))) AS timed GROUP BY phase"
        ).format(mine),
        by,
    ).fetchall()
    order = {phase.value: index for index, phase in enumerate(Phase)}
    per_day = conn.execute(
        sql.SQL(
            "WITH submitted AS (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, "
            "count(*) AS n FROM vdo_read.jobs WHERE {mine} GROUP BY 1), "
            "ended AS (SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, "
            "count(*) FILTER (WHERE status = 'completed') AS completed, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "count(*) FILTER (WHERE status = 'cancelled') AS cancelled "
            "FROM vdo_read.jobs WHERE finished_at IS NOT NULL AND {mine} GROUP BY 1) "
            "SELECT * FROM (SELECT day, coalesce(s.n, 0), coalesce(e.completed, 0), "
            "coalesce(e.failed, 0), coalesce(e.cancelled, 0) "
            "FROM submitted AS s FULL JOIN ended AS e USING (day) "
            "ORDER BY day DESC LIMIT %(days)s) AS recent ORDER BY day"
        ).format(mine=mine),
        by,
    ).fetchall()
    return FlowStats(
        ended=ended,
        completed=completed,
        success_rate=completed / ended if ended else None,
        phase_durations=sorted(
            (
                PhaseDuration(
                    phase=str(r[0]),
                    steps=int(r[1]),
                    mean_seconds=float(r[2]),
                    p50_seconds=float(r[3]),
                    p95_seconds=float(r[4]),
                    max_seconds=float(r[5]),
                )
                for r in durations
            ),
            key=lambda d: (order.get(d.phase, len(order)), d.phase),
        ),
        jobs_by_day=[
            DayJobs(
                day=r[0],
                submitted=int(r[1]),
                completed=int(r[2]),
                failed=int(r[3]),
                cancelled=int(r[4]),
            )
            for r in per_day
        ],
    )


def list_templates(
    conn: psycopg.Connection[Any], *, limit: int, offset: int
) -> tuple[list[TemplateRow], int]:
    """One page of the users' templates, by name, and how many there are in all."""
    with conn.cursor(row_factory=class_row(TemplateRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.templates ORDER BY name, id LIMIT %s OFFSET %s",
            (limit, offset),
        )
        rows = cur.fetchall()
    total = conn.execute("SELECT count(*) FROM vdo_read.templates").fetchone()
    return rows, int(total[0]) if total else 0


def template_names(conn: psycopg.Connection[Any]) -> dict[str, UUID]:
    """Every template's name, with its id."""
    rows = conn.execute("SELECT name, id FROM vdo_read.templates").fetchall()
    return {str(name): template_id for name, template_id in rows}


def credential(conn: psycopg.Connection[Any], token: UUID) -> Credential:
    """A token's row (by its aggregate id) and its user's role, and the projector's position.
    The position is read first: the row is at least as recent as it says."""
    projected = projector_position(conn)
    row = conn.execute(
        "SELECT t.*, u.role FROM vdo_read.tokens AS t "
        "LEFT JOIN vdo_read.users AS u ON u.id = t.user_id WHERE t.id = %s",
        (token,),
    ).fetchone()
    if row is None:
        return Credential(token=None, role=None, projected=projected)
    *columns, role = row
    return Credential(token=TokenRow(*columns), role=role, projected=projected)


def list_users(conn: psycopg.Connection[Any]) -> list[UserRow]:
    """Every user, by name."""
    with conn.cursor(row_factory=class_row(UserRow)) as cur:
        cur.execute("SELECT * FROM vdo_read.users ORDER BY name")
        return cur.fetchall()


def list_tokens(
    conn: psycopg.Connection[Any], *, user: str | None = None, include_revoked: bool = True
) -> list[TokenRow]:
    """Tokens (a user's, when given), the oldest first."""
    with conn.cursor(row_factory=class_row(TokenRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.tokens WHERE (%(user)s::text IS NULL OR user_name = %(user)s) "
            "AND (%(revoked)s OR revoked_at IS NULL) ORDER BY created_at, id",
            {"user": user, "revoked": include_revoked},
        )
        return cur.fetchall()


def checksums(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> dict[str, str]:
    """A sha256 per read-model table over its rows in primary-key order.

    Rows are hashed in PostgreSQL's text form, with the session settings that form depends on
    pinned, so two databases holding the same rows give the same hashes.
    """
    result: dict[str, str] = {}
    with conn.transaction():
        pin_text_form(conn)
        for table in TABLES:
            query = sql.SQL(
                "SELECT encode(sha256(convert_to(coalesce("
                "string_agg(t::text, E'\\n' ORDER BY {order}), ''), 'UTF8')), 'hex') "
                "FROM {schema}.{table} AS t"
            ).format(
                order=sql.SQL(", ").join(sql.Identifier(c) for c in PRIMARY_KEYS[table]),
                schema=sql.Identifier(schema),
                table=sql.Identifier(table),
            )
            row = conn.execute(query).fetchone()
            result[table] = str(row[0]) if row else ""
    return result
