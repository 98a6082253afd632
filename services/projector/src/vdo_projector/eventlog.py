"""The event log read in bulk for a replay: large fetches on a server-side cursor, and a decoding
that skips building domain objects.

A replay needs each event's envelope and its fields as plain JSON values, exactly what
`JobStore.read` gives (`StoredJobEvent.data`, `timestamp`), but not the event objects the
library's mapper builds on the way. Stored state is the library's JSON, where only values of
types JSON lacks are wrapped (``{"_type_": ..., "_data_": ...}``): in our events that is the
timestamp alone. So an event whose state holds no other wrapped value, and is of its class's
current version (nothing to upcast), is decoded with a plain ``json.loads``; any other goes
through the store's own decoding. Both give the same values (a test holds them to it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final, NamedTuple
from uuid import UUID, uuid4

import psycopg
from eventsourcing.utils import get_topic

from vdo_kernel.accounts import ACCOUNT_EVENT_TYPES
from vdo_kernel.domain import EVENT_TYPES
from vdo_kernel.store import JobStore
from vdo_kernel.templates import TEMPLATE_EVENT_TYPES
from vdo_projector.updates import storable

# Rows fetched per round trip: large enough that the round trips do not count, small enough
# that a chunk's rows and events stay a few megabytes.
CHUNK_SIZE: Final = 5000

# The envelope's keys in stored state besides the timestamp: not part of an event's data (as in
# `event_data`).
_ENVELOPE: Final = ("originator_topic", "correlation_id", "causation_id")
_WRAPPED: Final = b'"_type_"'
_TIMESTAMP_TYPE: Final = "datetime_iso"
# What `storable` would change can only come from an escape (``\u0000``, ``\udc80``) or from a
# UTF-8 encoded surrogate (which `json.loads` lets through): state with neither is left as is.
_UNSTORABLE: Final = re.compile(rb"\\u|\xed[\xa0-\xbf]")
# Each event class's name and current version: stored state of that version has no upcasting
# to do and is decoded as it stands (the library stores ``class_version`` from version 2 on).
_TOPICS: Final = {
    get_topic(cls): (name, int(getattr(cls, "class_version", 1)))
    for name, cls in {**EVENT_TYPES, **ACCOUNT_EVENT_TYPES, **TEMPLATE_EVENT_TYPES}.items()
}


class ProjectionGapError(RuntimeError):
    """The store handed back a position that does not follow the last one applied. The log is
    gapless, so this is a bug or a damaged store; applying it would corrupt the read models."""


class LoggedEvent(NamedTuple):
    """One event as a replay needs it: the envelope, the time as ISO 8601 text (as stored; it
    goes to PostgreSQL as text, so it is never parsed here) and the fields as JSON values, made
    storable (`updates.storable`) as the read models hold them."""

    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: str
    data: dict[str, Any]


def read_log(
    conn: psycopg.Connection[Any],
    store: JobStore,
    *,
    after: int = 0,
    until: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[list[LoggedEvent]]:
    """The events after ``after`` (up to ``until``, if given), in order, a chunk at a time.

    Runs in the caller's transaction on the caller's connection, so the whole read sees one
    snapshot: a prefix of the log, however much is appended meanwhile.
    """
    # The log is gapless, so "up to `until`" is a number of events.
    limit = (until - after) if until is not None else 2**62
    if limit <= 0:
        return
    with conn.cursor(name=f"vdo_replay_{uuid4().hex}", binary=True) as cursor:
        cursor.itersize = chunk_size
        cursor.execute(store.read_after_sql, (after, limit))
        while rows := cursor.fetchmany(chunk_size):
            yield [decode(store, row) for row in rows]


def decode(store: JobStore, row: tuple[Any, ...]) -> LoggedEvent:
    """One row of `JobStore.read_after_sql` decoded (the values `store.decode_row` gives)."""
    position, job_id, version, topic, state = row
    state = bytes(state)
    known = _TOPICS.get(topic)
    if known is not None and state.count(_WRAPPED) == 1:
        name, current = known
        data = json.loads(state)
        stamp = data.pop("timestamp", None)
        if (
            type(stamp) is dict
            and len(stamp) == 2
            and stamp.get("_type_") == _TIMESTAMP_TYPE
            and type(text := stamp.get("_data_")) is str
            and data.pop("class_version", 1) == current
        ):
            for key in _ENVELOPE:
                data.pop(key, None)
            if _UNSTORABLE.search(state):
                data = storable(data)
            return LoggedEvent(position, job_id, version, name, text, data)
    event = store.decode_row(row)
    return LoggedEvent(
        event.position,
        event.job_id,
        event.version,
        event.type,
        event.timestamp.isoformat(),
        storable(event.data),
    )
