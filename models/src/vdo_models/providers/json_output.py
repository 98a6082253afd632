"""Asking a provider for JSON output with the strongest option the model accepts.

Providers offer JSON output in several strengths (a schema the reply must follow, "some JSON
object", nothing), and not every model or OpenAI-compatible server accepts every one. A request
the provider rejects with 400 while a JSON option was sent is tried once more with the next
weaker option; the option that worked is remembered per model, so the 400 is paid once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from vdo_models.interface import ModelReply, ProviderError

Mode = str | None  # None: no JSON option sent (the caller validates the reply regardless)


class OutputModes:
    def __init__(self, modes: tuple[Mode, ...]) -> None:
        self._modes = modes
        self._first: dict[str, int] = {}

    def to_try(self, model: str) -> tuple[Mode, ...]:
        return self._modes[self._first.get(model, 0) :]

    def accepted(self, model: str, mode: Mode) -> None:
        self._first[model] = self._modes.index(mode)


async def with_fallback(
    modes: tuple[Mode, ...], call: Callable[[Mode], Awaitable[ModelReply]]
) -> tuple[ModelReply, Mode]:
    """`call` with each mode in turn while the provider rejects the request as invalid (400);
    the reply and the mode that produced it."""
    for mode in modes[:-1]:
        try:
            return await call(mode), mode
        except ProviderError as exc:
            if exc.status != 400 or exc.kind != "invalid_request":
                raise
    return await call(modes[-1]), modes[-1]
