"""Which addresses the gateway may listen on: any, with authentication on; loopback only with
authentication off (every request then acts as an admin, so only this machine may send one)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost"})


class UnsafeBindError(RuntimeError):
    pass


def is_loopback(host: str) -> bool:
    """Whether the address (or ``localhost``) is one only this machine can reach."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback


def require_safe_bind(host: str, *, auth: str) -> None:
    """Refuse an address other hosts could reach while authentication is off."""
    if auth == "on" or is_loopback(host):
        return
    raise UnsafeBindError(
        f"refusing to listen on {host!r} with authentication off (VDO_AUTH=off): whoever "
        "connects would act as an admin, so the gateway only listens on a loopback address "
        "(127.0.0.1, ::1 or localhost) then; set VDO_HOST to one of them, or turn "
        "authentication on (VDO_AUTH=on, the default)"
    )
