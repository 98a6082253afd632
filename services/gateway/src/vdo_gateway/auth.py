"""Who is asking, and what they may do.

Every request under ``/api`` but the public ones (the health check, and the API's own schema
and docs page, which hold no data) must carry an API token (``Authorization: Bearer <token>``).
`Authentication`, a middleware, checks it before anything else looks at the request (its body
included), so a caller without a valid token learns nothing but that; a missing, malformed,
unknown, revoked or expired token all get the same 401. It then counts the request against the
token's rate limit and leaves the caller, a `Principal`, for the routes (`PrincipalDep`).

A token is looked up by the short id its digest begins with, in the read models when they are
up to date with the accounts, else in the event store itself, so a token works (and a revoked
one stops working) the moment its event is stored. Digests are compared in constant time.

`authenticate_token` is the same check for callers that are not an HTTP request (a WebSocket).

Roles: an admin may do everything; a member submits jobs and sees and acts on their own (another
member's job answers 404, as if it did not exist); a viewer sees every job and acts on none.
With authentication off (``VDO_AUTH=off``, loopback only) every request acts as the local admin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

import psycopg
import psycopg_pool
from eventsourcing.persistence import PersistenceError
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from vdo_gateway.binding import is_loopback
from vdo_gateway.resources import Resources
from vdo_kernel import logs, readmodels
from vdo_kernel.accounts import (
    MAX_TOKEN_LENGTH,
    Role,
    digests_match,
    token_digest,
    token_id_of,
    token_uuid,
)

log = logs.get(__name__)

# One message for every token that does not work: no caller learns whether a token exists, was
# revoked or has expired.
UNAUTHENTICATED: Final = (
    "authentication required: send a valid API token as 'Authorization: Bearer <token>'"
)
LOCAL_ONLY: Final = (
    "authentication is off (VDO_AUTH=off): only requests from this machine are served"
)
UNAVAILABLE: Final = "the database is unavailable; try again shortly"
# The name requests act under while authentication is off.
LOCAL_ADMIN: Final = "local"
POOL_WAIT_SECONDS: Final = 5.0


class AuthenticationError(Exception):
    """The token does not stand for anyone (or no token was sent); the message is the same for
    every reason."""

    def __init__(self, message: str = UNAUTHENTICATED) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a user (by name) and their role, and the token they used."""

    name: str
    role: Role
    # None when authentication is off.
    token_id: str | None = None
    token_name: str | None = None
    token_prefix: str | None = None
    token_expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def can_act(self) -> bool:
        """Whether they may submit jobs and act on them (a viewer may only read)."""
        return self.role in (Role.ADMIN, Role.MEMBER)

    @property
    def sees_all_jobs(self) -> bool:
        return self.role in (Role.ADMIN, Role.VIEWER)

    def may_see_job(self, submitted_by: str) -> bool:
        return self.sees_all_jobs or submitted_by == self.name

    @property
    def jobs_filter(self) -> str | None:
        """The submitter whose jobs alone they may see (None: every job)."""
        return None if self.sees_all_jobs else self.name

    @property
    def rate_key(self) -> str:
        return self.token_id or LOCAL_ADMIN


LOCAL = Principal(name=LOCAL_ADMIN, role=Role.ADMIN)


async def authenticate_token(
    resources: Resources, token: str | None, *, client_host: str | None = None
) -> Principal:
    """The principal a bearer token stands for. Raises `AuthenticationError` (always with the
    same message) when it stands for nobody usable: missing, unknown, revoked, expired, or of a
    user that is gone. With authentication off, the local admin, for a client on this machine.

    Database errors (psycopg's, the pool's, the store's) are the caller's to answer."""
    if resources.settings.auth == "off":
        if client_host is not None and _is_ip(client_host) and not is_loopback(client_host):
            raise AuthenticationError(LOCAL_ONLY)
        return LOCAL
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationError
    return await asyncio.to_thread(_authenticate, resources, token)


