"""The consumer base on a real NATS server: a replica that shuts down hands back what it cannot
finish in its grace time, at once, and another replica takes it up long before the message's
ack wait would have run out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from uuid import uuid4

import pytest
import structlog.testing
from nats.aio.client import Client
from nats.js import JetStreamContext

from vdo_kernel import consumer
from vdo_kernel.bus import (
    EventMessage,
    connect,
    ensure_consumer,
    ensure_stream,
    server_urls,
    without_credentials,
)
from vdo_kernel.consumer import Delivery, Subscription
from vdo_kernel.subjects import STREAM, event_subject

ACK_WAIT = 30.0  # far longer than the test: a handed-back message must not wait for it


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await connect(nats_url, name="test")
    js = nc.jetstream()
    await ensure_stream(js)
    yield nc, js
    await nc.close()


async def publish_one(js: JetStreamContext) -> EventMessage:
    message = EventMessage(
        position=1,
        job_id=uuid4(),
        version=1,
        type="JobSubmitted",
        timestamp="2026-01-01T00:00:00+00:00",
        correlation_id="c",
        causation_id="c",
        data={},
    )
    await js.publish(message.subject, message.encode(), headers=message.headers())
    return message


def subscription(js: JetStreamContext, handler: object, *, grace: float) -> Subscription:
    return Subscription(
        js,
        durable="test-consumer",
        filter_subjects=[event_subject("JobSubmitted")],
        handler=handler,  # type: ignore[arg-type]
        ack_wait=ACK_WAIT,
        concurrency=1,
        shutdown_grace=grace,
    )


async def test_work_unfinished_at_shutdown_is_handed_back_to_another_replica_at_once(
    bus: tuple[Client, JetStreamContext],
) -> None:
    _, js = bus
    started = asyncio.Event()
    cancelled: list[int] = []

    async def slow(delivery: Delivery) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(delivery.num_delivered)
            raise

    taken: asyncio.Queue[Delivery] = asyncio.Queue()

    async def quick(delivery: Delivery) -> None:
        await taken.put(delivery)

    sent = await publish_one(js)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(subscription(js, slow, grace=0.5).run(stop_first))
    await asyncio.wait_for(started.wait(), 10)
    second = asyncio.create_task(subscription(js, quick, grace=0.5).run(stop_second))

    stopping_at = time.monotonic()
    stop_first.set()
    await asyncio.wait_for(first, 10)
    delivery = await asyncio.wait_for(taken.get(), 10)
    waited = time.monotonic() - stopping_at
    stop_second.set()
    await asyncio.wait_for(second, 10)

    assert cancelled == [1]
    assert delivery.message == sent
    assert delivery.num_delivered == 2
    assert waited < ACK_WAIT / 3, f"the message came back only after {waited:.1f}s"


async def test_work_that_finishes_within_the_grace_time_is_finished_and_acknowledged(
    bus: tuple[Client, JetStreamContext],
) -> None:
    _, js = bus
    started, finished = asyncio.Event(), asyncio.Event()

    async def short(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    await publish_one(js)
    stop = asyncio.Event()
    run = asyncio.create_task(subscription(js, short, grace=10).run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(run, 10)
    assert finished.is_set()
    # The acknowledgement was sent; the server takes it in a moment.
    for _ in range(50):
        info = await js.consumer_info("VDO_EVENTS", "test-consumer")
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
    assert info.num_redelivered == 0


def test_a_cluster_url_names_each_server_and_logs_show_no_credentials() -> None:
    url = "nats://a:4222, nats://user:secret@b:4222,,tls://c:4222"
    assert server_urls(url) == ["nats://a:4222", "nats://user:secret@b:4222", "tls://c:4222"]
    assert without_credentials("nats://user:secret@b:4222") == "nats://b:4222"
    assert without_credentials("nats://a:4222") == "nats://a:4222"
    with pytest.raises(ValueError, match="no NATS server"):
        server_urls(" , ")


async def test_connect_waits_for_a_server_that_is_not_up_yet_and_names_it_without_secrets() -> None:
    with pytest.raises(RuntimeError) as caught:
        await connect("nats://user:secret@127.0.0.1:1", name="test", connect_timeout=0.5)
    assert "127.0.0.1:1" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_a_replica_that_cannot_fetch_says_so_and_says_when_it_fetches_again(
    bus: tuple[Client, JetStreamContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, js = bus
    monkeypatch.setattr(consumer, "FAILURES_WORTH_A_WARNING", 3)
    taken: asyncio.Queue[Delivery] = asyncio.Queue()

    async def quick(delivery: Delivery) -> None:
        await taken.put(delivery)

    stop = asyncio.Event()
    sub = subscription(js, quick, grace=1.0)
    with structlog.testing.capture_logs() as logged:
        running = asyncio.create_task(sub.run(stop))
        await until(lambda: any(e["event"] == "consuming" for e in logged))
        # The consumer disappears under the replica (deleted by hand, or lost with its server).
        await js.delete_consumer(STREAM, "test-consumer")
        await until(lambda: any(e["event"].startswith("cannot fetch") for e in logged), 30)
        warning = next(e for e in logged if e["event"].startswith("cannot fetch"))
        assert warning["log_level"] == "warning"
        assert warning["consumer"] == "test-consumer"
        # Said once, not at every failed try.
        await asyncio.sleep(2.0)
        assert sum(e["event"].startswith("cannot fetch") for e in logged) == 1

        await ensure_consumer(
            js, "test-consumer", [event_subject("JobSubmitted")], ack_wait=ACK_WAIT
        )
        sent = await publish_one(js)
        delivery = await asyncio.wait_for(taken.get(), 30)
        assert delivery.message.job_id == sent.job_id
        assert any(e["event"] == "fetching again" for e in logged)
        stop.set()
        await asyncio.wait_for(running, 10)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
