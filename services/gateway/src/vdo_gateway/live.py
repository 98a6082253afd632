"""Live updates' shared half: one subscription to the event stream per gateway process, fanned
out to every WebSocket watcher through a bounded queue of its own.

The hub passes on job events in the order of their global positions, each once. Core NATS
brings what the relay publishes as soon as it is published, but it may lose messages (a
reconnect, a slow subscriber) and repeats a re-publish. Positions are gapless, so the hub
knows which event must come next: a repeat is skipped, and a gap is filled from the store
before the message that showed it is passed on. A look at the store's last position every
second fills a loss at the tail (or a stalled relay), so nothing waits for the next message.

A watcher first catches up from the store (`EventLog`), then joins the hub once its own
position has reached the hub's: from then on the hub hands it every later event, and the
watcher skips what it has already sent. The hub never waits for a watcher: one whose queue
is full is let go (it is told to resume from the last position it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID

from eventsourcing.utils import get_topic
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import AsyncConnectionPool

from vdo_gateway.models import EventPublic
from vdo_gateway.resources import Bus
from vdo_kernel import logs
from vdo_kernel.domain import EVENT_NAMES, Job
from vdo_kernel.store import JobStore, StoredJobEvent
from vdo_kernel.subjects import ALL_EVENTS, HEADER_POSITION, live_log_subject

log = logs.get(__name__)

# Events read from the store at a time (catching up, filling a gap).
PAGE: Final = 500
# How often the hub compares its position with the store's end.
POLL_SECONDS: Final = 1.0
# Connections of the live updates' own to the store (catch-ups share them).
LOG_CONNECTIONS: Final = 8
# Log lines are dropped rather than queued once a watcher's queue is this full: they are best
# effort, and the room left is kept for events (whose loss costs a resync).
LOG_ROOM: Final = 0.75
LOG_FIELDS: Final = ("job_id", "step", "attempt", "stream", "text", "at")
# Jobs whose submitter the hub remembers (the most recently used); others are read again.
OWNERS_KEPT: Final = 100_000

# The store also holds events that are not a job's (accounts, say): they have positions in the
# one log, but are never shown to a watcher.
JOB_TOPICS: Final = frozenset(get_topic(cls) for cls in EVENT_NAMES)
SUBMITTED_TOPIC: Final = get_topic(Job.Submitted)


class Viewer(Protocol):
    """Who is watching, as far as the hub cares: which jobs they may see (`auth.Principal`)."""

    @property
    def sees_all_jobs(self) -> bool: ...

    def may_see_job(self, submitted_by: str) -> bool: ...


@dataclass(frozen=True)
class Subscription:
    """What a watcher asked for: one job or every job it may see, the events after `after`,
    and (for one job) its live log lines too."""

    job_id: UUID | None
    after: int = 0
    logs: bool = False


def event_frame(event: EventPublic) -> str:
    """The message carrying one event (the same JSON as `GET /api/jobs/{id}/events` items)."""
    return f'{{"type":"event","position":{event.position},"event":{event.model_dump_json()}}}'


# A queued message: an event's position and frame, or a log line (no position: it is not part
# of the ordered history).
Queued = tuple[int, str] | dict[str, Any]


class Watcher:
    """One WebSocket client as the hub sees it: what it asked for, who it is, and its bounded
    queue of messages waiting to be sent."""

    def __init__(self, subscription: Subscription, viewer: Viewer, queue_limit: int):
        self.subscription = subscription
        self.viewer = viewer
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(queue_limit)
        self.overflowed = False
        self.missed_lines = 0

    @property
    def needs_owners(self) -> bool:
        """Whether the watcher's filter needs each job's submitter (a member watching all)."""
        return self.subscription.job_id is None and not self.viewer.sees_all_jobs

    def wants(self, event: StoredJobEvent | EventPublic, owner: str | None) -> bool:
        if self.subscription.job_id is not None:
            # The job's visibility was checked when the watcher subscribed.
            return event.job_id == self.subscription.job_id
        return self.viewer.sees_all_jobs or (owner is not None and self.viewer.may_see_job(owner))

    def offer_event(self, position: int, frame: str) -> bool:
        """Queue an event without waiting; False if the queue is full (the watcher is too slow
        and must resync)."""
        try:
            self.queue.put_nowait((position, frame))
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    def offer_line(self, line: dict[str, Any]) -> None:
        if self.queue.qsize() >= LOG_ROOM * self.queue.maxsize:
            self.missed_lines += 1
            return
        self.queue.put_nowait(line)


@dataclass(frozen=True)
class Page:
    """Job events read after a position, and the position the read got to (non-job events
    skipped and, when `complete`, everything that was in the store)."""

    events: list[StoredJobEvent]
    last: int
    complete: bool


class EventLog:
    """The event store as the live updates read it: on an async pool of their own (no thread
    hops, and REST requests keep their connections), job events only."""

    def __init__(self, store: JobStore, database_url: str) -> None:
        self.store = store
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=LOG_CONNECTIONS,
            kwargs={"autocommit": True},
            open=False,
            name="gateway-live",
        )
        table = SQL("{}.{}").format(
            Identifier(store.recorder.datastore.schema),
            Identifier(store.recorder.events_table_name),
        )
        columns = SQL("notification_id, originator_id, originator_version, topic, state")
        self._end = SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}").format(table)
        self._history: Composed = SQL(
            "SELECT {} FROM {} WHERE originator_id = %s ORDER BY originator_version"
        ).format(columns, table)
        self._first: Composed = SQL(
            "SELECT {} FROM {} WHERE originator_id = %s AND originator_version = 1"
        ).format(columns, table)

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def end(self) -> int:
        """The last position in the store."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self._end, prepare=True)
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def after(self, position: int, limit: int = PAGE) -> Page:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self.store.read_after_sql, (position, limit), prepare=True)
            rows = await cursor.fetchall()
        events = [self.store.decode_row(row) for row in rows if row[3] in JOB_TOPICS]
        return Page(
            events=events, last=int(rows[-1][0]) if rows else position, complete=len(rows) < limit
        )

    async def history(self, job_id: UUID) -> list[StoredJobEvent]:
        """The job's events in order (none for an id that is not a job's)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self._history, (job_id,), prepare=True)
            rows = await cursor.fetchall()
        return [self.store.decode_row(row) for row in rows if row[3] in JOB_TOPICS]

    async def owner(self, job_id: UUID) -> str | None:
        """Who submitted the job, or None if there is no such job."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(self._first, (job_id,), prepare=True)
            row = await cursor.fetchone()
        if row is None or row[3] != SUBMITTED_TOPIC:
            return None
        return str(self.store.decode_row(row).data.get("submitted_by", ""))


