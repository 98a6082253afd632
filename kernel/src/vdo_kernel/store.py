"""The event store: the aggregates' events (jobs, the users and tokens of `accounts`, and the
job templates of `templates`) in PostgreSQL, through the eventsourcing library.

Positions (the store's notification ids) are gapless: the recorder takes the table's exclusive
lock (as eventsourcing does, so ids are committed in order) and numbers new events from the
current maximum instead of a sequence, so a transaction that rolls back leaves no hole.
Handlers write their new events together with a tracking record of the message they handled,
in one transaction: a redelivered message then fails on the tracking key and changes nothing.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresFactory, PostgresProcessRecorder
from eventsourcing.utils import get_topic
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg_pool import ConnectionPool

from vdo_kernel import logs
from vdo_kernel.accounts import (
    ACCOUNT_EVENT_NAMES,
    ACCOUNT_EVENT_TYPES,
    AccountEvent,
    Token,
    User,
    token_uuid,
    user_id,
)
from vdo_kernel.domain import EVENT_NAMES, EVENT_TYPES, Job
from vdo_kernel.templates import (
    TEMPLATE_EVENT_NAMES,
    TEMPLATE_EVENT_TYPES,
    Template,
    TemplateEvent,
)

APPLICATION_NAME = "vdo"

# Every event type's name, by class: the jobs', the accounts' and the templates'.
_EVENT_NAMES: dict[type[Aggregate.Event], str] = dict(
    [*EVENT_NAMES.items(), *ACCOUNT_EVENT_NAMES.items(), *TEMPLATE_EVENT_NAMES.items()]
)
ACCOUNT_TOPICS = tuple(get_topic(cls) for cls in ACCOUNT_EVENT_TYPES.values())
TEMPLATE_TOPICS = tuple(get_topic(cls) for cls in TEMPLATE_EVENT_TYPES.values())

log = logs.get(__name__)


class JobNotFoundError(LookupError):
    pass


class ConcurrencyError(Exception):
    """Someone else appended to the job first; reload it and decide again."""


class AlreadyHandledError(Exception):
    """The message's tracking record is already stored: it was handled before."""


class Claim(enum.Enum):
    LEASED = "leased"  # ours to do
    BUSY = "busy"  # a live worker holds it
    HANDLED = "handled"  # this very message was handled before


class Lease:
    """An advisory lock on one step, held on its own connection while the step's work runs.

    If the worker dies, its connection closes and the lock is gone with it, so a redelivery
    can resume the step; while the worker lives, a duplicate of its message finds the lease
    taken and leaves the work to it.
    """

    def __init__(
        self, pool: ConnectionPool[psycopg.Connection[Any]], key: str, tracking_table: Composed
    ) -> None:
        self._pool = pool
        self._key = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._claim = SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE application_name = %s "
            "AND notification_id = %s) AS handled, "
            "pg_try_advisory_lock(%s) AS leased"
        ).format(tracking_table)

    def claim(self, tracking: Tracking) -> Claim:
        """Take the lease unless the message was handled already (one round trip for both)."""
        conn = self._pool.getconn()
        row = conn.execute(
            self._claim, (tracking.application_name, tracking.notification_id, self._key)
        ).fetchone()
        handled, leased = (bool(row[0]), bool(row[1])) if row else (False, False)
        if leased and not handled:
            self._conn = conn
            return Claim.LEASED
        try:
            if leased:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        finally:
            self._pool.putconn(conn)
        return Claim.HANDLED if handled else Claim.BUSY

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        finally:
            self._pool.putconn(conn)


