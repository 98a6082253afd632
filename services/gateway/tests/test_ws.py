"""Live updates (`/api/ws`) on a real gateway server, PostgreSQL, JetStream and relay: the
protocol, resuming from a position, heartbeats, slow and silent clients, gaps on the bus, log
lines, and bad input of every kind answered with a clear error and a close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from tests.live_client import LiveClient, ws_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Origin
from websockets.uri import parse_uri

from vdo_gateway.app import create_app
from vdo_gateway.live import LiveHub
from vdo_gateway.routes import ws
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.bus import ensure_stream
from vdo_kernel.domain import Job
from vdo_kernel.livelog import LiveLog
from vdo_kernel.relay import Relay, to_message
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore, StoredJobEvent

HEARTBEAT = 0.3
QUEUE_LIMIT = 16


@dataclass
class Gateway:
    url: str
    app: FastAPI
    store: JobStore
    nc: NatsClient

    @property
    def hub(self) -> LiveHub:
        hub = self.app.state.live
        assert isinstance(hub, LiveHub)
        return hub

    def ws(self, **query: Any) -> str:
        return ws_url(self.url, **query)

    def raw(self, **query: Any) -> RawClient:
        return RawClient(self.ws(**query))

    async def submit(self, title: str = "demo", description: str = "a word-count tool") -> str:
        async with httpx.AsyncClient(base_url=self.url) as api:
            response = await api.post(
                "/api/jobs", json={"title": title, "description": description}
            )
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as api:
            response = await api.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def append(
        self, jobs: int, *, description: str = "a word-count tool", by: str = "anonymous"
    ) -> list[str]:
        """Jobs straight into the store (one event each)."""
        made = []
        for n in range(jobs):
            job = Job.submit(title=f"bulk {n}", description=description, submitted_by=by)
            self.store.save(job)
            made.append(str(job.id))
        return made

    def step(self, job_id: str, times: int = 1) -> list[int]:
        """Append `times` events to the job (admitted, its step started, then resumed); their
        positions."""
        job = self.store.get(UUID(job_id))
        for _ in range(times):
            due = job.due()
            if due is None:
                job.admit(by="test", causation_id="test")
            else:
                job.start_step(due, worker="test", causation_id="test")
        return self.store.save(job)


class RawClient:
    """A client on a plain socket with a small buffer, reading only when asked and a little at
    a time: what a slow or stuck client looks like to the server. (The websockets library's
    client reads ahead into memory: tens of megabytes before the server would notice.)"""

    CHUNK = 4096

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.url = url
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.CHUNK)
        self.pending: deque[dict[str, Any]] = deque()
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None

    async def __aenter__(self) -> RawClient:
        loop = asyncio.get_running_loop()
        host, port = urlsplit(self.url).netloc.rsplit(":", 1)
        self.sock.setblocking(False)
        await loop.sock_connect(self.sock, (host, int(port)))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.state is State.CONNECTING:
            await self._read_chunk()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    async def receive(self, delay: float = 0.0) -> dict[str, Any] | None:
        """The next message (None once the server has closed), reading a chunk at a time
        after `delay` each."""
        while not self.pending:
            if self.close_code is not None:
                return None
            await asyncio.sleep(delay)
            await self._read_chunk()
        message = self.pending.popleft()
        if message["type"] == "event":
            self.events.append(message["event"])
        return message

    async def caught_up(self) -> None:
        while (message := await self.receive()) is not None:
            if message["type"] == "caught_up":
                return
        raise AssertionError(f"closed ({self.close_code}) before catching up")

    async def _read_chunk(self) -> None:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, self.CHUNK), 10)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.pending.append(json.loads(bytes(event.data)))
        if self.protocol.close_rcvd is not None or not data:
            self.close_code = self.protocol.close_rcvd.code if self.protocol.close_rcvd else -1
        await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if data:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendall(self.sock, data)


@asynccontextmanager
async def running_gateway(
    database_url: str,
    nats_url: str,
    home: Path,
    store: JobStore,
    *,
    auth: Literal["on", "off"] = "off",
    relay: bool = True,
    heartbeat_timeout: float = 10.0,
    small_buffers: bool = False,
    poll_seconds: float = 1.0,
) -> AsyncIterator[Gateway]:
    """The gateway served by uvicorn in this process, with the relay beside it (no phase
    service: tests append events to the store themselves). With `small_buffers`, the kernel
    holds little of what the gateway sends to a client that does not read (rather than
    megabytes), so the gateway's own queue for it fills soon."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if small_buffers:
        # Accepted connections inherit it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    settings = Settings(
        database_url=database_url, nats_url=nats_url, home=home, port=port, auth=auth
    )
    app = create_app(
        settings,
        GatewaySettings(
            ws_heartbeat_seconds=HEARTBEAT,
            ws_heartbeat_timeout_seconds=heartbeat_timeout,
            ws_queue_limit=QUEUE_LIMIT,
            ws_send_timeout_seconds=1.0,
            ws_poll_seconds=poll_seconds,
        ),
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    stop = asyncio.Event()
    relaying = asyncio.create_task(
        Relay(store, js, database_url, idle_poll_seconds=0.2).run(stop) if relay else stop.wait()
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not serving.done(), "the gateway did not start"
            assert time.monotonic() < deadline, "the gateway did not start in time"
            await asyncio.sleep(0.02)
        yield Gateway(url=f"http://127.0.0.1:{port}", app=app, store=store, nc=nc)
    finally:
        server.should_exit = True
        await serving
        stop.set()
        await relaying
        await nc.close()
        listener.close()


@pytest.fixture
async def gateway(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> AsyncIterator[Gateway]:
    async with running_gateway(database_url, nats_url, tmp_path, store) as running:
        yield running


def log_positions(store: JobStore) -> list[int]:
    return [e.position for e in store.read(0, 100_000)]


def shape(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(e["position"], e["job_id"], e["type"]) for e in events]


# ---- the protocol ------------------------------------------------------------------------


async def test_a_job_history_then_its_live_events_as_the_api_shows_them(gateway: Gateway) -> None:
    job_id = await gateway.submit()
    other = await gateway.submit(title="another")
    async with LiveClient.connect(gateway.ws(), subscribe={"job_id": job_id}) as client:
        assert await client.receive() == {
            "type": "subscribed",
            "job_id": job_id,
            "after": 0,
            "logs": False,
            "heartbeat_seconds": HEARTBEAT,
        }
        first = await client.receive()
        assert first["type"] == "event"
        assert first["position"] == first["event"]["position"] == 1
        caught_up = await client.receive()
        assert caught_up == {"type": "caught_up", "position": 2}

        await asyncio.to_thread(gateway.step, other)
        live = await asyncio.to_thread(gateway.step, job_id, 2)
        await client.until(lambda m: m.get("position") == live[-1])
        # Exactly the job's events, in the API's own JSON.
        assert client.events == await gateway.events(job_id)
        assert [e["position"] for e in client.events] == [1, *live]


async def test_every_job_from_a_position_given_in_the_query(gateway: Gateway) -> None:
    jobs = await asyncio.to_thread(gateway.append, 3)
    async with LiveClient.connect(gateway.ws(after=1)) as client:
        subscribed = await client.receive()
        assert (subscribed["job_id"], subscribed["after"]) == (None, 1)
        await client.until(lambda m: m["type"] == "caught_up")
        assert [e["job_id"] for e in client.events] == jobs[1:]
        more = await asyncio.to_thread(gateway.step, jobs[0], 3)
        await client.until(lambda m: m.get("position") == more[-1])
    assert [e["position"] for e in client.events] == [2, 3, *more]


async def test_reconnecting_from_the_last_position_misses_nothing_and_repeats_nothing(
    gateway: Gateway,
) -> None:
    jobs = await asyncio.to_thread(gateway.append, 2)
    seen: list[dict[str, Any]] = []
    missed: list[int] = []  # caught up from the store on each reconnection
    writer = asyncio.create_task(asyncio.to_thread(steps_meanwhile, gateway, jobs, 30))
    try:
        for cut in range(6):
            async with LiveClient.connect(
                gateway.ws(), subscribe={"after": seen[-1]["position"] if seen else 0}
            ) as client:
                backlog = await client.until(lambda m: m["type"] == "caught_up")
                missed.append(sum(m["type"] == "event" for m in backlog))
                with contextlib.suppress(TimeoutError):
                    await client.until(lambda m: m["type"] == "event", timeout=0.2)
                # Cut off mid-stream: whatever was on its way to it is lost to it.
            seen += client.events
            await asyncio.sleep(0.05 * cut)
        await writer
        async with LiveClient.connect(
            gateway.ws(), subscribe={"after": seen[-1]["position"]}
        ) as client:
            await client.until(lambda m: m["type"] == "caught_up")
            seen += client.events
    finally:
        await writer
    assert sum(missed[1:]) > 0, "no reconnection had anything to catch up on"
    stored = [e.to_json() for e in await asyncio.to_thread(gateway.store.read, 0, 1000)]
    assert [e["position"] for e in seen] == [e["position"] for e in stored]
    everything = {e["position"]: e for job in jobs for e in await gateway.events(job)}
    assert seen == [everything[p] for p in sorted(everything)]


def steps_meanwhile(gateway: Gateway, jobs: list[str], count: int) -> None:
    for n in range(count):
        gateway.step(jobs[n % len(jobs)])
        time.sleep(0.02)


async def test_heartbeats_carry_the_position_to_resume_from(gateway: Gateway) -> None:
    mine = await gateway.submit()
    async with LiveClient.connect(gateway.ws(job=mine), background=False) as client:
        await client.until(lambda m: m["type"] == "caught_up")
        # Other jobs move the log on; the heartbeats say the client has seen all it should.
        others = await asyncio.to_thread(gateway.append, 3)
        await asyncio.to_thread(gateway.step, others[0], 2)
        end = await asyncio.to_thread(gateway.store.max_position)
        started = time.monotonic()
        beats: list[dict[str, Any]] = []
        while not beats or beats[-1]["position"] < end:
            raw = json.loads(await asyncio.wait_for(client.connection.recv(), 5))
            assert raw["type"] == "heartbeat", raw
            beats.append(raw)
            await client.send({"type": "pong"})
        assert time.monotonic() - started < 10 * HEARTBEAT
    # Resuming from there gets nothing of the other jobs, and nothing twice.
    async with LiveClient.connect(gateway.ws(job=mine, after=beats[-1]["position"])) as again:
        await again.until(lambda m: m["type"] == "caught_up")
        assert again.events == []


async def test_a_client_that_does_not_answer_heartbeats_is_dropped(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> None:
    async with running_gateway(
        database_url, nats_url, tmp_path, store, heartbeat_timeout=1.5
    ) as gateway:
        await silent_client(gateway)


async def silent_client(gateway: Gateway) -> None:
    started = time.monotonic()
    async with connect(gateway.ws(after=0)) as connection:
        messages, closed = await until_closed(connection)
    assert closed == ws.TIMEOUT
    assert 1.5 <= time.monotonic() - started < 5
    assert [m["type"] for m in messages[-2:]] == ["heartbeat", "error"]
    assert "pong" in messages[-1]["detail"]
    assert gateway.hub.watchers == 0


async def test_a_slow_client_is_told_to_resync_while_the_others_carry_on(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> None:
    async with (
        running_gateway(database_url, nats_url, tmp_path, store, small_buffers=True) as gateway,
        LiveClient.connect(gateway.ws(after=0)) as fast,
        gateway.raw(after=0) as slow,
    ):
        await fast.until(lambda m: m["type"] == "caught_up")
        await slow.caught_up()
        reading = asyncio.create_task(read_slowly(slow))
        # Big events, many at once: more than the slow client's queue while it reads one.
        jobs = await asyncio.to_thread(gateway.append, 120, description="x" * 20_000)
        last = await asyncio.to_thread(gateway.store.max_position)
        await fast.until(partial(at_position, last))
        assert [e["job_id"] for e in fast.events] == jobs
        messages = await reading
    assert slow.close_code == ws.RESYNC
    resync = messages[-1]
    assert resync["type"] == "resync"
    assert 0 < len(slow.events) < len(jobs)
    assert resync["after"] == slow.events[-1]["position"]
    # Resuming where it was told to gets the rest, once each.
    async with (
        running_gateway(database_url, nats_url, tmp_path, store) as gateway,
        LiveClient.connect(gateway.ws(after=resync["after"])) as again,
    ):
        await again.until(partial(at_position, last))
    assert [e["job_id"] for e in slow.events + again.events] == jobs


async def read_slowly(client: RawClient) -> list[dict[str, Any]]:
    messages = []
    while (message := await client.receive(delay=0.005)) is not None:
        messages.append(message)
    return messages


async def test_a_client_that_stops_reading_is_dropped_and_stalls_nobody(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> None:
    async with (
        running_gateway(database_url, nats_url, tmp_path, store, small_buffers=True) as gateway,
        LiveClient.connect(gateway.ws(after=0)) as reader,
        gateway.raw(after=0) as stuck,
    ):
        await reader.until(lambda m: m["type"] == "caught_up")
        await stuck.caught_up()
        await wait_until(lambda: gateway.hub.watchers == 2)
        for _ in range(3):
            jobs = await asyncio.to_thread(gateway.append, 40, description="y" * 20_000)
            last = await asyncio.to_thread(gateway.store.max_position)
            started = time.monotonic()
            await reader.until(partial(at_position, last))
            assert time.monotonic() - started < 2
            assert [e["job_id"] for e in reader.events[-len(jobs) :]] == jobs
        await wait_until(lambda: gateway.hub.watchers == 1, timeout=10)
        # Its connection is given up (after the send timeout): what was on its way to it is
        # all it gets, without even a close frame (nothing more could be sent).
        await asyncio.sleep(1.5)
        rest = await read_slowly(stuck)
    assert 0 < len(rest) < 3 * 40
    assert stuck.close_code == -1


# ---- the bus loses, repeats and lags; the store does not ------------------------------


@pytest.fixture
async def quiet_gateway(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> AsyncIterator[Gateway]:
    """A gateway whose relay is never started (the test publishes, or not, by itself), and
    which does not look in the store by itself: only what comes on the bus moves it."""
    async with running_gateway(
        database_url, nats_url, tmp_path, store, relay=False, poll_seconds=3600
    ) as running:
        yield running


async def test_gaps_and_repeats_on_the_bus_are_mended_from_the_store_at_once(
    quiet_gateway: Gateway,
) -> None:
    gateway = quiet_gateway
    job_id = (await asyncio.to_thread(gateway.append, 1))[0]
    # The gateway follows the bus (it subscribes in the background once NATS is connected).
    await wait_until(lambda: gateway.hub.subscriptions == 1, timeout=30)
    async with LiveClient.connect(gateway.ws(after=0)) as client:
        await client.until(lambda m: m["type"] == "caught_up")
        positions = await asyncio.to_thread(gateway.step, job_id, 3)
        stored = await asyncio.to_thread(gateway.store.read, 0, 100)
        # Only the last of three reaches the bus: the two before it come from the store (the
        # gateway does not poll here, so it was the message that sent it there).
        await publish(gateway, stored[-1])
        await client.until(lambda m: m.get("position") == positions[-1])
        # Repeats (a relay re-publishing after a crash) are dropped.
        for event in stored:
            await publish(gateway, event)
        more = await asyncio.to_thread(gateway.step, job_id)
        await publish(gateway, (await asyncio.to_thread(gateway.store.read, 0, 100))[-1])
        await client.until(lambda m: m.get("position") == more[-1])
        await asyncio.sleep(0.3)
    assert [e["position"] for e in client.events] == [e.position for e in stored] + more


async def test_an_event_lost_at_the_tail_of_the_bus_is_found_in_the_store(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> None:
    async with running_gateway(
        database_url, nats_url, tmp_path, store, relay=False, poll_seconds=0.2
    ) as gateway:
        job_id = (await asyncio.to_thread(gateway.append, 1))[0]
        async with LiveClient.connect(gateway.ws(after=0)) as client:
            await client.until(lambda m: m["type"] == "caught_up")
            # Committed and never published (its relay crashed, say): the store's end is read.
            tail = await asyncio.to_thread(gateway.step, job_id, 2)
            await client.until(lambda m: m.get("position") == tail[-1], timeout=10)
        assert [e["position"] for e in client.events] == [1, *tail]


async def publish(gateway: Gateway, event: StoredJobEvent) -> None:
    message = to_message(event)
    await gateway.nc.publish(message.subject, message.encode(), headers=message.headers())
    await gateway.nc.flush()


async def test_many_clients_share_one_subscription(gateway: Gateway) -> None:
    job_id = await gateway.submit()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(LiveClient.connect(gateway.ws(job=job_id, logs=n < 3)))
            for n in range(20)
        ]
        for client in clients:
            await client.until(lambda m: m["type"] == "caught_up")
        await wait_until(lambda: gateway.hub.watchers == 20)
        # The event stream's and the job's live log's: not one per client.
        assert gateway.hub.subscriptions == 2
        positions = await asyncio.to_thread(gateway.step, job_id, 2)
        for client in clients:
            await client.until(lambda m: m.get("position") == positions[-1])
            assert [e["position"] for e in client.events] == [1, *positions]
    await wait_until(lambda: gateway.hub.watchers == 0)
    assert gateway.hub.subscriptions == 1


def at_position(position: int, message: dict[str, Any]) -> bool:
    return message.get("position") == position


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_log_lines_of_the_job_for_those_who_asked(gateway: Gateway) -> None:
    job_id = await gateway.submit()
    async with (
        LiveClient.connect(gateway.ws(), subscribe={"job_id": job_id, "logs": True}) as watching,
        LiveClient.connect(gateway.ws(job=job_id)) as events_only,
    ):
        for client in (watching, events_only):
            await client.until(lambda m: m["type"] == "caught_up")
        await wait_until(lambda: gateway.hub.subscriptions == 2)
        live = LiveLog(gateway.nc)
        live.emit(UUID(job_id), step="plan", attempt=1, stream="model", text="thinking…")
        live.emit(uuid4(), step="plan", attempt=1, stream="model", text="someone else's")
        line = await watching.receive()
        positions = await asyncio.to_thread(gateway.step, job_id)
        await events_only.until(lambda m: m.get("position") == positions[-1])
        await live.close()
    assert line["type"] == "log"
    assert "position" not in line
    assert (line["job_id"], line["step"], line["attempt"], line["stream"], line["text"]) == (
        job_id,
        "plan",
        1,
        "model",
        "thinking…",
    )
    assert [e["position"] for e in events_only.events] == [1, *positions]


# ---- who sees what -------------------------------------------------------------------


@pytest.fixture
async def secured_gateway(
    database_url: str, nats_url: str, tmp_path: Path, store: JobStore
) -> AsyncIterator[Gateway]:
    async with running_gateway(database_url, nats_url, tmp_path, store, auth="on") as running:
        yield running


def account(store: JobStore, name: str, role: Role) -> str:
    user = User.add(name=name, role=role, by="test")
    token = new_token()
    store.save(user, Token.create(token, user=user, name="test", by="test"))
    return token


async def test_a_token_is_required_and_members_see_their_own_jobs(
    secured_gateway: Gateway,
) -> None:
    gateway = secured_gateway
    alice = await asyncio.to_thread(account, gateway.store, "alice", Role.MEMBER)
    viewer = await asyncio.to_thread(account, gateway.store, "vera", Role.VIEWER)
    hers = await asyncio.to_thread(gateway.append, 2, by="alice")
    his = await asyncio.to_thread(gateway.append, 2, by="bob")

    for url, first in [
        (gateway.ws(after=0), None),
        (gateway.ws(after=0, token="vdo_not-a-token-at-all-not-a-token-at-all"), None),
        (gateway.ws(), {"type": "auth", "token": "nope"}),
    ]:
        async with LiveClient.connect(url) as refused:
            if first is not None:
                await refused.send(first)
                await refused.send({"type": "subscribe"})
            messages, code = await refused.closed()
        assert code == ws.UNAUTHENTICATED
        assert messages[-1]["type"] == "error"
        assert "token" in messages[-1]["detail"]

    async def everything(**connect: Any) -> list[str]:
        async with LiveClient.connect(**connect) as client:
            await client.until(lambda m: m["type"] == "caught_up")
            more = await asyncio.to_thread(gateway.step, hers[0])
            more += await asyncio.to_thread(gateway.step, his[0])
            await client.reach(more[-1])
            return [e["job_id"] for e in client.events]

    # Her token three ways: header, query, first message. The account events are not shown.
    seen = await everything(
        url=gateway.ws(after=0), additional_headers={"Authorization": f"Bearer {alice}"}
    )
    assert seen == [*hers, hers[0]]
    seen = await everything(url=gateway.ws(after=0, token=alice))
    assert seen == [*hers, hers[0], hers[0]]
    async with LiveClient.connect(gateway.ws()) as client:
        await client.send({"type": "auth", "token": alice})
        await client.send({"type": "subscribe", "job_id": his[0]})
        messages, code = await client.closed()
    assert code == ws.NOT_FOUND
    assert messages == [
        {"type": "error", "code": ws.NOT_FOUND, "detail": f"job {his[0]} not found"}
    ]
    # A viewer sees every job.
    seen = await everything(url=gateway.ws(after=0, token=viewer))
    assert set(seen) == {*hers, *his}


async def test_a_token_in_the_query_stays_out_of_the_logs(
    secured_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    token = await asyncio.to_thread(account, secured_gateway.store, "vera", Role.VIEWER)
    async with LiveClient.connect(secured_gateway.ws(after=0, token=token)) as client:
        await client.until(lambda m: m["type"] == "caught_up")
    assert "token=[hidden]" in caplog.text
    assert token not in caplog.text


async def test_pages_of_another_origin_are_refused(gateway: Gateway) -> None:
    async with LiveClient.connect(
        gateway.ws(after=0), origin=Origin("http://elsewhere.example")
    ) as client:
        messages, code = await client.closed()
    assert code == ws.FORBIDDEN
    assert [m["type"] for m in messages] == ["error"]
    # The gateway's own pages (the dashboard) may.
    async with LiveClient.connect(gateway.ws(after=0), origin=Origin(gateway.url)) as client:
        await client.until(lambda m: m["type"] == "caught_up")


# ---- bad input -----------------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, str | bytes, int, str]] = [
    ("not JSON", "hello", ws.BAD_REQUEST, "not valid JSON"),
    ("not an object", "[1, 2]", ws.BAD_REQUEST, "JSON object"),
    ("no type", "{}", ws.BAD_REQUEST, "needs a 'type'"),
    ("unknown type", '{"type": "dance"}', ws.BAD_REQUEST, "unknown message type 'dance'"),
    ("pong first", '{"type": "pong"}', ws.BAD_REQUEST, "expected a 'subscribe'"),
    ("bad job id", '{"type": "subscribe", "job_id": "nope"}', ws.BAD_REQUEST, "a UUID"),
    ("job id a number", '{"type": "subscribe", "job_id": 7}', ws.BAD_REQUEST, "a UUID"),
    ("negative after", '{"type": "subscribe", "after": -1}', ws.BAD_REQUEST, "'after'"),
    ("after a string", '{"type": "subscribe", "after": "5"}', ws.BAD_REQUEST, "'after'"),
    ("after a bool", '{"type": "subscribe", "after": true}', ws.BAD_REQUEST, "'after'"),
    ("after a float", '{"type": "subscribe", "after": 1.5}', ws.BAD_REQUEST, "'after'"),
    ("after too big", '{"type": "subscribe", "after": 1e400}', ws.BAD_REQUEST, "'after'"),
    ("after huge", '{"type": "subscribe", "after": ' + "9" * 30 + "}", ws.BAD_REQUEST, "'after'"),
    ("unknown field", '{"type": "subscribe", "jobs": []}', ws.BAD_REQUEST, "unknown field 'jobs'"),
    ("logs of all", '{"type": "subscribe", "logs": true}', ws.BAD_REQUEST, "needs a 'job_id'"),
    ("deep", "[" * 4000 + "]" * 4000, ws.BAD_REQUEST, "JSON"),
    ("huge", '{"type": "subscribe", "x": "' + "z" * 100_000 + '"}', ws.TOO_BIG, "limit"),
    ("binary", b"\x00\x01", ws.UNSUPPORTED, "text frames"),
    ("no such job", f'{{"type": "subscribe", "job_id": "{uuid4()}"}}', ws.NOT_FOUND, "not found"),
    ("beyond the log", '{"type": "subscribe", "after": 99}', ws.BAD_REQUEST, "past the end"),
]


@pytest.mark.parametrize(
    ("sent", "code", "detail"),
    [pytest.param(sent, code, detail, id=name) for name, sent, code, detail in BAD_MESSAGES],
)
async def test_bad_messages_get_a_clear_error_then_a_close(
    gateway: Gateway, sent: str | bytes, code: int, detail: str
) -> None:
    async with connect(gateway.ws()) as connection:
        await connection.send(sent)
        messages, closed = await until_closed(connection)
    assert closed == code
    assert len(messages) == 1
    assert messages[0]["type"] == "error"
    assert messages[0]["code"] == code
    assert detail in messages[0]["detail"]
    await still_serving(gateway)


BAD_QUERIES = [
    ("bad job", {"job": "nope"}, "'job'"),
    ("negative after", {"after": "-1"}, "'after'"),
    ("after not a number", {"after": "ten"}, "'after'"),
    ("after too big", {"after": "9" * 30}, "'after'"),
    ("logs not a flag", {"logs": "maybe", "job": str(uuid4())}, "'logs'"),
    ("logs of all", {"logs": "true"}, "needs a 'job'"),
]


@pytest.mark.parametrize(
    ("query", "detail"), [pytest.param(q, d, id=name) for name, q, d in BAD_QUERIES]
)
async def test_bad_query_parameters_get_a_clear_error_then_a_close(
    gateway: Gateway, query: dict[str, str], detail: str
) -> None:
    async with connect(gateway.ws(**query)) as connection:
        messages, closed = await until_closed(connection)
    assert closed == ws.BAD_REQUEST
    assert [m["type"] for m in messages] == ["error"]
    assert detail in messages[0]["detail"]


async def test_what_is_out_of_place_after_subscribing_closes_too(gateway: Gateway) -> None:
    async with LiveClient.connect(gateway.ws(after=0)) as client:
        await client.until(lambda m: m["type"] == "caught_up")
        await client.send({"type": "subscribe", "after": 0})
        messages, code = await client.closed()
    assert code == ws.BAD_REQUEST
    assert "reconnects" in messages[-1]["detail"]
    await wait_until(lambda: gateway.hub.watchers == 0)


async def test_no_subscription_in_time_is_a_timeout(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "HELLO_SECONDS", 0.3)
    async with connect(gateway.ws()) as connection:
        messages, closed = await until_closed(connection)
    assert closed == ws.TIMEOUT
    assert "subscribe" in messages[0]["detail"]


async def test_a_message_over_the_servers_frame_limit_is_refused_by_the_protocol(
    gateway: Gateway,
) -> None:
    async with connect(gateway.ws(), max_size=None) as connection:
        with contextlib.suppress(ConnectionClosed):
            await connection.send("x" * (17 * 1024 * 1024))
        _, closed = await until_closed(connection)
    assert closed == 1009  # the server's WebSocket layer: message too big
    await still_serving(gateway)


async def until_closed(connection: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


async def still_serving(gateway: Gateway) -> None:
    async with LiveClient.connect(gateway.ws(after=0)) as client:
        assert (await client.receive())["type"] == "subscribed"
        await client.until(lambda m: m["type"] == "caught_up")
