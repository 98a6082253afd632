"""Replaying the log into read models in bulk: read in large chunks, fold in memory, write with
COPY. Tens of thousands of events a second, where applying them one by one (`updates`) manages
a few thousand; the rows are the same (see `fold`).

The replay runs in the caller's transaction, into a schema of the caller's choosing: the live
``vdo_read`` for a rebuild, another one to build a copy aside and compare it with the live one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from vdo_kernel import readmodels
from vdo_kernel.store import JobStore
from vdo_projector.eventlog import ProjectionGapError, read_log
from vdo_projector.fold import Fold, Row

# The columns rows are written in: every column, in the table's order (as `fold` builds them).
_COLUMNS: Final = {
    "jobs": (
        "id",
        "title",
        "description",
        "status",
        "phase",
        "step",
        "attempt",
        "max_attempts",
        "budget_usd",
        "cost_usd",
        "routes",
        "submitted_by",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "finished_reason",
        "version",
        "last_position",
        "priority",
        "queued_position",
    ),
    "steps": (
        "job_id",
        "step",
        "attempt",
        "phase",
        "worker",
        "started_at",
        "finished_at",
        "outcome",
        "summary",
        "artifacts",
        "details",
        "failed_reason",
        "resumed",
        "first_position",
    ),
    "model_calls": (
        "job_id",
        "key",
        "step",
        "attempt",
        "call",
        "try_number",
        "provider",
        "model",
        "reserved_usd",
        "note",
        "started_at",
        "finished_at",
        "outcome",
        "error",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "cost_usd",
        "cost_basis",
        "latency_ms",
        "reply",
        "first_position",
    ),
    "timeline": ("position", "job_id", "version", "type", "timestamp", "data"),
    "users": (
        "id",
        "name",
        "role",
        "created_at",
        "created_by",
        "updated_at",
        "version",
        "last_position",
    ),
    "tokens": (
        "id",
        "token_id",
        "user_id",
        "user_name",
        "name",
        "sha256",
        "prefix",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_position",
    ),
    "templates": (
        "id",
        "name",
        "title",
        "description",
        "summary",
        "routes",
        "max_attempts",
        "budget_usd",
        "priority",
        "from_job",
        "from_template",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "version",
        "last_position",
    ),
}


@dataclass(frozen=True)
class Replayed:
    events: int
    position: int


def replay(
    conn: psycopg.Connection[Any],
    store: JobStore,
    *,
    schema: str = readmodels.SCHEMA,
    until: int | None = None,
) -> Replayed:
    """Create the read models in ``schema`` (it must not hold them yet) and fill them with the
    log up to position ``until`` (all of it when None), recording that position as the
    projector's. The caller holds the transaction."""
    with conn.transaction():
        readmodels.create_schema(conn, schema)
        fold = Fold()
        position = 0
        for events in read_log(conn, store, until=until):
            if events[0].position != position + 1 or events[-1].position != position + len(events):
                raise ProjectionGapError(
                    f"the store's events after position {position} are not consecutive "
                    f"(got {events[0].position} to {events[-1].position})"
                )
            timeline = [row for event in events if (row := fold.apply(event)) is not None]
            _copy(conn, schema, "timeline", timeline)
            position = events[-1].position
        if until is not None and position != until:
            raise ProjectionGapError(f"the store ends at position {position}, not at {until}")
        _copy(conn, schema, "jobs", fold.job_rows())
        _copy(conn, schema, "steps", fold.step_rows())
        _copy(conn, schema, "model_calls", fold.call_rows())
        _copy(conn, schema, "users", fold.user_rows())
        _copy(conn, schema, "tokens", fold.token_rows())
        _copy(conn, schema, "templates", fold.template_rows())
        conn.execute(
            sql.SQL("UPDATE {}.tracking SET position = %s WHERE name = %s").format(
                sql.Identifier(schema)
            ),
            (position, readmodels.PROJECTOR),
        )
    return Replayed(events=position, position=position)


def _copy(conn: psycopg.Connection[Any], schema: str, table: str, rows: Iterable[Row]) -> None:
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS[table]),
    )
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
