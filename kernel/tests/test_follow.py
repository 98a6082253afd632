"""Following the store's commits on real PostgreSQL: woken by each commit, not by a clock, and
listening again (then catching up) after the connection or the server is lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
from eventsourcing.persistence import PersistenceError

from vdo_cli.embedded import EmbeddedPostgres
from vdo_kernel.domain import Job
from vdo_kernel.follow import commits
from vdo_kernel.store import JobStore


class Reader:
    """A reader of the store that follows its commits: its position is what it has read."""

    def __init__(self, store: JobStore, database_url: str, **options: float) -> None:
        self.store = store
        self.database_url = database_url
        self.options = options
        self.position = 0
        self.wakeups = 0
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        channel = self.store.recorder.channel_name
        async for _ in commits(self.database_url, channel, self.stop, **self.options):
            self.wakeups += 1
            self.position = await asyncio.to_thread(self.store.max_position)

    async def reaches(self, position: int, within: float) -> None:
        async with asyncio.timeout(within):
            while self.position < position:
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def following(store: JobStore, database_url: str, **options: float) -> AsyncIterator[Reader]:
    reader = Reader(store, database_url, **options)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(10):
            while reader.wakeups == 0:  # listening, and caught up with what came before
                await asyncio.sleep(0.02)
        yield reader
    finally:
        reader.stop.set()
        await asyncio.wait_for(task, 5)  # well under the safety interval: the stop is heard


def submit(store: JobStore, count: int = 1) -> None:
    for _ in range(count):
        store.save(Job.submit(title="t", description="d"))


def submit_again(store: JobStore) -> None:
    """Submit once the store's pool has let go of the connections the restart broke."""
    for _ in range(10):
        try:
            submit(store)
            return
        except PersistenceError:
            continue
    submit(store)


async def test_a_reader_is_woken_by_commits_and_not_by_a_clock(
    database_url: str, store: JobStore
) -> None:
    await asyncio.to_thread(submit, store, 2)
    async with following(store, database_url, safety_seconds=3600) as reader:
        assert reader.position == 2  # what came before the start is caught up at once
        await asyncio.sleep(1.0)
        assert reader.wakeups == 1  # nothing happened: nothing woke it
        await asyncio.to_thread(submit, store, 3)
        await reader.reaches(5, within=3)
        assert reader.wakeups <= 4


async def test_a_rolled_back_append_wakes_nobody(database_url: str, store: JobStore) -> None:
    async with following(store, database_url, safety_seconds=3600) as reader:
        with psycopg.connect(database_url) as conn, conn.transaction(force_rollback=True):
            conn.execute("SELECT pg_notify(%s, '')", (store.recorder.channel_name,))
        await asyncio.sleep(0.5)
        assert reader.wakeups == 1


async def test_the_safety_interval_wakes_a_reader_when_nothing_is_heard(
    database_url: str, store: JobStore
) -> None:
    async with following(store, database_url, safety_seconds=0.3) as reader:
        await asyncio.sleep(1.2)
        assert reader.wakeups >= 3


async def test_a_lost_connection_is_listened_again_and_what_came_meanwhile_is_read(
    database_url: str, store: JobStore
) -> None:
    async with following(store, database_url, safety_seconds=3600, retry_seconds=0.5) as reader:
        with psycopg.connect(database_url, autocommit=True) as conn:
            (ended,) = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
            ).fetchone() or (False,)
        assert ended
        # Committed while nobody listens: read once listening again.
        await asyncio.to_thread(submit, store)
        await reader.reaches(1, within=5)
        await asyncio.to_thread(submit, store)
        await reader.reaches(2, within=3)


async def test_a_reader_follows_on_after_postgresql_restarts(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "postgres", durable=False)
    server.start()
    try:
        store = await asyncio.to_thread(JobStore, server.url)
        try:
            async with following(
                store, server.url, safety_seconds=3600, retry_seconds=0.2
            ) as reader:
                await asyncio.to_thread(submit, store)
                await reader.reaches(1, within=3)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(1.0)  # the reader tries, and waits for it
                await asyncio.to_thread(server.start)
                await asyncio.to_thread(submit_again, store)
                await reader.reaches(2, within=15)
                await asyncio.to_thread(submit, store)
                await reader.reaches(3, within=3)
        finally:
            store.close()
    finally:
        server.stop()
