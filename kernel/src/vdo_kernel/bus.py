"""The NATS JetStream connection, the event stream and the durable consumers on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from vdo_kernel import logs
from vdo_kernel.subjects import (
    HEADER_MSG_ID,
    HEADER_POSITION,
    STREAM,
    STREAM_SUBJECTS,
    event_subject,
)

log = logs.get(__name__)

# Dedupe window for Nats-Msg-Id; the relay also resumes from the stream's last message, so a
# republish after a long outage is skipped even beyond this window.
DUPLICATE_WINDOW_SECONDS = 300.0


def server_urls(url: str) -> list[str]:
    """The servers a NATS URL names: one, or a cluster's, comma-separated."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no NATS server given")
    return servers


def without_credentials(server: str) -> str:
    """A server's URL fit for a log line: a user and password (or token) in it left out."""
    parts = urlsplit(server)
    if "@" not in parts.netloc:
        return server
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


async def connect(
    url: str, *, name: str, connect_timeout: float = 60.0, tls: ssl.SSLContext | None = None
) -> Client:
    """Connect, retrying until a server answers (it may still be starting), then keep
    reconnecting for ever: a restarted server is picked up again without a restart of ours.

    `url` may name several servers of a cluster, comma-separated: the client connects to one,
    learns the others from it, and moves to another when its server goes away. `tls` is the
    context for servers that require TLS (`Settings.nats_tls`)."""
    servers = server_urls(url)

    client: list[Client] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close, not an outage
        log.warning("nats disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    last_error: list[Exception] = []

    async def on_error(error: Exception) -> None:
        last_error[:] = [error]
        log.debug("nats error", error=str(error))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    delay = 0.1
    while True:
        # The client is made here, not inside `nats.connect`, so that a connect cut short
        # (cancelled at shutdown, or failed) can still close its socket.
        nc = Client()
        try:
            # The client would try its servers for ever (it reconnects without end, and
            # counts a first connect as a reconnect), so the wait is bounded here.
            connecting = nc.connect(
                servers,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                # Typed as int by the library; a float is what it passes to asyncio.sleep.
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                connect_timeout=2,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                tls=tls,
            )
            await asyncio.wait_for(connecting, timeout=max(deadline - loop.time(), 0.5))
            client.append(nc)
            return nc
        except BaseException as error:
            with contextlib.suppress(Exception):
                await nc.close()
            if not isinstance(error, Exception):
                raise
            if loop.time() >= deadline:
                where = ", ".join(without_credentials(server) for server in servers)
                reason = last_error[0] if last_error and isinstance(error, TimeoutError) else error
                raise RuntimeError(
                    f"cannot reach NATS at {where} in {connect_timeout:g}s: {reason}"
                ) from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def ensure_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the event stream, or bring an existing one up to this configuration; `replicas`
    is how many servers of a cluster keep it (and its consumers, which follow the stream)."""
    config = StreamConfig(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_msg_size=4 * 1024 * 1024,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        # It exists with another configuration (an older one's subjects, say): bring it up to
        # date; the messages it holds stay.
        await js.update_stream(config)


async def ensure_consumer(
    js: JetStreamContext,
    durable: str,
    filter_subjects: list[str],
    *,
    ack_wait: float,
    max_ack_pending: int = 1000,
) -> None:
    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subjects=filter_subjects if len(filter_subjects) > 1 else None,
        filter_subject=filter_subjects[0] if len(filter_subjects) == 1 else None,
    )
    try:
        info = await js.consumer_info(STREAM, durable)
    except NotFoundError:
        await js.add_consumer(STREAM, config)
        return
    current = info.config
    if (
        current.filter_subject != config.filter_subject
        or (current.filter_subjects or None) != config.filter_subjects
        or current.ack_wait != config.ack_wait
    ):
        await js.add_consumer(STREAM, config)


@dataclass(frozen=True)
class EventMessage:
    """A stored event as it travels on the bus (the same shape the API returns)."""

    position: int
    job_id: UUID
    version: int
    type: str
    timestamp: str
    correlation_id: str
    causation_id: str
    data: dict[str, Any]

    @property
    def subject(self) -> str:
        step = self.data.get("step")
        return event_subject(self.type, step if isinstance(step, str) else None)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "position": self.position,
                "job_id": str(self.job_id),
                "version": self.version,
                "type": self.type,
                "timestamp": self.timestamp,
                "correlation_id": self.correlation_id,
                "causation_id": self.causation_id,
                "data": self.data,
            },
            separators=(",", ":"),
        ).encode()

    def headers(self) -> dict[str, str]:
        return {HEADER_MSG_ID: str(self.position), HEADER_POSITION: str(self.position)}

    @classmethod
    def decode(cls, payload: bytes) -> EventMessage:
        raw = json.loads(payload)
        if not isinstance(raw, dict):
            raise ValueError("event message is not a JSON object")
        return cls(
            position=int(raw["position"]),
            job_id=UUID(str(raw["job_id"])),
            version=int(raw["version"]),
            type=str(raw["type"]),
            timestamp=str(raw["timestamp"]),
            correlation_id=str(raw["correlation_id"]),
            causation_id=str(raw["causation_id"]),
            data=dict(raw["data"]),
        )