class LiveHub:
    """One per gateway process: follows the event stream (one NATS subscription, and one per
    job whose live log someone is watching) and hands each event to the watchers that want it."""

    def __init__(self, log_reader: EventLog, bus: Bus, *, poll_seconds: float = POLL_SECONDS):
        self.log = log_reader
        self.bus = bus
        self.poll_seconds = poll_seconds
        # Every job event up to here has been handed to the watchers that want it.
        self.head = 0
        self._watchers: set[Watcher] = set()
        self._owners: OrderedDict[UUID, str] = OrderedDict()
        self._advancing = asyncio.Lock()
        self._nc: Client | None = None
        self._events: NatsSubscription | None = None
        self._line_watchers: dict[UUID, set[Watcher]] = {}
        self._line_subs: dict[UUID, NatsSubscription] = {}
        self._lines_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls, store: JobStore, bus: Bus, database_url: str, *, poll_seconds: float = POLL_SECONDS
    ) -> LiveHub:
        reader = EventLog(store, database_url)
        await reader.open()
        hub = cls(reader, bus, poll_seconds=poll_seconds)
        try:
            hub.head = await reader.end()
        except BaseException:
            await reader.close()
            raise
        hub._tasks = [
            asyncio.create_task(hub._subscribe(), name="live-subscribe"),
            asyncio.create_task(hub._poll(), name="live-poll"),
        ]
        return hub

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sub in [self._events, *self._line_subs.values()]:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._line_subs.clear()
        await self.log.close()

    @property
    def watchers(self) -> int:
        """How many watchers are receiving live events (not those still catching up)."""
        return len(self._watchers)

    @property
    def subscriptions(self) -> int:
        """How many NATS subscriptions the hub holds: the event stream's, and one per job whose
        live log is being watched, however many watchers there are."""
        return (self._events is not None) + len(self._line_subs)

    # ---- watchers -------------------------------------------------------------------

    def join(self, watcher: Watcher, position: int) -> bool:
        """Hand `watcher` every event after the hub's head from now on, if its catch-up has
        reached `position` >= the head; False if it has not yet (it reads on from the store).
        Events up to `position` may still come: the watcher skips them."""
        if position < self.head:
            return False
        self._watchers.add(watcher)
        return True

    async def leave(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        job_id = watcher.subscription.job_id
        if job_id is None or not watcher.subscription.logs:
            return
        async with self._lines_lock:
            watchers = self._line_watchers.get(job_id)
            if watchers is not None:
                watchers.discard(watcher)
                if watchers:
                    return
                del self._line_watchers[job_id]
            sub = self._line_subs.pop(job_id, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def follow_lines(self, watcher: Watcher) -> None:
        """Also hand `watcher` its job's live log lines (one NATS subscription per job)."""
        job_id = watcher.subscription.job_id
        assert job_id is not None
        async with self._lines_lock:
            self._line_watchers.setdefault(job_id, set()).add(watcher)
            await self._subscribe_lines(job_id)

    async def owner(self, job_id: UUID) -> str | None:
        """Who submitted the job (remembered once known), or None if there is no such job."""
        known = self._owners.get(job_id)
        if known is not None:
            self._owners.move_to_end(job_id)
            return known
        known = await self.log.owner(job_id)
        if known is not None:
            self._remember(job_id, known)
        return known

    def _remember(self, job_id: UUID, owner: str) -> None:
        self._owners[job_id] = owner
        self._owners.move_to_end(job_id)
        if len(self._owners) > OWNERS_KEPT:
            self._owners.popitem(last=False)

    # ---- following the stream -------------------------------------------------------

    async def _subscribe(self) -> None:
        # The gateway connects in the background, and says so by setting the client.
        while self.bus.client is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self._nc = self.bus.client
        # Reconnects are the client's business: it subscribes again by itself.
        events = await self._nc.subscribe(ALL_EVENTS, cb=self._on_event)
        # Known to the server from here on (until then a message published is not heard, and
        # only the poll of the store's end would find its event).
        await self._nc.flush()
        self._events = events
        async with self._lines_lock:
            for job_id in list(self._line_watchers):
                await self._subscribe_lines(job_id)

    async def _on_event(self, msg: Msg) -> None:
        try:
            position = int((msg.headers or {}).get(HEADER_POSITION, ""))
        except ValueError:
            return
        if position <= self.head:
            return  # a repeat, or already read from the store
        try:
            async with self._advancing:
                if position <= self.head:
                    return
                if not self._watchers:
                    self.head = position  # nobody to hand it to
                    return
                if position > self.head + 1:
                    await self._fill(position - 1)
                    if position <= self.head:
                        return
                await self._hand_out(EventPublic.model_validate_json(msg.data))
        except Exception:
            # The store still has it: the next message or poll fills the gap from there.
            log.warning("live updates: an event could not be passed on yet", exc_info=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                end = await self.log.end()
                if end <= self.head:
                    continue
                async with self._advancing:
                    if self._watchers:
                        await self._fill(end)
                    else:
                        self.head = max(self.head, end)
            except Exception:
                log.warning("live updates: cannot read the store's end", exc_info=True)

    async def _fill(self, target: int) -> None:
        """Hand out every job event from the store up to (at least) `target`."""
        while self.head < target:
            page = await self.log.after(self.head)
            for stored in page.events:
                await self._hand_out(EventPublic.from_stored(stored))
            # Everything read was handed out or is no job's; a complete read saw the whole
            # store, which held `target` (it was committed before we were told of it).
            self.head = max(self.head, page.last, target if page.complete else 0)

    async def _hand_out(self, event: EventPublic) -> None:
        if event.type == "JobSubmitted":
            self._remember(event.job_id, str(event.data.get("submitted_by", "")))
        owner = None
        if any(w.needs_owners for w in self._watchers):
            owner = await self.owner(event.job_id)
        frame = event_frame(event)
        # From here to the end no await: the head and the queues move together.
        self.head = event.position
        for watcher in list(self._watchers):
            if watcher.wants(event, owner) and not watcher.offer_event(event.position, frame):
                self._watchers.discard(watcher)

    # ---- live log lines -------------------------------------------------------------

    async def _subscribe_lines(self, job_id: UUID) -> None:
        if job_id in self._line_subs or self._nc is None:
            return  # subscribed already, or when NATS is there
        self._line_subs[job_id] = await self._nc.subscribe(
            live_log_subject(job_id), cb=self._on_line
        )

    async def _on_line(self, msg: Msg) -> None:
        try:
            payload = json.loads(msg.data)
            job_id = UUID(str(payload["job_id"]))
        except (ValueError, TypeError, KeyError):
            return
        watchers = self._line_watchers.get(job_id)
        if not watchers:
            return
        line = {"type": "log", **{k: payload[k] for k in LOG_FIELDS if k in payload}}
        for watcher in watchers:
            watcher.offer_line(line)
