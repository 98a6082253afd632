"""Which addresses the gateway may listen on: loopback only, until the API has authentication."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost"})


class UnsafeBindError(RuntimeError):
    pass


def require_loopback(host: str) -> None:
    """Refuse any address other hosts could reach: the API is open to whoever connects."""
    if host.lower() in LOOPBACK_NAMES:
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise UnsafeBindError(
            f"refusing to listen on {host!r}: the API has no authentication yet, so the gateway "
            "only listens on a loopback address (127.0.0.1, ::1 or localhost); "
            "set VDO_HOST to one of them"
        )
