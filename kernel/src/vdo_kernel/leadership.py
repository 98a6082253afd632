"""One leader among a service's replicas: a PostgreSQL advisory lock held on a connection of
its own. Whoever takes it leads for as long as that connection lives; the others wait, and one
of them takes over within a couple of seconds of the leader's end (its connection closing frees
the lock)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from vdo_kernel import logs

log = logs.get(__name__)

# How often a replica standing by tries the lock again.
RETRY_SECONDS = 2.0


async def become_leader(
    conn: psycopg.AsyncConnection[Any],
    key: int,
    stop: asyncio.Event,
    *,
    waiting: str,
    retry_seconds: float = RETRY_SECONDS,
) -> bool:
    """Hold the advisory lock `key` on `conn`: True once it is ours, False if `stop` came
    first. `waiting` is logged once, when another replica holds it."""
    said = False
    while not stop.is_set():
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        row = await cur.fetchone()
        if row and row[0]:
            return True
        if not said:
            log.info(waiting)
            said = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=retry_seconds)
    return False
