"""`vdo logs`: a job's live log as it happens (model tokens, sandbox output).

One job's log comes through the gateway's live updates (`/api/ws`, with the CLI's token), so it
works from anywhere the API does and shows only what the token may see. Every job's at once is
read from the bus (NATS), which takes access to the deployment's NATS.

The live log is for watching: lines that went out before the command started are not replayed
(what matters of them is in the job's history: every model reply and every run's full output
are kept as blobs).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.msg import Msg
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from vdo_cli.client import ClientError
from vdo_kernel.subjects import END_EVENTS, LIVE_LOG_PREFIX

Printer = Callable[[str], None]


def render(payload: dict[str, object], *, show_job: bool) -> str:
    text = str(payload.get("text", ""))
    stream = str(payload.get("stream", ""))
    prefix = f"{str(payload.get('job_id', ''))[:8]} " if show_job else ""
    if stream == "model":
        return f"{prefix}{text}" if show_job else text
    step = payload.get("step", "")
    return "".join(f"{prefix}[{step} {stream}] {line}\n" for line in text.splitlines() or [""])


# The gateway says so when it restarts (1012), its database is away (1013) or this client fell
# behind (4429): then reconnect from the last position. Anything else it closes with is final.
RECONNECT_CODES: Final = frozenset({1006, 1011, 1012, 1013, 4429})
RECONNECT_TRIES: Final = 30


def live_url(gateway_url: str) -> str:
    """The gateway's live-updates address (ws:// or wss://) from its API address."""
    parts = urlsplit(gateway_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/api/ws", "", ""))


async def follow_job(
    gateway_url: str,
    token: str | None,
    job_id: str,
    out: Printer,
    *,
    after: int,
    seconds: float | None = None,
) -> bool:
    """Print the job's live lines from the gateway until the job ends (True) or `seconds` have
    passed (False). The events of the job come too (from `after` on), which is how its end is
    known; a dropped connection is taken up again from the last position."""
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            await _follow_until_the_end(gateway_url, token, job_id, out, after=after)
    except TimeoutError:
        if limit.expired():
            return False
        raise
    return True


async def _follow_until_the_end(
    gateway_url: str, token: str | None, job_id: str, out: Printer, *, after: int
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    subscribe = {"type": "subscribe", "job_id": job_id, "logs": True}
    connected = False
    tries = 0
    while True:
        try:
            async with ws_connect(live_url(gateway_url), additional_headers=headers) as ws:
                connected = True
                await ws.send(json.dumps({**subscribe, "after": after}))
                while True:
                    message = json.loads(await ws.recv())
                    kind = message.get("type")
                    if kind == "log":
                        out(render(message, show_job=False))
                    elif kind == "heartbeat":
                        await ws.send(json.dumps({"type": "pong"}))
                    elif kind == "error":
                        raise ClientError(f"live updates refused: {message.get('detail')}")
                    elif kind == "event" and message["event"]["type"] in END_EVENTS:
                        return
                    if isinstance(message.get("position"), int):
                        after = message["position"]
                        tries = 0
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            if code not in RECONNECT_CODES:
                reason = closed.rcvd.reason if closed.rcvd else ""
                raise ClientError(f"live updates closed ({code}): {reason}") from None
        except InvalidStatus as refused:
            raise ClientError(
                f"the gateway refused live updates (HTTP {refused.response.status_code})"
            ) from None
        except OSError as error:
            if not connected:
                raise ClientError(f"cannot reach the gateway's live updates: {error}") from None
        tries += 1
        if tries > RECONNECT_TRIES:
            raise ClientError("lost the gateway's live updates and could not get them back")
        await asyncio.sleep(1.0)


async def follow_every_job(
    nats_url: str,
    out: Printer,
    *,
    seconds: float | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Print every job's live lines from the bus until `seconds` have passed (or for ever)."""
    nc = await nats.connect(
        nats_url, name="vdo-logs", connect_timeout=5, max_reconnect_attempts=3, tls=tls
    )

    async def on_line(msg: Msg) -> None:
        try:
            payload = json.loads(msg.data)
        except ValueError:
            return
        out(render(payload, show_job=True))

    try:
        await nc.subscribe(f"{LIVE_LOG_PREFIX}.>", cb=on_line)
        if seconds is None:
            await asyncio.Event().wait()  # until Ctrl-C
        else:
            await asyncio.sleep(seconds)
    finally:
        await nc.drain()
