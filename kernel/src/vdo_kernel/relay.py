"""The relay (outbox): publishes every stored event, in order, to the JetStream stream.

Each message's `Nats-Msg-Id` is the event's global position, so a re-publish is dropped by
the server. On start the relay reads the position of the stream's last message and continues
after it, so a crash between a commit and its publish only delays that publish. Only one relay
publishes at a time (a PostgreSQL advisory lock), so running a spare one is safe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from vdo_kernel import logs
from vdo_kernel.bus import EventMessage
from vdo_kernel.follow import SAFETY_SECONDS, listen, next_commit
from vdo_kernel.leadership import become_leader
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore, StoredJobEvent
from vdo_kernel.subjects import HEADER_POSITION, STREAM

log = logs.get(__name__)

RELAY_LOCK_KEY = 0x7664_6F5F_7265  # "vdo_re": one relay publishes at a time


def to_message(event: StoredJobEvent) -> EventMessage:
    return EventMessage(
        position=event.position,
        job_id=event.job_id,
        version=event.version,
        type=event.type,
        timestamp=event.timestamp.isoformat(),
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        data=event.data,
    )


async def last_published_position(js: JetStreamContext) -> int:
    info = await js.stream_info(STREAM)
    if not info.state.last_seq:
        return 0
    try:
        msg = await js.get_msg(STREAM, seq=info.state.last_seq)
    except NotFoundError:
        return 0
    headers = msg.headers or {}
    return int(headers.get(HEADER_POSITION, "0"))


class Relay:
    def __init__(
        self,
        store: JobStore,
        js: JetStreamContext,
        database_url: str,
        *,
        batch_size: int = 500,
        idle_poll_seconds: float = SAFETY_SECONDS,
    ) -> None:
        self.store = store
        self.js = js
        self.database_url = database_url
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.position = 0
        self.published = 0
        # Whether the last look at the store found nothing left to publish.
        self.caught_up = False
        self._reader: psycopg.AsyncConnection[Any] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with (
            await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn,
            await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as reader,
        ):
            self._reader = reader
            if not await become_leader(
                conn, RELAY_LOCK_KEY, stop, waiting="another relay is publishing; standing by"
            ):
                return
            # On the lock's connection: a commit heard there also says the lock is still ours.
            await listen(conn, self.store.recorder.channel_name)
            self.position = await last_published_position(self.js)
            log.info("relay started", after_position=self.position)
            while not stop.is_set():
                await self.publish_pending()
                if self.caught_up:
                    # A NOTIFY arrives with each commit; the timeout is a safety net, not the
                    # mechanism.
                    await next_commit(conn, stop, self.idle_poll_seconds)

    async def publish_pending(self) -> int:
        """Publish every event stored after the last published one; returns how many."""
        total = 0
        while True:
            events = await self._read()
            self.caught_up = not events
            if not events:
                return total
            for event in events:
                message = to_message(event)
                try:
                    await self.js.publish(
                        message.subject, message.encode(), headers=message.headers(), timeout=10
                    )
                except Exception:
                    # The stream is the record of what went out: ask it where to resume.
                    log.warning("relay publish failed; resuming from the stream", exc_info=True)
                    await asyncio.sleep(0.5)
                    self.position = await self._resume_position()
                    self.caught_up = False  # what failed is sent again at once
                    return total
                self.position = event.position
                self.published += 1
                total += 1

    async def _read(self) -> list[StoredJobEvent]:
        if self._reader is None:  # not running: publish_pending called on its own
            return await asyncio.to_thread(self.store.read, self.position, self.batch_size)
        # On the relay's own connection, without a thread hop: this is on every event's path.
        cursor = await self._reader.execute(
            self.store.read_after_sql, (self.position, self.batch_size), prepare=True
        )
        return [self.store.decode_row(row) for row in await cursor.fetchall()]

    async def _resume_position(self) -> int:
        while True:
            try:
                return await last_published_position(self.js)
            except Exception:
                await asyncio.sleep(0.5)


async def run_relay(settings: Settings | None = None) -> None:
    """The relay process: `python -m vdo_kernel.relay`."""
    from vdo_kernel.service import started

    async with started("relay", settings or Settings()) as up:
        relay = Relay(up.store, up.js, up.database_url)
        while not up.stop.is_set():
            try:
                await relay.run(up.stop)
            except (psycopg.OperationalError, OSError) as error:
                log.warning("relay lost the database; retrying", error=str(error))
                await asyncio.sleep(1.0)


def main() -> None:
    asyncio.run(run_relay())


if __name__ == "__main__":
    main()