class GaplessRecorder(PostgresProcessRecorder):
    """Appends events (and a tracking record) in one server-side call.

    The events table's exclusive lock orders commits; it is taken inside the function and
    released by the commit that follows at once, so it is never held while a client process
    is busy elsewhere (the library's own insert holds it across several round trips).
    """

    SETUP_LOCK_KEY = 0x7664_6F5F_7365  # serialises table and function creation at start

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = Identifier(self.datastore.schema)
        self.append_function = Identifier(f"{self.events_table_name}_append")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "new_events {schema}.{stored_event_type}[], "
                "tracking_name text, tracking_position bigint) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ "
                "DECLARE last_position bigint; "
                "BEGIN "
                "  PERFORM set_config('lock_timeout', '{lock_timeout}s', true); "
                "  IF tracking_name IS NOT NULL THEN "
                "    INSERT INTO {schema}.{tracking} (application_name, notification_id) "
                "    VALUES (tracking_name, tracking_position); "
                "  END IF; "
                "  LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "  SELECT COALESCE(MAX(notification_id), 0) INTO last_position "
                "  FROM {schema}.{events}; "
                "  PERFORM pg_notify({channel}, ''); "
                "  RETURN QUERY "
                "  INSERT INTO {schema}.{events} "
                "  (originator_id, originator_version, topic, state, notification_id) "
                "  SELECT e.originator_id, e.originator_version, e.topic, e.state, "
                "  last_position + e.ord "
                "  FROM unnest(new_events) WITH ORDINALITY "
                "  AS e(originator_id, originator_version, topic, state, ord) "
                "  ORDER BY e.ord "
                "  RETURNING notification_id; "
                "END $$"
            ).format(
                schema=schema,
                function=self.append_function,
                stored_event_type=Identifier(self.stored_event_type_name),
                tracking=Identifier(self.tracking_table_name),
                events=Identifier(self.events_table_name),
                channel=Literal(self.channel_name),
                lock_timeout=SQL(str(int(self.datastore.lock_timeout or 10))),
            )
        )
        self.append_statement = SQL(
            "SELECT appended AS position FROM {schema}.{function}(%s, %s, %s) AS appended"
        ).format(schema=schema, function=self.append_function)

    def create_table(self) -> None:
        # Services may start together against a fresh database; one creates, the others wait.
        with self.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (self.SETUP_LOCK_KEY,))
            try:
                super().create_table()
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.SETUP_LOCK_KEY,))

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn, conn.cursor() as cur:
            try:
                cur.execute(
                    self.append_statement,
                    (
                        rows,
                        tracking.application_name if tracking else None,
                        tracking.notification_id if tracking else None,
                    ),
                    prepare=True,
                )
                ids = [row["position"] for row in cur.fetchall()]
            except psycopg.errors.UniqueViolation as error:
                raise IntegrityError(str(error)) from error
        return ids


class GaplessPostgresFactory(PostgresFactory):
    process_recorder_class = GaplessRecorder


class JobApplication(Application[UUID]):
    name = APPLICATION_NAME

    def construct_recorder(self) -> Any:
        # A process recorder, so events can be written with a tracking record.
        return self.factory.process_recorder()


@dataclass(frozen=True)
class StoredJobEvent:
    """A stored event with its global position, decoded.

    Most events are a job's; the accounts' (a user's or a token's) and the templates'
    (`is_job_event` is False) have the same envelope, and `job_id` is then the user's, the
    token's or the template's id."""

    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: datetime
    correlation_id: str
    causation_id: str
    data: dict[str, Any]
    event: Job.Event | AccountEvent | TemplateEvent

    @property
    def is_job_event(self) -> bool:
        return isinstance(self.event, Job.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "job_id": str(self.job_id),
            "version": self.version,
            "type": self.type,
            "timestamp": self.timestamp.isoformat(),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "data": self.data,
        }


_ENVELOPE = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "correlation_id",
    "causation_id",
}


def event_data(event: Job.Event | AccountEvent | TemplateEvent) -> dict[str, Any]:
    """The event's own fields (the envelope left out), as plain JSON values."""
    return {k: _plain(v) for k, v in event.__dict__.items() if k not in _ENVELOPE}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    return value


def postgres_env(database_url: str, *, pool_size: int = 5) -> dict[str, str]:
    params = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": f"{__name__}:{GaplessPostgresFactory.__name__}",
        "POSTGRES_DBNAME": str(params.get("dbname", "vdo")),
        "POSTGRES_HOST": str(params.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(params.get("password", "")),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size * 2),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "SINGLE_ROW_TRACKING": "n",
        "CREATE_TABLE": "y",
    }


def wait_for_database(database_url: str, *, timeout: float) -> None:
    """Return once PostgreSQL accepts a connection (it may still be starting); raise
    `RuntimeError` saying what was tried if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay, said = 0.2, False
    while True:
        try:
            psycopg.connect(database_url, connect_timeout=3, autocommit=True).close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() + delay > deadline:
                where = conninfo_to_dict(database_url)
                raise RuntimeError(
                    f"cannot reach PostgreSQL at {where.get('host', 'localhost')}:"
                    f"{where.get('port', 5432)} (database {where.get('dbname', '?')}) in "
                    f"{timeout:g}s: {str(error).strip()}"
                ) from error
            if not said:
                log.info("waiting for PostgreSQL", error=str(error).strip())
                said = True
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def open_store(database_url: str, *, pool_size: int = 5, timeout: float = 120.0) -> JobStore:
    """The store, once PostgreSQL answers (see `wait_for_database`)."""
    wait_for_database(database_url, timeout=timeout)
    return JobStore(database_url, pool_size=pool_size)


@dataclass(frozen=True)
class ModelCallEntry:
    """A model call's start (`amount_usd`: what it reserves) or finish (what it cost)."""

    position: int
    at: str  # ISO time
    finished: bool
    key: str
    amount_usd: float


