"""A client of the gateway's live updates (`/api/ws`, docs/api-live-updates.md), for tests and
benchmarks: it answers heartbeats, and keeps the position to resume from."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Message = dict[str, Any]


def ws_url(base_url: str, **query: Any) -> str:
    """The live updates' URL at a gateway's base URL (`http://host:port`), with a query."""
    url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/api/ws"
    given = {k: v for k, v in query.items() if v is not None}
    return f"{url}?{urlencode(given)}" if given else url


class LiveClient:
    """One connection. By default a task reads every frame as it arrives (answering heartbeats
    at once); with `background=False` frames are read only when `receive` is called, as a slow
    client would."""

    def __init__(self, connection: ClientConnection, *, background: bool = True) -> None:
        self.connection = connection
        # The position to resume from: the latest any message carried.
        self.position = 0
        self.events: list[Message] = []
        # When each event's frame was received (time.time(), to compare with its timestamp).
        self.received_at: list[float] = []
        self.heartbeats = 0
        self._inbox: asyncio.Queue[Message | ConnectionClosed] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_all()) if background else None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        subscribe: Message | None = None,
        background: bool = True,
        **options: Any,
    ) -> AsyncIterator[LiveClient]:
        """Connect to `url` (see `ws_url`); send `subscribe` (a `subscribe` message without
        its type) unless the URL holds the subscription."""
        async with connect(url, open_timeout=10, close_timeout=2, **options) as connection:
            client = cls(connection, background=background)
            try:
                if subscribe is not None:
                    await client.send({"type": "subscribe", **subscribe})
                yield client
            finally:
                if client._reader is not None:
                    client._reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await client._reader

    async def send(self, message: Message) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, timeout: float = 10.0) -> Message:
        """The next message other than a heartbeat; ConnectionClosed once the server closed."""
        if self._reader is None:
            while True:
                message = await self._read(timeout)
                if message is not None:
                    return message
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, ConnectionClosed):
            self._inbox.put_nowait(item)
            raise item
        return item

    async def _read_all(self) -> None:
        try:
            while True:
                message = await self._read(None)
                if message is not None:
                    self._inbox.put_nowait(message)
        except ConnectionClosed as closed:
            self._inbox.put_nowait(closed)

    async def _read(self, timeout: float | None) -> Message | None:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        at = time.time()
        message: Message = json.loads(raw)
        if isinstance(message.get("position"), int):
            self.position = message["position"]
        if message["type"] == "event":
            self.events.append(message["event"])
            self.received_at.append(at)
        if message["type"] != "heartbeat":
            return message
        self.heartbeats += 1
        with contextlib.suppress(ConnectionClosed):
            await self.send({"type": "pong"})
        return None

    async def until(self, done: Callable[[Message], bool], timeout: float = 30.0) -> list[Message]:
        """Messages up to and including the first for which `done` is true."""
        deadline = time.monotonic() + timeout
        messages = []
        while True:
            message = await self.receive(timeout=max(deadline - time.monotonic(), 0.01))
            messages.append(message)
            if done(message):
                return messages

    async def reach(self, position: int, timeout: float = 30.0) -> None:
        """Wait until the server has said it sent everything up to `position` (in an event or
        a heartbeat)."""
        deadline = time.monotonic() + timeout
        while self.position < position:
            if time.monotonic() > deadline:
                raise TimeoutError(f"position {self.position}, not {position}, after {timeout}s")
            with contextlib.suppress(TimeoutError):
                await self.receive(timeout=0.05)

    async def closed(
        self, timeout: float = 10.0, delay: float = 0.0
    ) -> tuple[list[Message], int | None]:
        """Everything until the server closes the connection (waiting `delay` before reading
        each message), and its close code."""
        messages = []
        try:
            while True:
                await asyncio.sleep(delay)
                messages.append(await self.receive(timeout=timeout))
        except ConnectionClosed as closed:
            return messages, closed.rcvd.code if closed.rcvd else None


def ended(message: Message) -> bool:
    """Whether the message is the last event of a job (it completed, failed or was cancelled)."""
    return message["type"] == "event" and message["event"]["type"] in {
        "JobCompleted",
        "JobFailed",
        "JobCancelled",
    }
