"""What every adapter's stream loop shares: the idle timeout, and what a try had received when
it failed.

A streamed reply may rightly take many minutes, so a try is limited mainly by how long the
provider stays silent: when it sends nothing at all for the request's idle timeout, counted from
the request (so the wait for the first byte counts too), the try ends as a retryable
``timeout`` that says it stalled. Its whole-call limit (`TimeLimit`, generous: scaled to the
output limit) ends it too, here rather than around the adapter, so that either way the error
carries what the try had received.

Silence is measured on the bytes of the answer, not on the events an SDK hands over: Anthropic
keeps a slow reply alive with ``ping`` events, which its SDK drops. The SDKs' HTTP clients are
built with `response_hooks`, which make every chunk read count for the watch of the try running
in the current task.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import httpx2

from vdo_models.interface import ModelRequest, ProviderError, TimeLimit, Usage

_CURRENT: ContextVar[StreamWatch | None] = ContextVar("vdo_models_stream_watch", default=None)
# How much longer than the idle timeout the SDK's own read timeout is: it must never be the
# one that ends a quiet stream (its error says less, and would come first on a tie).
SDK_TIMEOUT_MARGIN_SECONDS = 30.0


def sdk_timeout(client_timeout: float, idle_timeout: float) -> float:
    """The SDK's timeout for a streamed request: the client's own, raised above the idle
    timeout when that is longer."""
    return max(client_timeout, idle_timeout + SDK_TIMEOUT_MARGIN_SECONDS)


class StreamWatch:
    """One try of a streamed call: ends it when the provider goes quiet for `idle_seconds`,
    and keeps what it had received, for what a failed try costs.

    Use as ``async with StreamWatch.of(provider, request) as watch:`` around the request and
    the reading of its stream; a stall, or the end of the time limit, raises ProviderError
    (kind ``timeout``) on leaving the block. Any other ProviderError leaving it gets what was
    received (`attach`)."""

    def __init__(self, provider: str, idle_seconds: float, limit: TimeLimit | None = None) -> None:
        self.provider = provider
        self.idle_seconds = idle_seconds
        self.limit = limit
        self._deadline = math.inf
        self.accepted = False  # the provider answered 200: the reply began
        self.usage: Usage | None = None  # the latest usage the provider reported
        self.chars = 0  # reply text received
        self.reading = False  # a byte of the reply's body has arrived
        self._timeout: asyncio.Timeout | None = None
        self._token: Token[StreamWatch | None] | None = None
        self._started = self._last = 0.0

    @classmethod
    def of(cls, provider: str, request: ModelRequest) -> StreamWatch:
        return cls(provider, request.idle_timeout_seconds, request.time_limit)

    async def __aenter__(self) -> StreamWatch:
        now = asyncio.get_running_loop().time()
        self._started = self._last = now
        if self.limit is not None:
            self._deadline = now + self.limit.seconds
        self._timeout = asyncio.timeout_at(min(now + self.idle_seconds, self._deadline))
        await self._timeout.__aenter__()
        self._token = _CURRENT.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._timeout is not None
        assert self._token is not None
        _CURRENT.reset(self._token)
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise self.attach(self._stalled()) from None
        if isinstance(exc, ProviderError):
            self.attach(exc)

    def alive(self) -> None:
        """The provider sent something: the idle timeout starts again."""
        timeout = self._timeout
        if timeout is None or timeout.expired():
            return
        self._last = asyncio.get_running_loop().time()
        timeout.reschedule(min(self._last + self.idle_seconds, self._deadline))

    def text(self, piece: str) -> None:
        self.chars += len(piece)

    def attach(self, error: ProviderError) -> ProviderError:
        """`error`, carrying what this try had received before it."""
        error.accepted = error.accepted or self.accepted
        if error.usage is None:
            error.usage = self.usage
        error.streamed_chars = max(error.streamed_chars, self.chars)
        return error

    def _stalled(self) -> ProviderError:
        now = asyncio.get_running_loop().time()
        if now >= self._deadline:
            return ProviderError(
                f"{self.provider} gave no complete reply within its time limit, {self.limit}; "
                f"waited {now - self._started:.1f}s",
                retryable=True,
                kind="timeout",
            )
        quiet = now - self._last
        if self.reading:
            said = f"with nothing new after {self._last - self._started:.1f}s of streaming"
        else:
            said = "and no reply began"
        return ProviderError(
            f"{self.provider} stalled: waited {quiet:.1f}s {said} "
            f"(idle timeout {self.idle_seconds:g}s)",
            retryable=True,
            kind="timeout",
        )


async def _watch_response(response: httpx2.Response) -> None:
    """The HTTP client's response hook: the answer's headers are activity, and so is every
    chunk of its body read from now on."""
    watch = _CURRENT.get()
    if watch is None:
        return
    watch.alive()
    if response.status_code < 400:
        watch.accepted = True
    if isinstance(response.stream, httpx2.AsyncByteStream):
        response.stream = _WatchedBody(response.stream, watch)


def response_hooks() -> Mapping[str, list[Any]]:
    """``event_hooks`` for an SDK's HTTP client (httpx2), so that its streams are watched."""
    return {"response": [_watch_response]}


class _WatchedBody(httpx2.AsyncByteStream):
    """A response body that tells its watch of every chunk read."""

    def __init__(self, body: httpx2.AsyncByteStream, watch: StreamWatch) -> None:
        self._body = body
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        # What an SDK or httpx2 looks for on the body it wrapped (its elapsed time, a tracing
        # observer) is the wrapped body's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._body, name)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                self._watch.reading = True
                self._watch.alive()
                yield chunk
        finally:
            # Closed in the task that read it, not later by the event loop.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aclose(self) -> None:
        await self._body.aclose()