class JobStore:
    """The one way services read and write jobs."""

    def __init__(self, database_url: str, *, pool_size: int = 5) -> None:
        self.app = JobApplication(env=postgres_env(database_url, pool_size=pool_size))
        recorder = self.app.recorder
        assert isinstance(recorder, GaplessRecorder)
        self.recorder = recorder
        self._lease_pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            database_url,
            min_size=0,
            max_size=max(pool_size, 2) * 2,
            kwargs={"autocommit": True},
            open=True,
        )

    def close(self) -> None:
        self._lease_pool.close()
        self.app.close()

    def lease(self, key: str) -> Lease:
        table = SQL("{}.{}").format(
            Identifier(self.recorder.datastore.schema),
            Identifier(self.recorder.tracking_table_name),
        )
        return Lease(self._lease_pool, key, table)

    # ---- aggregate access -----------------------------------------------------------

    def get(self, job_id: UUID) -> Job:
        try:
            job: Any = self.app.repository.get(job_id)
        except AggregateNotFoundError:
            raise JobNotFoundError(str(job_id)) from None
        if not isinstance(job, Job):
            # A user's or a token's id: no job has it.
            raise JobNotFoundError(str(job_id))
        return job

    def save(self, *aggregates: Aggregate, tracking: Tracking | None = None) -> list[int]:
        """Append the aggregates' pending events (and the tracking record) in one transaction;
        returns the new events' positions."""
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        try:
            recordings = self.app.events.put(events, tracking=tracking)
        except IntegrityError as error:
            if tracking is not None and self.is_handled(
                tracking.application_name, tracking.notification_id
            ):
                raise AlreadyHandledError(str(tracking)) from error
            names = ", ".join(f"{type(a).__name__.lower()} {a.id}" for a in aggregates)
            raise ConcurrencyError(f"{names} changed concurrently") from error
        return [r.notification.id for r in recordings]

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A pooled autocommit connection, for what lives beside the events (the secret store)."""
        return self._lease_pool.connection()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a PostgreSQL advisory lock named ``name`` meanwhile: one process at a time
        does what it guards (across every process on this database)."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._lease_pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    # ---- accounts -------------------------------------------------------------------

    def get_user(self, name: str) -> User | None:
        """The user of that name, from its events (None when there is none)."""
        user = self._get_any(user_id(name))
        return user if isinstance(user, User) else None

    def get_token(self, token_id: str) -> Token | None:
        """The token of that short id, from its events (None when there is none)."""
        token = self._get_any(token_uuid(token_id))
        return token if isinstance(token, Token) else None

    def get_template(self, template_id: UUID) -> Template | None:
        """The template of that id, from its events (None when there is none; a deleted one
        is returned, marked deleted)."""
        template = self._get_any(template_id)
        return template if isinstance(template, Template) else None

    def _get_any(self, aggregate_id: UUID) -> Any:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def account_events(self) -> list[StoredJobEvent]:
        """Every account event (users and tokens), in order. It reads the whole log's topics:
        for a start-up check, not for each request (the read models answer those)."""
        return self.events_with_topics(ACCOUNT_TOPICS)

    def has_account_events(self, after: int, until: int) -> bool:
        """Whether an account event was stored after position ``after``, up to ``until``
        (a range of the primary key: cheap when the range is short)."""
        return self.has_events_with_topics(ACCOUNT_TOPICS, after, until)

    def events_with_topics(self, topics: Sequence[str]) -> list[StoredJobEvent]:
        """Every event of these topics (event classes), in order. It reads the whole log: for
        what is rare (a start-up check, a read model that lags), not for each request."""
        return self._select_events(
            "WHERE topic = ANY(%s) ORDER BY notification_id", (list(topics),)
        )

    def has_events_with_topics(self, topics: Sequence[str], after: int, until: int) -> bool:
        """Whether an event of these topics was stored after position ``after``, up to
        ``until`` (a range of the primary key: cheap when the range is short)."""
        query = SQL(
            "SELECT EXISTS (SELECT 1 FROM {}.{} WHERE notification_id > %s "
            "AND notification_id <= %s AND topic = ANY(%s)) AS found"
        ).format(
            Identifier(self.recorder.datastore.schema),
            Identifier(self.recorder.events_table_name),
        )
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, (after, until, list(topics)))
            row = cur.fetchone()
            return bool(row and row["found"])

    def is_handled(self, consumer: str, position: int) -> bool:
        """Whether exactly this message was handled by this consumer.

        Not the library's `has_tracking_id`, which answers "has it handled this position or a
        later one": competing replicas finish messages out of order, so a later position being
        done says nothing about an earlier one."""
        query = SQL(
            "SELECT 1 FROM {}.{} WHERE application_name = %s AND notification_id = %s"
        ).format(
            Identifier(self.recorder.datastore.schema),
            Identifier(self.recorder.tracking_table_name),
        )
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, (consumer, position))
            return cur.fetchone() is not None

    def model_calls_after(self, position: int) -> list[ModelCallEntry]:
        """Every model call started or finished after a position, in order: what the global
        daily cap adds up (what finished calls cost, what open ones hold)."""
        query = SQL(
            "SELECT notification_id AS position, s #>> '{{timestamp,_data_}}' AS at, "
            "topic = %s AS finished, coalesce(s ->> 'key', '') AS key, "
            "coalesce((CASE WHEN topic = %s THEN s ->> 'cost_usd' "
            "ELSE s ->> 'reserved_usd' END)::float8, 0) AS amount "
            "FROM (SELECT notification_id, topic, convert_from(state, 'UTF8')::jsonb AS s "
            "FROM {} WHERE topic IN (%s, %s) AND notification_id > %s) AS calls "
            "ORDER BY notification_id"
        ).format(Identifier(self.recorder.datastore.schema, self.recorder.events_table_name))
        finished, started = get_topic(Job.ModelCallFinished), get_topic(Job.ModelCallStarted)
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, (finished, finished, finished, started, position))
            rows: list[Any] = cur.fetchall()
            return [
                ModelCallEntry(
                    position=int(r["position"]),
                    at=str(r["at"] or ""),
                    finished=bool(r["finished"]),
                    key=str(r["key"]),
                    amount_usd=float(r["amount"]),
                )
                for r in rows
            ]

    # ---- the log --------------------------------------------------------------------

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read(self, after: int, limit: int = 500, stop: int | None = None) -> list[StoredJobEvent]:
        """Events after a position, in order."""
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )
        return [self._decode(n.id, n) for n in notifications]

    @property
    def read_after_sql(self) -> Composed:
        """The query `read` runs, for a reader with its own (asynchronous) connection:
        parameters (after, limit); rows feed `decode_row`."""
        return self._events_query("WHERE notification_id > %s ORDER BY notification_id LIMIT %s")

    def read_types(
        self, after: int, types: Iterable[str], limit: int = 1000
    ) -> list[StoredJobEvent]:
        """Events of these job event types (``JobSubmitted``...) after a position, in order: a
        reader that follows only a few types (the scheduler) skips the others in the query."""
        topics = [get_topic(EVENT_TYPES[name]) for name in types]
        return self._select_events(
            "WHERE notification_id > %s AND topic = ANY(%s) ORDER BY notification_id LIMIT %s",
            (after, topics, limit),
        )

    def cancellations(self, job_ids: Iterable[UUID]) -> dict[UUID, int]:
        """Of these jobs, those ever cancelled, each with the version of its last
        ``JobCancelled`` (a retried job may have been cancelled before the run now going on):
        what a phase service asks about the jobs it is working on, now and then."""
        ids = list(job_ids)
        if not ids:
            return {}
        query = SQL(
            "SELECT originator_id, max(originator_version) AS version FROM {}.{} "
            "WHERE originator_id = ANY(%s) AND topic = %s GROUP BY originator_id"
        ).format(
            Identifier(self.recorder.datastore.schema),
            Identifier(self.recorder.events_table_name),
        )
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, (ids, get_topic(Job.Cancelled)))
            return {row["originator_id"]: int(row["version"]) for row in cur.fetchall()}

    def decode_row(self, row: Sequence[Any]) -> StoredJobEvent:
        position, originator_id, version, topic, state = row
        return self._decode(
            position,
            StoredEvent(
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state),
            ),
        )

    def job_events(self, job_id: UUID) -> list[StoredJobEvent]:
        """A job's events in order (none for an id that is not a job's)."""
        events = self._select_events(
            "WHERE originator_id = %s ORDER BY originator_version", (job_id,)
        )
        return [event for event in events if event.is_job_event]

    def _events_query(self, condition: str) -> Composed:
        """A query of the event table's rows (the columns `decode_row` takes), with `condition`
        (a WHERE clause and an order, written here, never from input) after it."""
        return SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
        ).format(
            Identifier(self.recorder.datastore.schema),
            Identifier(self.recorder.events_table_name),
        ) + SQL(condition)

    def _select_events(self, condition: str, params: Sequence[Any]) -> list[StoredJobEvent]:
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(self._events_query(condition), params)
            rows = cur.fetchall()
        return [
            self.decode_row(
                (
                    row["notification_id"],
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    row["state"],
                )
            )
            for row in rows
        ]

    def _decode(self, position: int, stored: Any) -> StoredJobEvent:
        event = self.app.mapper.to_domain_event(stored)
        assert isinstance(event, Job.Event | AccountEvent | TemplateEvent)
        return StoredJobEvent(
            position=position,
            job_id=event.originator_id,
            version=event.originator_version,
            type=_EVENT_NAMES[type(event)],
            timestamp=event.timestamp,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            data=event_data(event),
            event=event,
        )
