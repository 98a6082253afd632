"""Calling a phase's models in order, with retries, backoff and fallbacks.

Each route (``provider:model``) is tried up to ``model_retries`` times while its errors are
retryable (429, 5xx, timeouts, a cut stream), waiting between tries with exponential backoff and
full jitter (``model_backoff_seconds`` doubling per try, capped at
``model_backoff_max_seconds``), and never less than a ``Retry-After`` the provider sent. A
provider that asks to wait longer than the cap is not waited for: the next route is tried. A
non-retryable error (a bad key, an unknown model) moves to the next route at once; a refusal
stops the call, since another model would be asked the same thing.

Each try ends when the provider sends nothing at all for ``model_idle_timeout_seconds`` (a
stall: retried like any timeout), and at the latest after ``model_timeout_seconds`` plus the
time its output limit takes at ``model_min_tokens_per_second``: a long reply that streams
steadily is never cut short, and never paid for twice because of its length alone. The
adapters watch both limits on the stream itself (so the error carries what the try received);
the router holds the whole-call limit around any client too, a moment later.

Every try is reported to an observer as it starts and ends, so the caller can record it and
write the live log. A retried try streams its text again from the start.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from vdo_kernel.settings import Settings
from vdo_models.interface import (
    DEFAULT_IDLE_TIMEOUT_SECONDS,
    ModelClient,
    ModelReply,
    ModelRequest,
    ProviderError,
    Route,
    TextSink,
    TimeLimit,
)


@dataclass(frozen=True)
class RetryPolicy:
    tries_per_route: int = 3
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    # The base of each try's whole-call limit (`TimeLimit`).
    timeout_seconds: float = 120.0
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    min_tokens_per_second: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            tries_per_route=settings.model_retries,
            backoff_seconds=settings.model_backoff_seconds,
            backoff_max_seconds=settings.model_backoff_max_seconds,
            timeout_seconds=settings.model_timeout_seconds,
            idle_timeout_seconds=settings.model_idle_timeout_seconds,
            min_tokens_per_second=settings.model_min_tokens_per_second,
        )

    def limits(self, request: ModelRequest) -> ModelRequest:
        """`request` with this policy's time limits for each of its tries."""
        limit = TimeLimit(
            self.timeout_seconds, request.max_output_tokens, self.min_tokens_per_second
        )
        return replace(request, idle_timeout_seconds=self.idle_timeout_seconds, time_limit=limit)


class RouterObserver(Protocol):
    """Told of every try. Its exceptions propagate: raising from `try_started` (a budget
    check, say) stops the call before the request is sent."""

    async def try_started(self, route: Route, try_number: int) -> None: ...

    async def try_finished(
        self,
        route: Route,
        try_number: int,
        reply: ModelReply | None,
        error: ProviderError | None,
        retry_in: float | None,
    ) -> None:
        """`retry_in`: seconds until the same route is tried again; None when it will not be
        (the call succeeded, moves to the next route, or gives up)."""
        ...


class _Unobserved:
    async def try_started(self, route: Route, try_number: int) -> None:
        pass

    async def try_finished(
        self,
        route: Route,
        try_number: int,
        reply: ModelReply | None,
        error: ProviderError | None,
        retry_in: float | None,
    ) -> None:
        pass


@dataclass(frozen=True)
class FailedTry:
    route: Route
    try_number: int  # 0: the route could not be used at all (no client for its provider)
    error: ProviderError


class RouterError(ProviderError):
    """Every route failed, or one refused. `failures` lists every failed try in order; the
    error's status and kind are those of the last one."""

    def __init__(self, failures: Sequence[FailedTry]) -> None:
        self.failures = tuple(failures)
        last = self.failures[-1].error if self.failures else None
        super().__init__(
            _summary(self.failures),
            retryable=False,
            status=last.status if last else None,
            kind=last.kind if last else "no_route",
        )


