"""What a bubblewrap run prints, kept within its cap: the first half of the cap and the last
half when there is more, with a note of what was cut; lines are passed on as they come while
within the cap."""

from __future__ import annotations

import logging
import time
from collections import deque

from vdo_sandbox.backend import LineSink

log = logging.getLogger(__name__)

# A longer run of output without a newline is passed on in pieces.
LONGEST_LINE = 64 * 1024


class CappedOutput:
    """What the run prints: the first half of the cap and the last half are kept when there is
    more than the cap; lines are passed on as they come while within the cap."""

    def __init__(self, cap: int, started: float, on_line: LineSink | None) -> None:
        self.cap = max(cap, 2)
        self.tail_cap = self.cap // 2
        self.started = started
        self.on_line = on_line
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0
        self.first_output_seconds: float | None = None
        self._line = bytearray()
        self._sink_failed = False

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def feed(self, chunk: bytes) -> None:
        if self.first_output_seconds is None:
            self.first_output_seconds = time.monotonic() - self.started
        before = self.total
        self.total += len(chunk)
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size - len(self.tail[0]) >= self.tail_cap:
            self.tail_size -= len(self.tail.popleft())
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            self._lines(chunk[:room])
        if before <= self.cap < self.total:
            self._flush_line()
            self._emit(f"[output over {self.cap} bytes: the rest is not shown live]")

    def finish(self) -> None:
        if not self.truncated:
            self._flush_line()
            return
        self._emit(self.cut_note().strip())
        tail = self.tail_text()
        lines = tail.split("\n")[1:] if "\n" in tail else []  # the first is a piece of a line
        for line in lines:
            if line:
                self._emit(line)

    def cut_note(self) -> str:
        cut = self.total - (self.cap - self.tail_cap) - self.tail_cap
        return (
            f"\n[output cut: {cut} of {self.total} bytes not kept (limit {self.cap} bytes); "
            "the end follows]\n"
        )

    def tail_text(self) -> str:
        data = b"".join(self.tail)[-self.tail_cap :]
        return data.decode("utf-8", errors="replace")

    def text(self) -> str:
        if not self.truncated:
            return self.head.decode("utf-8", errors="replace")
        head = bytes(self.head[: self.cap - self.tail_cap]).decode("utf-8", errors="replace")
        return head + self.cut_note() + self.tail_text()

    def _lines(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._line += data[start:end]
            self._emit(self._line.decode("utf-8", errors="replace").rstrip("\r"))
            self._line.clear()
            start = end + 1
        self._line += data[start:]
        if len(self._line) >= LONGEST_LINE:
            self._flush_line()

    def _flush_line(self) -> None:
        if self._line:
            self._emit(self._line.decode("utf-8", errors="replace"))
            self._line.clear()

    def _emit(self, line: str) -> None:
        if self.on_line is None or self._sink_failed:
            return
        try:
            self.on_line(line)
        except Exception:  # the live log is a convenience: the run goes on without it
            self._sink_failed = True
            log.warning("the output line sink failed; no more lines are passed on", exc_info=True)
