"""Checking the live read models against the log: replay it aside, into a schema of its own, up
to the position the live ones reflect, and compare the two table by table.

Everything happens in one REPEATABLE READ transaction that is rolled back at the end: the live
tables and their tracked position are read from one snapshot (the projector moves both in one
transaction, so they agree), the copy built aside is never visible to anyone else and never
left behind, and nothing live is written. The running projector is not held up (the live
tables are only read); a `vdo projections rebuild` started meanwhile waits for the check to end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from uuid import uuid4

import psycopg
from psycopg import sql

from vdo_kernel import readmodels
from vdo_kernel.store import JobStore
from vdo_projector.replay import replay

# How many differing rows a table lists (all are counted).
LISTING_CAP: Final = 20
ASIDE_PREFIX: Final = "vdo_read_verify_"


class Rollback(Exception):
    """Ends the check's transaction without committing the copy built aside."""


@dataclass(frozen=True)
class RowDifference:
    """One row that is not the same on both sides, named by its primary key.

    ``missing``: the log gives the row, the live read models lack it; ``extra``: the live read
    models hold a row the log does not give; ``different``: both hold it, with other values in
    ``columns`` (column → [live value, value from the log], as JSON).
    """

    kind: str
    key: dict[str, Any]
    columns: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TableComparison:
    table: str
    live_checksum: str
    replayed_checksum: str
    missing: int = 0
    extra: int = 0
    different: int = 0
    rows: list[RowDifference] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.live_checksum == self.replayed_checksum


@dataclass(frozen=True)
class VerifyReport:
    position: int
    duration_seconds: float
    tables: list[TableComparison] = field(default_factory=list)
    # Why there was nothing to compare (no live read models), when that is the case.
    problem: str | None = None

    @property
    def equal(self) -> bool:
        return self.problem is None and all(table.equal for table in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {"equal": self.equal, **asdict(self)}


def verify(database_url: str, *, listing_cap: int = LISTING_CAP) -> VerifyReport:
    """Replay the log aside up to the live read models' position and compare them."""
    started = time.perf_counter()
    store = JobStore(database_url, pool_size=1)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            version = readmodels.schema_version(conn)
            if version is None:
                return VerifyReport(
                    position=0,
                    duration_seconds=_since(started),
                    problem="there are no read models to verify (the projector has not run)",
                )
            if version != readmodels.SCHEMA_VERSION:
                return VerifyReport(
                    position=readmodels.projector_position(conn),
                    duration_seconds=_since(started),
                    problem=str(readmodels.OutdatedReadModelsError(readmodels.SCHEMA, version)),
                )
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            result: list[VerifyReport] = []
            try:
                with conn.transaction():
                    result.append(_compare(conn, store, started, listing_cap))
                    raise Rollback
            except Rollback:
                pass
    finally:
        store.close()
    (report,) = result
    return report


def _compare(
    conn: psycopg.Connection[Any], store: JobStore, started: float, listing_cap: int
) -> VerifyReport:
    live = readmodels.SCHEMA
    # The locks come before any query, so the snapshot the first query takes cannot predate
    # a rebuild that replaced these tables (their new rows would be invisible to it).
    conn.execute(
        sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
            sql.SQL(", ").join(
                sql.Identifier(live, table) for table in ("tracking", *readmodels.TABLES)
            )
        )
    )
    position = readmodels.projector_position(conn)
    aside = f"{ASIDE_PREFIX}{uuid4().hex[:12]}"
    replay(conn, store, schema=aside, until=position)
    readmodels.pin_text_form(conn)
    live_sums = readmodels.checksums(conn, live)
    replayed_sums = readmodels.checksums(conn, aside)
    tables = []
    for table in readmodels.TABLES:
        comparison = TableComparison(table, live_sums[table], replayed_sums[table])
        if not comparison.equal:
            comparison = _differences(conn, comparison, live, aside, listing_cap)
        tables.append(comparison)
    return VerifyReport(position=position, duration_seconds=_since(started), tables=tables)


def _differences(
    conn: psycopg.Connection[Any],
    comparison: TableComparison,
    live: str,
    aside: str,
    listing_cap: int,
) -> TableComparison:
    table = comparison.table
    key = readmodels.PRIMARY_KEYS[table]
    first = sql.Identifier(key[0])
    # Rows compare in their text form, as the checksums hash them.
    query = sql.SQL(
        "SELECT CASE WHEN l.{first} IS NULL THEN 'missing' WHEN r.{first} IS NULL THEN 'extra' "
        "ELSE 'different' END AS kind, to_jsonb(l) AS live, to_jsonb(r) AS replayed "
        "FROM {live} AS l FULL JOIN {aside} AS r ON {join} "
        "WHERE l.{first} IS NULL OR r.{first} IS NULL OR l::text <> r::text"
    ).format(
        first=first,
        live=sql.Identifier(live, table),
        aside=sql.Identifier(aside, table),
        join=sql.SQL(" AND ").join(
            sql.SQL("l.{c} = r.{c}").format(c=sql.Identifier(c)) for c in key
        ),
    )
    counts = dict(
        conn.execute(
            sql.SQL("SELECT kind, count(*) FROM ({}) AS d GROUP BY kind").format(query)
        ).fetchall()
    )
    order = sql.SQL(", ").join(
        sql.SQL("coalesce(l.{c}, r.{c})").format(c=sql.Identifier(c)) for c in key
    )
    listed = conn.execute(
        sql.SQL("{} ORDER BY {} LIMIT %s").format(query, order), (listing_cap,)
    ).fetchall()
    rows = []
    for kind, live_row, replayed_row in listed:
        present = live_row if live_row is not None else replayed_row
        columns: dict[str, list[Any]] = {}
        if live_row is not None and replayed_row is not None:
            columns = {
                name: [value, replayed_row.get(name)]
                for name, value in live_row.items()
                if replayed_row.get(name) != value
            }
        rows.append(RowDifference(str(kind), {c: present[c] for c in key}, columns))
    return TableComparison(
        table,
        comparison.live_checksum,
        comparison.replayed_checksum,
        missing=int(counts.get("missing", 0)),
        extra=int(counts.get("extra", 0)),
        different=int(counts.get("different", 0)),
        rows=rows,
    )


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