def _authenticate(resources: Resources, token: str) -> Principal:
    digest = token_digest(token)
    token_id = token_id_of(digest)
    store = resources.store
    # The store's end first: read models that reach it (or have no account event to catch up
    # on before it) are as recent as this request needs.
    stored = store.max_position()
    credential: readmodels.Credential | None = None
    try:
        with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            resources.require_current_read_models(conn)
            credential = readmodels.credential(conn, token_uuid(token_id))
    except readmodels.OutdatedReadModelsError:
        credential = None  # being rebuilt: the store answers meanwhile
    if credential is not None and (
        credential.projected >= stored or not store.has_account_events(credential.projected, stored)
    ):
        row = credential.token
        if row is None or credential.role is None:
            raise AuthenticationError
        return _principal(
            digest,
            sha256=row.sha256,
            revoked=row.revoked_at is not None,
            expires_at=row.expires_at,
            name=row.user_name,
            role=credential.role,
            token_id=row.token_id,
            token_name=row.name,
            prefix=row.prefix,
        )
    # The read models lag behind an account event: the store is the truth.
    found = store.get_token(token_id)
    if found is None:
        raise AuthenticationError
    user = store.get_user(found.user_name)
    if user is None:
        raise AuthenticationError
    return _principal(
        digest,
        sha256=found.sha256,
        revoked=found.revoked,
        expires_at=found.expires_at,
        name=user.name,
        role=user.role.value,
        token_id=found.token_id,
        token_name=found.name,
        prefix=found.prefix,
    )


def _principal(
    digest: str,
    *,
    sha256: str,
    revoked: bool,
    expires_at: datetime | None,
    name: str,
    role: str,
    token_id: str,
    token_name: str,
    prefix: str,
) -> Principal:
    matches = digests_match(sha256, digest)
    if not matches or revoked or (expires_at is not None and expires_at <= datetime.now(UTC)):
        raise AuthenticationError
    return Principal(
        name=name,
        role=Role(role),
        token_id=token_id,
        token_name=token_name,
        token_prefix=prefix,
        token_expires_at=expires_at,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# ---- rate limits -----------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per key (a token's id): ``per_minute`` requests at once at most, refilled
    evenly over a minute. In this process only: replicas each count their own."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take one request from the key's bucket: None when allowed, else the seconds until
        the next one would be."""
        if self.per_minute <= 0:
            return None
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


# ---- the middleware ------------------------------------------------------------------------


class Authentication:
    """Authenticates every HTTP request under ``prefix`` but the public paths (GET or HEAD),
    and applies the rate limit; leaves the `Principal` in the request's state. Other requests
    (WebSockets, paths outside the API) pass untouched: a WebSocket route authenticates itself
    with `authenticate_token`."""

    def __init__(
        self, app: ASGIApp, *, prefix: str, public: frozenset[str], limiter: RateLimiter
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.public = public
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _under(scope["path"], self.prefix):
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.public and scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        resources = scope["app"].state.resources
        assert isinstance(resources, Resources)
        client = scope.get("client")
        try:
            principal = await authenticate_token(
                resources,
                bearer_token(Headers(scope=scope).get("authorization")),
                client_host=client[0] if client else None,
            )
        except AuthenticationError as error:
            response = JSONResponse(
                {"detail": str(error)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        except (psycopg.Error, psycopg_pool.PoolTimeout, PersistenceError) as error:
            log.warning("database error", path=scope["path"], error=repr(error))
            await JSONResponse({"detail": UNAVAILABLE}, status_code=503)(scope, receive, send)
            return
        wait = self.limiter.take(principal.rate_key)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            response = JSONResponse(
                {
                    "detail": f"too many requests: at most {self.limiter.per_minute} a minute "
                    f"per token; try again in {seconds} s"
                },
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None for anything else)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


# ---- what routes ask for ---------------------------------------------------------------------

# Only for the API's schema (so its docs page offers to send a token): the middleware has
# checked the token already.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`vdo token create`), sent as `Authorization: Bearer <token>`.",
)


def current_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        # A route outside the middleware's reach: refuse rather than serve it to anyone.
        raise HTTPException(
            status_code=401, detail=UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_actor(principal: PrincipalDep) -> Principal:
    """A caller who may act (submit, change), not only read."""
    if not principal.can_act:
        raise HTTPException(
            status_code=403,
            detail=f"{principal.name} is a {principal.role.value}: a viewer may read jobs "
            "but not submit or act on them",
        )
    return principal


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise HTTPException(
            status_code=403,
            detail=f"only an admin may do this ({principal.name} is a {principal.role.value})",
        )
    return principal


ActorDep = Annotated[Principal, Depends(require_actor)]
AdminDep = Annotated[Principal, Depends(require_admin)]
