"""`/api/ws`: live updates over a WebSocket (the protocol: docs/api-live-updates.md).

A client subscribes to every job it may see, or to one job, from a position: it gets every
event after that position from the store, then the live ones as they are stored, in order and
each once. Every message the server sends carries the position a reconnecting client resumes
from. Bad input is answered with an `error` message, then the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Annotated, Any, Final, Literal, NoReturn
from uuid import UUID

import psycopg
import psycopg_pool
from eventsourcing.persistence import PersistenceError
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import QueryParams

from vdo_gateway.auth import AuthenticationError, Principal, authenticate_token, bearer_token
from vdo_gateway.live import LiveHub, Subscription, Watcher, event_frame
from vdo_gateway.models import EventPublic
from vdo_gateway.resources import Resources
from vdo_gateway.settings import GatewaySettings
from vdo_kernel import logs
from vdo_kernel.store import StoredJobEvent

log = logs.get(__name__)

router = APIRouter(tags=["live"])

# Close codes (4000-4999 are the application's own; the others are the protocol's).
BAD_REQUEST: Final = 4400
UNAUTHENTICATED: Final = 4401
FORBIDDEN: Final = 4403
NOT_FOUND: Final = 4404
TIMEOUT: Final = 4408
RESYNC: Final = 4429
UNSUPPORTED: Final = 1003
TOO_BIG: Final = 1009
INTERNAL: Final = 1011
UNAVAILABLE: Final = 1013
REASONS: Final = {
    BAD_REQUEST: "bad request",
    UNAUTHENTICATED: "unauthenticated",
    FORBIDDEN: "forbidden",
    NOT_FOUND: "not found",
    TIMEOUT: "timeout",
    RESYNC: "too slow: resync",
    UNSUPPORTED: "text frames only",
    TOO_BIG: "message too big",
    INTERNAL: "internal error",
    UNAVAILABLE: "try again later",
}

# A client's messages are small (a subscription, a token, a pong).
MAX_MESSAGE_CHARS: Final = 8192
MAX_TOKEN_CHARS: Final = 4096
# The largest position (PostgreSQL's bigint).
MAX_POSITION: Final = 2**63 - 1
# How long a new connection may take to subscribe.
HELLO_SECONDS: Final = 10.0
# How long the last words (an error, the close) may take to go out to a client.
CLOSE_SECONDS: Final = 2.0
# A type or field named in an error is cut to this many characters.
SHOWN: Final = 40


class AuthMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)


class SubscribeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["subscribe"]
    job_id: Annotated[UUID | None, Field(strict=False)] = None
    after: int = Field(default=0, ge=0, le=MAX_POSITION)
    logs: bool = False

    @model_validator(mode="after")
    def _logs_of_one_job(self) -> SubscribeMessage:
        if self.logs and self.job_id is None:
            raise ValueError(
                "'logs' needs a 'job_id': live log lines are followed one job at a time"
            )
        return self

    def subscription(self) -> Subscription:
        return Subscription(job_id=self.job_id, after=self.after, logs=self.logs)


class PongMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["pong"]


ClientMessage = AuthMessage | SubscribeMessage | PongMessage
CLIENT_MESSAGES: Final[dict[str, type[ClientMessage]]] = {
    "auth": AuthMessage,
    "subscribe": SubscribeMessage,
    "pong": PongMessage,
}


class Refusal(Exception):
    """End the connection: send `message` (an `error` by default), then close with `code`."""

    def __init__(self, code: int, detail: str, message: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.message = message or {"type": "error", "code": code, "detail": detail}


class Gone(Exception):
    """The client went away."""


class Stuck(Exception):
    """The client stopped taking frames: nothing more can be said to it."""


async def authenticate(websocket: WebSocket, resources: Resources, token: str | None) -> Principal:
    """Who the holder of `token` is, as for any API request (or a `Refusal`)."""
    client = websocket.client
    try:
        return await authenticate_token(
            resources, token, client_host=client.host if client else None
        )
    except AuthenticationError as error:
        raise Refusal(UNAUTHENTICATED, str(error)) from None


class HideTokens(logging.Filter):
    """Keeps the value of a `token` query parameter out of the server's own log lines: uvicorn
    logs each WebSocket's path with its query string."""

    QUERY_TOKEN: Final = re.compile(r"([?&]token=)[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = self.QUERY_TOKEN.sub(r"\1[hidden]", message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


HIDE_TOKENS: Final = HideTokens()


def hide_tokens_in_server_logs() -> None:
    """Install `HideTokens` on the server's logger (once, however often it is called)."""
    logging.getLogger("uvicorn.error").addFilter(HIDE_TOKENS)


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def parse_message(text: str) -> ClientMessage:
    """A client's message, or a `Refusal` saying what is wrong with it (never echoing it)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise Refusal(
            BAD_REQUEST,
            f"a message is a JSON object; this is not valid JSON: {error.msg} "
            f"at character {error.pos}",
        ) from None
    except (ValueError, RecursionError):
        raise Refusal(BAD_REQUEST, "a message is a JSON object; this one cannot be read") from None
    if not isinstance(raw, dict):
        raise Refusal(BAD_REQUEST, "a message is a JSON object with a 'type'")
    kind = raw.get("type")
    model = CLIENT_MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(CLIENT_MESSAGES)
        if "type" not in raw:
            raise Refusal(BAD_REQUEST, f"a message needs a 'type' (one of {known})")
        raise Refusal(
            BAD_REQUEST, f"unknown message type '{_shown(kind)}' (expected one of {known})"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise Refusal(BAD_REQUEST, f"{kind}: {describe(error)}") from None


def describe(error: ValidationError) -> str:
    """One sentence for a message's validation errors."""
    problems: list[str] = []
    for problem in error.errors(include_input=False, include_url=False):
        field = _shown(".".join(str(part) for part in problem["loc"]))
        kind = problem["type"]
        if kind == "extra_forbidden":
            problems.append(f"unknown field '{field}'")
        elif kind == "missing":
            problems.append(f"field '{field}' is required")
        elif field == "job_id":
            problems.append("field 'job_id' is a job's id (a UUID) or null")
        elif field == "after":
            problems.append(
                f"field 'after' is a position in the event log: a whole number from 0 to "
                f"{MAX_POSITION}"
            )
        elif not field:
            problems.append(str(problem["msg"]).removeprefix("Value error, "))
        else:
            problems.append(f"field '{field}': {problem['msg']}")
    return "; ".join(problems) or "invalid message"


def subscription_from_query(params: QueryParams) -> Subscription | None:
    """The subscription given in the URL (`?job=...&after=...&logs=true`), or None if the URL
    has none (the client then sends a `subscribe` message)."""
    if not any(name in params for name in ("job", "after", "logs")):
        return None
    job_id: UUID | None = None
    if "job" in params:
        try:
            job_id = UUID(params["job"])
        except ValueError:
            raise Refusal(BAD_REQUEST, "query parameter 'job' is a job's id (a UUID)") from None
    after = params.get("after", "0")
    if not (after.isascii() and after.isdigit()) or int(after) > MAX_POSITION:
        raise Refusal(
            BAD_REQUEST,
            "query parameter 'after' is a position in the event log: a whole number from 0 to "
            f"{MAX_POSITION}",
        )
    flag = params.get("logs", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise Refusal(BAD_REQUEST, "query parameter 'logs' is true or false")
    logs_too = flag in ("true", "1")
    if logs_too and job_id is None:
        raise Refusal(
            BAD_REQUEST, "'logs' needs a 'job': live log lines are followed one job at a time"
        )
    return Subscription(job_id=job_id, after=int(after), logs=logs_too)


def check_origin(websocket: WebSocket, allowed: list[str]) -> None:
    """Refuse a page of another origin than the gateway's own (or one of the CORS origins):
    browsers do not apply CORS to WebSockets, so without this any web page open on this
    machine could watch a gateway that has authentication off. Programs send no Origin."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return
    host = websocket.headers.get("host", "")
    own = {f"http://{host}", f"https://{host}"}
    if origin.rstrip("/").lower() not in own | {o.lower() for o in allowed}:
        raise Refusal(
            FORBIDDEN,
            "pages of this origin may not use the live updates (allow it in VDO_CORS_ORIGINS)",
        )


def token_given(websocket: WebSocket) -> str | None:
    """The token in the `Authorization: Bearer` header or the `token` query parameter."""
    header = websocket.headers.get("authorization")
    if header is not None:
        return bearer_token(header) or ""
    return websocket.query_params.get("token")


@router.websocket("/ws")
async def live_updates(websocket: WebSocket) -> None:
    """Live updates: the events of every job the client may see, or of one job, from a
    position on (see docs/api-live-updates.md)."""
    state = websocket.app.state
    await LiveSession(websocket, state.resources, state.live, state.gateway_settings).run()


class LiveSession:
    """One client's connection: the subscription, the catch-up from the store, then the live
    events from the hub, the heartbeats, and the client's answers."""

    def __init__(
        self,
        websocket: WebSocket,
        resources: Resources,
        hub: LiveHub,
        settings: GatewaySettings,
    ) -> None:
        self.ws = websocket
        self.resources = resources
        self.hub = hub
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.watcher: Watcher | None = None
        # Everything the client should see up to this position has been sent to it.
        self.covered = 0
        self.last_heard = 0.0
        self.next_beat = 0.0

    async def run(self) -> None:
        await self.ws.accept()
        try:
            await self._serve()
        except Refusal as refusal:
            log.info("live updates: closing a connection", code=refusal.code, detail=refusal.detail)
            await self._refuse(refusal)
        except (Gone, WebSocketDisconnect):
            pass
        except Stuck:
            log.info("live updates: a client stopped reading; dropped")
        except (psycopg.Error, psycopg_pool.PoolTimeout, PersistenceError) as error:
            log.warning("live updates: database error", error=repr(error))
            await self._refuse(
                Refusal(UNAVAILABLE, "the database is unavailable; reconnect shortly")
            )
        except Exception:
            log.error("live updates: unexpected error", exc_info=True)
            await self._refuse(Refusal(INTERNAL, "internal error; it has been logged"))
        finally:
            if self.watcher is not None:
                await self.hub.leave(self.watcher)

    async def _serve(self) -> None:
        check_origin(self.ws, self.settings.cors_origin_list)
        token = token_given(self.ws)
        subscription = subscription_from_query(self.ws.query_params)
        if subscription is None:
            message = await self._hello()
            if isinstance(message, AuthMessage):
                if token is not None:
                    raise Refusal(BAD_REQUEST, "a token was given already (header or query)")
                token = message.token
                message = await self._hello()
            if not isinstance(message, SubscribeMessage):
                raise Refusal(
                    BAD_REQUEST, f"expected a 'subscribe' message here, not '{message.type}'"
                )
            subscription = message.subscription()
        principal = await authenticate(self.ws, self.resources, token)
        await self._check(subscription, principal)

        watcher = self.watcher = Watcher(subscription, principal, self.settings.ws_queue_limit)
        self.covered = subscription.after
        await self._send_json(
            {
                "type": "subscribed",
                "job_id": str(subscription.job_id) if subscription.job_id else None,
                "after": subscription.after,
                "logs": subscription.logs,
                "heartbeat_seconds": self.settings.ws_heartbeat_seconds,
            }
        )
        now = self.loop.time()
        self.last_heard, self.next_beat = now, now + self.settings.ws_heartbeat_seconds
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write(watcher))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            task.result()

    async def _check(self, subscription: Subscription, principal: Principal) -> None:
        end = await self.hub.log.end()
        if subscription.after > end:
            raise Refusal(
                BAD_REQUEST,
                f"'after' is {subscription.after}, past the end of the event log (position "
                f"{end}): resume from a position this deployment sent, or from 0",
            )
        if subscription.job_id is not None:
            owner = await self.hub.owner(subscription.job_id)
            if owner is None or not principal.may_see_job(owner):
                raise Refusal(NOT_FOUND, f"job {subscription.job_id} not found")

    # ---- what the server sends --------------------------------------------------------

    async def _write(self, watcher: Watcher) -> NoReturn:
        position = await self._catch_up(watcher)
        await self._send_json({"type": "caught_up", "position": position})
        if watcher.subscription.logs:
            await self.hub.follow_lines(watcher)
        while True:
            item = None
            wait = self.next_beat - self.loop.time()
            if not watcher.queue.empty():
                item = watcher.queue.get_nowait()
            elif wait > 0:
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
            if watcher.overflowed:
                self._resync()
            if item is not None:
                await self._send_queued(watcher, item)
            if self.loop.time() >= self.next_beat:
                await self._heartbeat(watcher, live=True)

    async def _catch_up(self, watcher: Watcher) -> int:
        """Send what the store holds after the subscription's position, until the hub takes
        the watcher on; returns the position the catch-up got to."""
        subscription = watcher.subscription
        position = subscription.after
        if subscription.job_id is not None:
            # The job's own history, not the whole log: everything stored before `end` is in
            # it (and maybe more).
            end = await self.hub.log.end()
            for stored in await self.hub.log.history(subscription.job_id):
                if stored.position > position:
                    await self._send_event(stored)
            position = self.covered = max(position, end, self.covered)
        while not self.hub.join(watcher, position):
            page = await self.hub.log.after(position)
            for stored in page.events:
                if watcher.wants(stored, await self._owner(watcher, stored)):
                    await self._send_event(stored)
            if page.last == position:
                # Nothing after `position`, yet the hub is further on: the log was replaced.
                raise Refusal(
                    INTERNAL, "the event log ends before the live updates' position; reconnect"
                )
            position = self.covered = max(position, page.last)
            await self._beat_if_due(watcher)
        return position

    async def _owner(self, watcher: Watcher, stored: StoredJobEvent) -> str | None:
        return await self.hub.owner(stored.job_id) if watcher.needs_owners else None

    async def _send_event(self, stored: StoredJobEvent) -> None:
        await self._send(event_frame(EventPublic.from_stored(stored)))
        self.covered = stored.position
        assert self.watcher is not None
        await self._beat_if_due(self.watcher)

    async def _send_queued(self, watcher: Watcher, item: tuple[int, str] | dict[str, Any]) -> None:
        if isinstance(item, dict):  # a log line
            if watcher.missed_lines:
                item = {**item, "missed": watcher.missed_lines}
                watcher.missed_lines = 0
            await self._send_json(item)
            return
        position, frame = item
        if position <= self.covered:
            return  # sent while catching up
        await self._send(frame)
        self.covered = position

    async def _beat_if_due(self, watcher: Watcher) -> None:
        if self.loop.time() >= self.next_beat:
            await self._heartbeat(watcher, live=False)

    async def _heartbeat(self, watcher: Watcher, *, live: bool) -> None:
        now = self.loop.time()
        timeout = self.settings.ws_heartbeat_timeout_seconds
        if now - self.last_heard > timeout:
            raise Refusal(
                TIMEOUT,
                f"nothing heard from the client for {timeout:g} s: answer each heartbeat with "
                '{"type": "pong"}',
            )
        if live and watcher.queue.empty():
            # Nothing waiting: every event the hub has handed out has been sent.
            self.covered = max(self.covered, self.hub.head)
        await self._send_json({"type": "heartbeat", "position": self.covered})
        self.next_beat = now + self.settings.ws_heartbeat_seconds

    def _resync(self) -> NoReturn:
        detail = (
            f"the client fell more than {self.settings.ws_queue_limit} messages behind: "
            f"reconnect with after={self.covered}"
        )
        raise Refusal(RESYNC, detail, {"type": "resync", "after": self.covered, "detail": detail})

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message, separators=(",", ":")))

    async def _send(self, text: str) -> None:
        try:
            await asyncio.wait_for(self.ws.send_text(text), self.settings.ws_send_timeout_seconds)
        except TimeoutError:
            raise Stuck from None
        except WebSocketDisconnect:
            raise Gone from None

    async def _refuse(self, refusal: Refusal) -> None:
        with contextlib.suppress(Exception):
            text = json.dumps(refusal.message, separators=(",", ":"))
            await asyncio.wait_for(self.ws.send_text(text), CLOSE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ws.close(refusal.code, REASONS.get(refusal.code, "")), CLOSE_SECONDS
            )

    # ---- what the client sends --------------------------------------------------------

    async def _read(self) -> NoReturn:
        while True:
            message = await self._receive()
            self.last_heard = self.loop.time()
            if not isinstance(message, PongMessage):
                raise Refusal(
                    BAD_REQUEST,
                    f"'{message.type}' is not expected after subscribing: the client only "
                    'answers heartbeats ({"type": "pong"}); to change its subscription, it '
                    "reconnects",
                )

    async def _hello(self) -> ClientMessage:
        try:
            return await asyncio.wait_for(self._receive(), HELLO_SECONDS)
        except TimeoutError:
            raise Refusal(
                TIMEOUT, f"no 'subscribe' message within {HELLO_SECONDS:g} s of connecting"
            ) from None

    async def _receive(self) -> ClientMessage:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise Gone
        text = message.get("text")
        if text is None:
            size = len(message.get("bytes") or b"")
            if size > MAX_MESSAGE_CHARS:
                raise Refusal(TOO_BIG, self._too_big(size))
            raise Refusal(UNSUPPORTED, "messages are JSON in text frames, not binary ones")
        if len(text) > MAX_MESSAGE_CHARS:
            raise Refusal(TOO_BIG, self._too_big(len(text)))
        return parse_message(text)

    @staticmethod
    def _too_big(size: int) -> str:
        return f"a message of {size} characters is over the limit of {MAX_MESSAGE_CHARS}"
