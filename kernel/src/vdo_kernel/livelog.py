"""The job's live log: lines published as they happen (model tokens, sandbox output).

Publishing never blocks the work that produces the lines: `emit` queues, and one task sends in
order. What matters of the lines is kept as blobs and events by the step that produced them,
so nothing lives only on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

from vdo_kernel import logs
from vdo_kernel.subjects import live_log_subject

log = logs.get(__name__)

# A line longer than this is split: a live log is for reading, not for carrying files.
MAX_LINE = 16_384
QUEUE_LIMIT = 10_000


class Publisher(Protocol):
    async def publish(self, subject: str, payload: bytes = b"") -> None: ...


class LiveLog:
    """One per service process; lines are queued and published by one background task."""

    def __init__(self, nc: Publisher | None) -> None:
        self._nc = nc
        self._queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def emit(self, job_id: object, *, step: str, attempt: int, stream: str, text: str) -> None:
        if self._nc is None or not text:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send())
        for start in range(0, len(text), MAX_LINE):
            payload: dict[str, Any] = {
                "job_id": str(job_id),
                "step": step,
                "attempt": attempt,
                "stream": stream,
                "text": text[start : start + MAX_LINE],
                "at": time.time(),
            }
            try:
                self._queue.put_nowait((live_log_subject(job_id), json.dumps(payload).encode()))
            except asyncio.QueueFull:
                self.dropped += 1  # a watcher misses a line; the transcript blob still has it

    async def _send(self) -> None:
        assert self._nc is not None
        while True:
            item = await self._queue.get()
            if item is None:
                return
            with contextlib.suppress(Exception):  # the live view is best effort
                await self._nc.publish(*item)

    async def close(self) -> None:
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, timeout=5)
