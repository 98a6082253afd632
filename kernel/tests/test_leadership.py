"""One leader among replicas, on a real PostgreSQL: the first takes the lock, the next waits
and says so once, takes over when the leader's connection ends, and gives up at a stop."""

from __future__ import annotations

import asyncio

import psycopg
from structlog.testing import capture_logs

from vdo_kernel.leadership import become_leader

KEY = 0x7664_6F5F_7465


async def test_a_second_replica_waits_then_takes_over_when_the_leader_ends(
    database_url: str,
) -> None:
    stop = asyncio.Event()
    leader = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spare:
        assert await become_leader(leader, KEY, stop, waiting="standing by")
        with capture_logs() as said:
            waiting = asyncio.create_task(
                become_leader(spare, KEY, stop, waiting="standing by", retry_seconds=0.05)
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await leader.close()  # the leader's end frees the lock
            assert await asyncio.wait_for(waiting, timeout=5)
        assert [entry["event"] for entry in said].count("standing by") == 1


async def test_a_replica_standing_by_gives_up_at_a_stop(database_url: str) -> None:
    stop = asyncio.Event()
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as leader,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as spare,
    ):
        assert await become_leader(leader, KEY, stop, waiting="standing by")
        waiting = asyncio.create_task(become_leader(spare, KEY, stop, waiting="standing by"))
        await asyncio.sleep(0.1)
        stop.set()
        assert await asyncio.wait_for(waiting, timeout=5) is False
