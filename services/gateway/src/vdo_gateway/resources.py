"""What the gateway holds while it runs: the event store, a pool of read-model connections and
a NATS connection. None of it is state of its own: everything it answers comes from the store
or the read models."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any

import psycopg
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from psycopg_pool import ConnectionPool

from vdo_kernel import logs, readmodels
from vdo_kernel.bootstrap import AdminTokenError, Outcome, ensure_admin
from vdo_kernel.bus import connect
from vdo_kernel.secrets import SecretStore
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore, open_store

log = logs.get(__name__)

READ_POOL_SIZE = 10


class NoAnswerError(Exception):
    """A request on the bus got no answer; the message says why (NATS down, nobody listening,
    or, `timed_out`, no answer in time)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Bus:
    """The NATS connection, made in the background: the API answers (and its health check says
    NATS is down) while NATS is unreachable, and picks it up when it comes."""

    def __init__(self, url: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.tls = tls
        self.client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        while self.client is None:
            try:
                self.client = await connect(
                    self.url, name="gateway", connect_timeout=30, tls=self.tls
                )
            except RuntimeError as error:
                log.warning("NATS unreachable; still trying", error=str(error))

    @property
    def connected(self) -> bool:
        return self.client is not None and bool(self.client.is_connected)

    def jetstream(self) -> JetStreamContext | None:
        if self.client is None or not self.client.is_connected:
            return None
        js: JetStreamContext = self.client.jetstream()
        return js

    async def request(
        self, subject: str, payload: bytes, *, wait_seconds: float, who: str
    ) -> bytes:
        """Send a request on core NATS and return the answer; `who` names the service expected
        to answer, for the error's message."""
        client = self.client
        if client is None or not client.is_connected:
            raise NoAnswerError("NATS is not reachable from the gateway (GET /api/health)")
        try:
            reply = await client.request(subject, payload, timeout=wait_seconds)
        except NoRespondersError:
            raise NoAnswerError(f"no {who} is running to answer") from None
        except TimeoutError:
            # nats' own TimeoutError is an asyncio (builtin) TimeoutError too.
            raise NoAnswerError(
                f"the {who} did not answer within {wait_seconds:.0f} s", timed_out=True
            ) from None
        except NatsError as error:
            raise NoAnswerError(f"the request to the {who} failed: {error!r}") from None
        data: bytes = reply.data
        return data

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()


@dataclass
class Resources:
    settings: Settings
    store: JobStore
    read_pool: ConnectionPool[psycopg.Connection[Any]]
    bus: Bus
    secrets: SecretStore
    # Whether the read models were seen to be of this version (once they are, they stay so).
    read_models_current: bool = False

    def require_current_read_models(self, conn: psycopg.Connection[Any]) -> None:
        """Raise `OutdatedReadModelsError` while the read models are of another version than
        this code's (after an upgrade, until the projector has rebuilt them)."""
        if self.read_models_current:
            return
        version = readmodels.schema_version(conn)
        if version is not None and version != readmodels.SCHEMA_VERSION:
            raise readmodels.OutdatedReadModelsError(readmodels.SCHEMA, version)
        self.read_models_current = version is not None

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        nats_url, database_url = settings.require_urls()
        tls = settings.nats_tls()
        store = await asyncio.to_thread(
            open_store,
            database_url,
            pool_size=READ_POOL_SIZE,
            timeout=settings.startup_timeout_seconds,
        )
        try:
            # The read models may not exist yet (no projector has run): queries then answer
            # from empty tables instead of failing.
            await asyncio.to_thread(_create_read_models, database_url)
            if settings.auth == "on":
                await asyncio.to_thread(_first_admin, settings, store)
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                database_url,
                min_size=1,
                max_size=READ_POOL_SIZE,
                kwargs={"autocommit": True},
                configure=_in_utc,
                open=False,
                name="gateway-read",
            )
            await asyncio.to_thread(pool.open)
        except BaseException:
            store.close()
            raise
        bus = Bus(nats_url, tls=tls)
        bus.start()
        secrets = SecretStore.open(store.connection, settings.secret_key_file)
        return cls(settings=settings, store=store, read_pool=pool, bus=bus, secrets=secrets)

    async def close(self) -> None:
        await self.bus.close()
        await asyncio.to_thread(self.read_pool.close)
        await asyncio.to_thread(self.store.close)


def _first_admin(settings: Settings, store: JobStore) -> None:
    """Make the first admin with VDO_ADMIN_TOKEN if there is none (a deployment not started by
    `vdo up`, which does it itself); say so when nobody could use the API."""
    given = settings.admin_token.get_secret_value() if settings.admin_token else None
    try:
        result = ensure_admin(store, settings.home, admin_token=given, generate=False)
    except AdminTokenError as error:
        raise RuntimeError(str(error)) from None
    if result.outcome is Outcome.CREATED:
        log.info(result.message)
    elif result.outcome in (Outcome.IGNORED, Outcome.NONE):
        log.warning(result.message)


def _in_utc(conn: psycopg.Connection[Any]) -> None:
    # Times come back in the session's zone; UTC makes them read like the store's.
    conn.execute("SET TimeZone = 'UTC'")


def _create_read_models(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            readmodels.create_schema(conn)
        except readmodels.OutdatedReadModelsError as outdated:
            # Rebuilding them is the projector's work; queries answer 503 until it is done.
            log.warning("the read models are of another version", detail=str(outdated))
