"""The relay on real PostgreSQL and NATS: in order, once, and nothing lost across a crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from vdo_kernel.bus import EventMessage, connect, ensure_stream
from vdo_kernel.domain import Job
from vdo_kernel.relay import Relay, last_published_position
from vdo_kernel.store import JobStore
from vdo_kernel.subjects import ALL_EVENTS, STREAM


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await connect(nats_url, name="test")
    js = nc.jetstream()
    await ensure_stream(js)
    yield nc, js
    await nc.close()


async def stream_positions(js: JetStreamContext) -> list[int]:
    info = await js.stream_info(STREAM)
    positions = []
    for seq in range(1, (info.state.last_seq or 0) + 1):
        msg = await js.get_msg(STREAM, seq=seq)
        positions.append(EventMessage.decode(msg.data or b"").position)
    return positions


async def test_relay_publishes_every_event_once_in_order_across_a_crash(
    database_url: str, bus: tuple[Client, JetStreamContext]
) -> None:
    _, js = bus
    store = JobStore(database_url)
    try:
        for _ in range(5):
            store.save(Job.submit(title="t", description="d"))
        relay = Relay(store, js, database_url)
        assert await relay.publish_pending() == 5

        # Committed while no relay runs (it "crashed" after its last publish).
        for _ in range(3):
            store.save(Job.submit(title="t", description="d"))
        restarted = Relay(store, js, database_url)
        restarted.position = await last_published_position(js)
        assert restarted.position == 5
        assert await restarted.publish_pending() == 3

        # A relay that lost track and publishes everything again duplicates nothing.
        confused = Relay(store, js, database_url)
        confused.position = 0
        await confused.publish_pending()
        assert await stream_positions(js) == list(range(1, 9))
    finally:
        store.close()


async def test_running_relay_publishes_new_commits_promptly(
    database_url: str, bus: tuple[Client, JetStreamContext]
) -> None:
    _nc, js = bus
    store = JobStore(database_url)
    received: list[int] = []
    sub = await js.subscribe(ALL_EVENTS, ordered_consumer=True)
    stop = asyncio.Event()
    relay = Relay(store, js, database_url, idle_poll_seconds=5.0)
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.3)
        for _ in range(3):
            await asyncio.to_thread(store.save, Job.submit(title="t", description="d"))
        async with asyncio.timeout(3):  # well under the 5 s poll: NOTIFY woke the relay
            while len(received) < 3:
                msg = await sub.next_msg(timeout=3)
                received.append(EventMessage.decode(msg.data or b"").position)
        assert received == [1, 2, 3]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await sub.unsubscribe()
        store.close()


async def test_a_second_relay_stands_by(
    database_url: str, bus: tuple[Client, JetStreamContext]
) -> None:
    _, js = bus
    store = JobStore(database_url)
    stop = asyncio.Event()
    first = Relay(store, js, database_url, idle_poll_seconds=0.2)
    second = Relay(store, js, database_url, idle_poll_seconds=0.2)
    tasks = [asyncio.create_task(first.run(stop)), asyncio.create_task(second.run(stop))]
    try:
        await asyncio.sleep(0.5)
        for _ in range(4):
            await asyncio.to_thread(store.save, Job.submit(title="t", description="d"))
        await asyncio.sleep(1.5)
        assert sorted([first.published, second.published]) == [0, 4]
        assert await stream_positions(js) == [1, 2, 3, 4]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        store.close()


async def test_an_idle_relay_waits_for_commits_and_stops_at_once(
    database_url: str, bus: tuple[Client, JetStreamContext]
) -> None:
    _, js = bus
    store = JobStore(database_url)
    stop = asyncio.Event()
    relay = Relay(store, js, database_url)  # the default safety interval: a minute
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(store.save, Job.submit(title="t", description="d"))
        async with asyncio.timeout(3):
            while relay.published < 1:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)
        store.close()
