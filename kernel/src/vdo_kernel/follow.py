"""Following the store: a reader that needs every event is woken by the store's own commits.

The recorder sends a NOTIFY on its channel in each append (see `store.GaplessRecorder`), and
PostgreSQL delivers it when, and only if, the transaction commits. `commits` LISTENs on that
channel on a connection of its own and wakes its reader after each commit; the reader then
reads on from the position it tracks. Nothing is read from a notification, so a burst of
commits is one wake-up and a lost one costs nothing but a delay.

When the connection is lost (PostgreSQL restarted, say), commits made meanwhile were not
heard: `commits` connects again, LISTENs again, and wakes its reader, which catches up from
its position. A long safety interval wakes the reader regardless (and checks that a quiet
connection is still there), so nothing depends on a notification arriving.

A reader that leads (the relay, the scheduler) listens on the connection that holds its
leader's lock instead (`listen`, then `next_commit`): hearing a commit there also says the lock
is still held, and losing the connection ends its leadership and its listening together (it
then leads again, reading on from its position, as after any loss of its connection).

Why not the library's own subscription (`recorder.subscribe`)? It pulls the events itself
(the projector must read them under its tracking lock, the scheduler only a few types), runs
two threads per subscriber, holds a connection of the store's pool for good, and ends at the
first lost connection instead of listening again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from vdo_kernel import logs

log = logs.get(__name__)

# How often a reader is woken when nothing is heard: a safety net, not the mechanism.
SAFETY_SECONDS = 60.0
# The wait before connecting again after the connection is lost (doubled up to the maximum
# while PostgreSQL stays away).
RETRY_SECONDS = 1.0
RETRY_MAX_SECONDS = 10.0


async def commits(
    database_url: str,
    channel: str,
    stop: asyncio.Event,
    *,
    safety_seconds: float = SAFETY_SECONDS,
    retry_seconds: float = RETRY_SECONDS,
) -> AsyncIterator[None]:
    """Yield whenever the store may hold events its reader has not read: once listening
    (whatever came before), after each commit heard (commits heard together are one yield),
    after each reconnection (commits made while the connection was down were not heard), and
    at least every `safety_seconds`. Ends when `stop` is set."""
    delay = retry_seconds
    lost = False
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        except (psycopg.OperationalError, OSError) as error:
            if not lost:
                log.warning("cannot listen to the store; trying again", error=str(error))
                lost = True
            await _pause(stop, delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            continue
        try:
            await listen(conn, channel)
            if lost:
                log.info("listening to the store again")
            lost = False
            delay = retry_seconds
            while not stop.is_set():
                yield
                await next_commit(conn, stop, safety_seconds)
        except (psycopg.OperationalError, OSError) as error:
            log.warning("lost the store's notifications; listening again", error=str(error))
            lost = True
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        await _pause(stop, delay)


async def listen(conn: psycopg.AsyncConnection[Any], channel: str) -> None:
    """Have `conn` (in autocommit mode) hear the commits to the store of `channel` (the store's
    `recorder.channel_name`)."""
    await conn.execute(SQL("LISTEN {}").format(Identifier(channel)))


async def next_commit(
    conn: psycopg.AsyncConnection[Any], stop: asyncio.Event, safety_seconds: float
) -> bool:
    """Wait on a listening connection for the next commit (True), the stop or `safety_seconds`
    (False). Commits heard together with the first are taken too: the reader's next read
    covers them all. Raises `psycopg.OperationalError` when the connection is lost. When
    nothing was heard it makes sure the connection is still there (a half-open one would hear
    nothing, ever), so a caller that holds a lock on it knows it still does."""
    listening = asyncio.ensure_future(_first_notification(conn))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait(
            {listening, stopping}, timeout=safety_seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopping.cancel()
        if not listening.done():
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
    if listening.cancelled():
        if not stop.is_set():
            await conn.execute("SELECT 1")
        return False
    listening.result()  # raises what the connection raised (lost, say)
    async for _ in conn.notifies(timeout=0):
        pass
    return True


async def _first_notification(conn: psycopg.AsyncConnection[Any]) -> None:
    # psycopg's own wait (`conn.notifies()` without a timeout) wakes ten times a second to look
    # for interrupts; this waits for the socket instead, so an idle follower costs nothing.
    loop = asyncio.get_running_loop()
    while True:
        async for _ in conn.notifies(timeout=0):  # what arrived: taken without waiting
            return
        readable: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()
        loop.add_reader(fd, _resolve, readable)
        try:
            await readable
        finally:
            loop.remove_reader(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