class Router:
    """Routes model calls; shared by every call of a process.

    `clients` gives the client for a provider (raising ProviderError when there is none);
    `sleep` and `jitter` (a number in [0, 1)) are there for tests.
    """

    def __init__(
        self,
        clients: Callable[[str], ModelClient],
        settings: Settings | RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._clients = clients
        self.policy = (
            settings if isinstance(settings, RetryPolicy) else RetryPolicy.from_settings(settings)
        )
        self._sleep = sleep
        self._jitter = jitter

    async def complete(
        self,
        routes: Sequence[Route],
        request: ModelRequest,
        *,
        on_text: TextSink | None = None,
        observer: RouterObserver | None = None,
    ) -> tuple[ModelReply, Route]:
        """The first reply any route gives, and the route that gave it; RouterError if none."""
        observer = observer or _Unobserved()
        request = self.policy.limits(request)
        failures: list[FailedTry] = []
        for route in routes:
            try:
                client = self._clients(route.provider)
            except ProviderError as exc:
                failures.append(FailedTry(route, 0, exc))
                continue
            for try_number in range(1, self.policy.tries_per_route + 1):
                await observer.try_started(route, try_number)
                try:
                    reply = await self._try(client, route, request, on_text)
                except ProviderError as exc:
                    failures.append(FailedTry(route, try_number, exc))
                    wait = self._wait(exc, try_number)
                    await observer.try_finished(route, try_number, None, exc, wait)
                    if exc.kind == "refused":
                        raise RouterError(failures) from None
                    if wait is None:
                        break
                    await self._sleep(wait)
                else:
                    await observer.try_finished(route, try_number, reply, None, None)
                    return reply, route
        raise RouterError(failures)

    async def _try(
        self, client: ModelClient, route: Route, request: ModelRequest, on_text: TextSink | None
    ) -> ModelReply:
        limit = request.time_limit
        assert limit is not None
        started = time.monotonic()
        # A moment after the limit, so that an adapter watching its stream ends it first.
        deadline = asyncio.timeout(limit.seconds + min(1.0, limit.seconds * 0.1))
        try:
            async with deadline:
                return await client.complete(route.model, request, on_text)
        except TimeoutError:
            if not deadline.expired():
                raise
            waited = time.monotonic() - started
            raise ProviderError(
                f"{route} gave no complete reply within {limit} (waited {waited:.1f}s)",
                retryable=True,
                kind="timeout",
            ) from None

    def _wait(self, error: ProviderError, try_number: int) -> float | None:
        """Seconds before trying the same route again, or None to stop trying it."""
        policy = self.policy
        if not error.retryable or error.kind == "refused" or try_number >= policy.tries_per_route:
            return None
        ceiling = min(policy.backoff_max_seconds, policy.backoff_seconds * 2.0 ** (try_number - 1))
        wait = self._jitter() * ceiling
        if error.retry_after is not None:
            if error.retry_after > policy.backoff_max_seconds:
                return None
            wait = max(wait, error.retry_after)
        return wait


def _summary(failures: tuple[FailedTry, ...]) -> str:
    if not failures:
        return "no model route to try"
    last = failures[-1]
    if last.error.kind == "refused":
        return f"{last.route} refused the request (not retried, no fallback tried): {last.error}"
    by_route: dict[Route, list[FailedTry]] = {}
    for failure in failures:
        by_route.setdefault(failure.route, []).append(failure)
    parts = []
    for route, tries in by_route.items():
        kinds = ", ".join(
            f"{t.error.kind}{f' {t.error.status}' if t.error.status else ''}" for t in tries
        )
        n = len(tries)
        counted = (
            "not usable" if tries[-1].try_number == 0 else f"{n} {'try' if n == 1 else 'tries'}"
        )
        parts.append(f"{route} ({counted}: {kinds}; last: {tries[-1].error})")
    return f"every model route failed: {' | '.join(parts)}"
