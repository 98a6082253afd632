"""`vdo logs`: a job's live log as it happens (model tokens, sandbox output), read from the bus.

The live log is for watching: lines that went out before the command started are not replayed
(what matters of them is in the job's history: every model reply and every run's full output
are kept as blobs).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable

import nats
from nats.aio.msg import Msg

from vdo_kernel.subjects import LIVE_LOG_PREFIX, live_log_subject

Printer = Callable[[str], None]


def render(payload: dict[str, object], *, show_job: bool) -> str:
    text = str(payload.get("text", ""))
    stream = str(payload.get("stream", ""))
    prefix = f"{str(payload.get('job_id', ''))[:8]} " if show_job else ""
    if stream == "model":
        return f"{prefix}{text}" if show_job else text
    step = payload.get("step", "")
    return "".join(f"{prefix}[{step} {stream}] {line}\n" for line in text.splitlines() or [""])


async def follow(
    nats_url: str,
    job_id: str | None,
    out: Printer,
    *,
    finished: Callable[[], bool],
    seconds: float | None = None,
    poll: float = 1.0,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Print live lines until `finished()` says the job ended (checked every `poll` seconds),
    or `seconds` have passed."""
    nc = await nats.connect(
        nats_url, name="vdo-logs", connect_timeout=5, max_reconnect_attempts=3, tls=tls
    )
    subject = live_log_subject(job_id) if job_id else f"{LIVE_LOG_PREFIX}.>"

    async def on_line(msg: Msg) -> None:
        try:
            payload = json.loads(msg.data)
        except ValueError:
            return
        out(render(payload, show_job=job_id is None))

    try:
        await nc.subscribe(subject, cb=on_line)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while deadline is None or loop.time() < deadline:
            await asyncio.sleep(poll)
            if await asyncio.to_thread(finished):
                await asyncio.sleep(0.2)  # the last lines in flight
                break
    finally:
        await nc.drain()
