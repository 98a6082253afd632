"""Keeping the read models in step with the event store: in global position order, exactly once.

A commit to the store only says "the log has grown"; what is applied is read from the store,
after the position recorded in the tracking row. The row is locked (``FOR UPDATE``) for the
whole batch and moved forward in the same transaction as the read-model writes, so a repeated
or late catch-up finds nothing left to do, and two replicas never apply the same event twice:
the second waits for the first, then reads on from where it stopped.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from vdo_kernel import logs, readmodels
from vdo_kernel.store import JobStore, StoredJobEvent
from vdo_projector import updates
from vdo_projector.eventlog import ProjectionGapError
from vdo_projector.replay import Replayed, replay

log = logs.get(__name__)

BATCH_SIZE = 500


class Projection:
    """The read models' writer. Thread-safe: calls are serialised on one connection."""

    def __init__(
        self, database_url: str, store: JobStore | None = None, *, batch_size: int = BATCH_SIZE
    ) -> None:
        self.database_url = database_url
        self._owns_store = store is None
        self.store = store if store is not None else JobStore(database_url, pool_size=1)
        self.batch_size = batch_size
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._owns_store:
            self.store.close()

    def setup(self) -> None:
        """Create the read models if they are missing, or rebuild them from the log if an older
        version made them (see `prepare`)."""
        with self._lock:
            self._connection()

    def position(self) -> int:
        with self._lock:
            return readmodels.projector_position(self._connection())

    def catch_up(self, until: int | None = None) -> int:
        """Apply every stored event not yet projected; returns how many were applied.

        ``until`` is a position the caller knows is stored: when the read models already reach
        it there is nothing to do and no lock is taken.
        """
        with self._lock:
            try:
                return self._catch_up(until)
            except psycopg.Error:
                # A broken or stale connection is replaced on the next call; the caller retries.
                self._discard_connection()
                raise

    def _catch_up(self, until: int | None) -> int:
        conn = self._connection()
        if until is not None and readmodels.projector_position(conn) >= until:
            return 0
        applied = 0
        while True:
            count, position = self._apply_batch(conn)
            applied += count
            if count < self.batch_size:
                break
        if until is not None and position < until:
            log.warning(
                "a catch-up was asked for a position the store does not hold",
                announced=until,
                stored=position,
            )
        if applied:
            log.debug("projected", events=applied, position=position)
        return applied

    def _apply_batch(self, conn: psycopg.Connection[Any]) -> tuple[int, int]:
        with conn.transaction():
            row = conn.execute(
                "SELECT position FROM vdo_read.tracking WHERE name = %s FOR UPDATE",
                (readmodels.PROJECTOR,),
            ).fetchone()
            if row is None:
                raise RuntimeError("the projector's tracking row is missing")
            tracked = int(row[0])
            # Read while holding the lock: another replica cannot move the position meanwhile.
            events = self.store.read(after=tracked, limit=self.batch_size)
            position = apply_events(conn, events, after=tracked)
            if events:
                conn.execute(
                    "UPDATE vdo_read.tracking SET position = %s WHERE name = %s",
                    (position, readmodels.PROJECTOR),
                )
        return len(events), position

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.database_url, autocommit=True)
            try:
                prepare(conn, self.store)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _discard_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def apply_events(conn: psycopg.Connection[Any], events: list[StoredJobEvent], *, after: int) -> int:
    """Apply events that must directly follow position ``after``; returns the last position."""
    position = after
    for event in events:
        if event.position != position + 1:
            raise ProjectionGapError(
                f"expected position {position + 1} from the store, got {event.position}"
            )
        updates.apply(conn, event)
        position = event.position
    return position


def prepare(conn: psycopg.Connection[Any], store: JobStore) -> None:
    """Create the read models if they are missing. Read models made by an older version (of
    another shape) are dropped and replayed from the log, in one transaction: they are
    disposable, so a new shape is rebuilt rather than migrated, and comes out exactly as a
    replay gives it. Read models of a newer version are left alone (an error says so)."""
    try:
        readmodels.create_schema(conn)
        return
    except readmodels.OutdatedReadModelsError as outdated:
        if outdated.version > readmodels.SCHEMA_VERSION:
            raise RuntimeError(
                f"the read models are of version {outdated.version}, newer than this "
                f"projector's ({readmodels.SCHEMA_VERSION}): run the newer projector"
            ) from None
        log.info(
            "the read models are of an older version; rebuilding them from the log",
            found=outdated.version,
            version=readmodels.SCHEMA_VERSION,
        )
    started = time.perf_counter()
    replayed = _replace(conn, store, only_outdated=True)
    if replayed is not None:
        log.info(
            "read models rebuilt",
            events_applied=replayed.events,
            position=replayed.position,
            duration_seconds=round(time.perf_counter() - started, 3),
        )


def _replace(
    conn: psycopg.Connection[Any], store: JobStore, *, only_outdated: bool = False
) -> Replayed | None:
    """Drop the read models and replay the log into new ones, in one transaction. With
    ``only_outdated``, nothing is done when they turn out to be of this version by the time
    the lock is held (another replica rebuilt them meanwhile)."""
    with conn.transaction():
        if readmodels.exists(conn):
            # A projector takes the tracking row first, so taking the table first here
            # waits for its batch to end instead of deadlocking with it.
            conn.execute("LOCK TABLE vdo_read.tracking IN ACCESS EXCLUSIVE MODE")
            if only_outdated and readmodels.schema_version(conn) == readmodels.SCHEMA_VERSION:
                return None
        readmodels.drop_schema(conn)
        return replay(conn, store)


@dataclass(frozen=True)
class RebuildSummary:
    events_applied: int
    position: int
    duration_seconds: float
    checksums: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rebuild(database_url: str) -> RebuildSummary:
    """Drop the read models and replay the whole log into new ones, in one transaction (in
    bulk: see `replay`).

    Readers keep seeing the old read models until the new ones are committed; a running
    projector waits on the tracking table meanwhile, then carries on from the rebuilt position.
    """
    started = time.perf_counter()
    store = JobStore(database_url, pool_size=1)
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            replayed = _replace(conn, store)
            assert replayed is not None
            sums = readmodels.checksums(conn)
    finally:
        store.close()
    summary = RebuildSummary(
        events_applied=replayed.events,
        position=replayed.position,
        duration_seconds=round(time.perf_counter() - started, 3),
        checksums=sums,
    )
    log.info("read models rebuilt", **summary.to_json())
    return summary


def checksums(database_url: str) -> dict[str, str]:
    """A stable sha256 per read-model table (rows in primary-key order). Read models that do
    not exist yet hash as the empty tables they would be; read models of another version
    raise `OutdatedReadModelsError` (their tables are not this version's)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        version = readmodels.schema_version(conn)
        if version is None:
            return {table: hashlib.sha256(b"").hexdigest() for table in readmodels.TABLES}
        if version != readmodels.SCHEMA_VERSION:
            raise readmodels.OutdatedReadModelsError(readmodels.SCHEMA, version)
        return readmodels.checksums(conn)
