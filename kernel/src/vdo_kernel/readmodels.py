"""The read models' schema and queries: the contract between the projector (writer) and the
gateway (reader).

The tables live in their own schema, ``vdo_read``, so they can be dropped and rebuilt from the
event log without touching the store. Every value in them is derived from events alone (times
are the events' times, never the clock's), so a replay gives the same rows, bit for bit; the
checksums below are how that is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from vdo_kernel.domain import Status

SCHEMA: Final = "vdo_read"
# The projector's row in the tracking table; a second replica locks the same row.
PROJECTOR: Final = "projector"
# The read-model tables (the tracking table is bookkeeping, not a read model).
TABLES: Final = ("jobs", "steps", "timeline")

_DDL: Final = """
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE IF NOT EXISTS {schema}.tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL
);

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
    submitted_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    finished_reason text,
    version integer NOT NULL,
    last_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created_at ON {schema}.jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON {schema}.jobs (status);

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

CREATE TABLE IF NOT EXISTS {schema}.timeline (
    position bigint PRIMARY KEY,
    job_id uuid NOT NULL,
    version integer NOT NULL,
    type text NOT NULL,
    timestamp timestamptz NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_job ON {schema}.timeline (job_id, position);

INSERT INTO {schema}.tracking (name, position) VALUES ({projector}, 0)
ON CONFLICT (name) DO NOTHING;
"""

# Each read-model table's primary key: the order rows are hashed in (so the hash does not depend
# on storage order) and what names a row that differs.
PRIMARY_KEYS: Final = {
    "jobs": ("id",),
    "steps": ("job_id", "step", "attempt"),
    "timeline": ("position",),
}


# ---- schema ----------------------------------------------------------------------------------


def ddl(schema: str = SCHEMA) -> sql.Composed:
    """The statements that create the read models in a schema (another one than ``vdo_read``
    holds a copy built aside, to be compared with the live one)."""
    return sql.SQL(_DDL).format(schema=sql.Identifier(schema), projector=sql.Literal(PROJECTOR))


def create_schema(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> None:
    """Create the read models if they are missing (idempotent; safe from every replica)."""
    with conn.transaction():
        # Two processes creating the schema at once would race on the catalog; serialise them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        conn.execute(ddl(schema))


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
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    finished_reason: str | None
    version: int
    last_position: int


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
class TimelineRow:
    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    total_jobs: int
    mean_completed_seconds: float | None


# ---- queries ---------------------------------------------------------------------------------


def projector_position(conn: psycopg.Connection[Any]) -> int:
    """The last store position the read models reflect (0 when nothing is projected yet)."""
    row = conn.execute(
        "SELECT position FROM vdo_read.tracking WHERE name = %s", (PROJECTOR,)
    ).fetchone()
    return int(row[0]) if row else 0


def list_jobs(
    conn: psycopg.Connection[Any], *, limit: int, offset: int, status: str | None = None
) -> tuple[list[JobRow], int]:
    """One page of jobs, newest first, and how many there are in all (of that status)."""
    with conn.cursor(row_factory=class_row(JobRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.jobs WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            {"status": status, "limit": limit, "offset": offset},
        )
        rows = cur.fetchall()
    total = conn.execute(
        "SELECT count(*) FROM vdo_read.jobs "
        "WHERE (%(status)s::text IS NULL OR status = %(status)s)",
        {"status": status},
    ).fetchone()
    return rows, int(total[0]) if total else 0


def get_job(conn: psycopg.Connection[Any], job_id: UUID) -> JobRow | None:
    with conn.cursor(row_factory=class_row(JobRow)) as cur:
        cur.execute("SELECT * FROM vdo_read.jobs WHERE id = %s", (job_id,))
        return cur.fetchone()


def job_steps(conn: psycopg.Connection[Any], job_id: UUID) -> list[StepRow]:
    """A job's steps in the order they were first started."""
    with conn.cursor(row_factory=class_row(StepRow)) as cur:
        cur.execute(
            "SELECT * FROM vdo_read.steps WHERE job_id = %s ORDER BY first_position", (job_id,)
        )
        return cur.fetchall()


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


def stats(conn: psycopg.Connection[Any]) -> Stats:
    counts = {status.value: 0 for status in Status}
    rows = conn.execute("SELECT status, count(*) FROM vdo_read.jobs GROUP BY status").fetchall()
    for status, count in rows:
        counts[str(status)] = int(count)
    row = conn.execute(
        "SELECT avg(extract(epoch FROM finished_at - created_at)) "
        "FROM vdo_read.jobs WHERE status = %s",
        (Status.COMPLETED.value,),
    ).fetchone()
    mean = float(row[0]) if row and row[0] is not None else None
    return Stats(by_status=counts, total_jobs=sum(counts.values()), mean_completed_seconds=mean)


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
