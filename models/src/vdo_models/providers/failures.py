"""How a provider's failures become `ProviderError`s, the same way for every SDK.

Messages are built here from the status and the provider's own error text, with the key
scrubbed out, and raised without the SDK's exception attached (`from None`): an SDK exception
carries the request, headers and all.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import httpx
import httpx2

from vdo_models.interface import ProviderError

_MESSAGE_LIMIT = 300
_CONNECT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
)
_TIMEOUTS = (httpx.TimeoutException, httpx2.TimeoutException)
_TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)


class Scrubber:
    """Removes a secret from text that may end up in an error message or a log. Real keys are
    long; a stand-in of a few characters is left alone rather than cut out of every word."""

    MIN_LENGTH = 8

    def __init__(self, secret: str) -> None:
        self._secret = secret if len(secret) >= self.MIN_LENGTH else ""

    def __call__(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "[redacted]")
        return text

    def __repr__(self) -> str:
        return "Scrubber()"


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def status_error(
    provider: str,
    status: int,
    detail: str,
    *,
    scrub: Scrubber,
    retry_after: float | None = None,
    in_stream: bool = False,
) -> ProviderError:
    """An HTTP error answer: 429 and 5xx (529 included) may pass if tried again; the rest not.

    `in_stream`: the error came as an event inside a stream that had begun with 200; `status`
    is then the one the same error has as an answer (Anthropic's overloaded_error is 529)."""
    said = f"sent an error event mid-stream ({status})" if in_stream else f"answered {status}"
    message = f"{provider} {said}: {_short(scrub(detail))}"
    if status == 429:
        return ProviderError(
            message, retryable=True, status=status, retry_after=retry_after, kind="rate_limited"
        )
    if status == 408:
        return ProviderError(message, retryable=True, status=status, kind="timeout")
    if status >= 500:
        return ProviderError(
            message, retryable=True, status=status, retry_after=retry_after, kind="server_error"
        )
    if status in (401, 403):
        return ProviderError(message, retryable=False, status=status, kind="auth")
    return ProviderError(message, retryable=False, status=status, kind="invalid_request")


def auth_error(provider: str, status: int, detail: str, *, scrub: Scrubber) -> ProviderError:
    message = f"{provider} answered {status}: {_short(scrub(detail))}"
    return ProviderError(message, retryable=False, status=status, kind="auth")


def transport_error(provider: str, exc: BaseException, *, scrub: Scrubber) -> ProviderError:
    """A connection that failed, timed out or was dropped (the SDK's wrapper or the raw
    httpx/httpx2 error; the cause chain is searched for the latter)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, _TRANSPORT_ERRORS):
        cause = cause.__cause__ or cause.__context__
    root = cause or exc
    detail = _short(scrub(f"{type(root).__name__}: {root}".rstrip(": ")))
    if isinstance(root, _CONNECT_ERRORS):
        return ProviderError(
            f"{provider} unreachable: {detail}", retryable=True, kind="unreachable"
        )
    if isinstance(root, _TIMEOUTS) or (cause is None and "timed out" in str(exc).lower()):
        return ProviderError(f"{provider} timed out: {detail}", retryable=True, kind="timeout")
    return ProviderError(
        f"{provider} connection dropped before the reply ended: {detail}",
        retryable=True,
        kind="stream_cut",
    )


def stream_cut(provider: str, what: str) -> ProviderError:
    """A stream that ended without the provider's end-of-reply marker."""
    return ProviderError(
        f"{provider} stream ended before the reply was complete ({what})",
        retryable=True,
        kind="stream_cut",
    )


def refused(provider: str, model: str, detail: str, *, scrub: Scrubber) -> ProviderError:
    return ProviderError(
        f"{provider}:{model} refused the request: {_short(scrub(detail))}",
        retryable=False,
        kind="refused",
    )


def is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSPORT_ERRORS)
