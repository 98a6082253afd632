"""Accounts: who the caller is, and (for admins) the users and their API tokens.

Changes are events (`vdo_kernel.accounts`) appended to the store, and answered from the
aggregate just saved. Lists come from the read models; when an account event has not been
projected yet, a list waits for the projector (a moment), so a user or token just made is in
the next list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import psycopg
from fastapi import APIRouter, HTTPException, Response, status

from vdo_gateway.auth import LOCAL_ADMIN, AdminDep, PrincipalDep
from vdo_gateway.deps import POOL_WAIT_SECONDS, ResourcesDep, SettingsDep, StoreDep
from vdo_gateway.models import (
    ErrorPublic,
    MePublic,
    TokenCreate,
    TokenCreated,
    TokenIdentity,
    TokenPublic,
    TokensPage,
    UserCreate,
    UserPublic,
    UsersPage,
    UserUpdate,
)
from vdo_gateway.resources import Resources
from vdo_kernel import readmodels
from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.store import ConcurrencyError

router = APIRouter(tags=["accounts"])
T = TypeVar("T")

# How long a list waits for the projector to reach the accounts' latest event.
PROJECTION_WAIT_SECONDS: Final = 3.0
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorPublic, "description": "the caller is not an admin"}
}


@router.get("/me")
def get_me(principal: PrincipalDep, settings: SettingsDep) -> MePublic:
    """Who the request acts for: the token's user and role."""
    token = None
    if principal.token_id is not None:
        token = TokenIdentity(
            id=principal.token_id,
            name=principal.token_name or "",
            prefix=principal.token_prefix or "",
            expires_at=principal.token_expires_at,
        )
    return MePublic(
        name=principal.name,
        role=principal.role.value,
        authentication=settings.auth,
        token=token,
    )


# ---- users -----------------------------------------------------------------------------------


@router.get("/users", responses=ADMIN_ONLY)
async def list_users(_admin: AdminDep, resources: ResourcesDep) -> UsersPage:
    """Every user, by name."""
    rows = await _with_projected_accounts(resources, readmodels.list_users)
    return UsersPage(items=[UserPublic.from_row(row) for row in rows])


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    responses={**ADMIN_ONLY, 409: {"model": ErrorPublic, "description": "the name is taken"}},
)
def add_user(body: UserCreate, admin: AdminDep, store: StoreDep) -> UserPublic:
    """Add a user with a role. They use the API with a token an admin makes for them."""
    if store.get_user(body.name) is not None:
        raise HTTPException(status_code=409, detail=f"there is a user named {body.name} already")
    user = User.add(name=body.name, role=Role(body.role), by=admin.name)
    try:
        store.save(user)
    except ConcurrencyError:
        raise HTTPException(
            status_code=409, detail=f"there is a user named {body.name} already"
        ) from None
    return UserPublic.from_user(user)


@router.patch(
    "/users/{name}",
    responses={
        **ADMIN_ONLY,
        404: {"model": ErrorPublic, "description": "no such user"},
        409: {"model": ErrorPublic, "description": "the caller's own role"},
    },
)
def change_user(name: str, body: UserUpdate, admin: AdminDep, store: StoreDep) -> UserPublic:
    """Change a user's role (an admin cannot change their own: another admin can)."""
    user = store.get_user(name)
    if user is None:
        raise HTTPException(status_code=404, detail=f"user {name} not found")
    if user.name == admin.name:
        raise HTTPException(
            status_code=409,
            detail="an admin cannot change their own role (so that one admin is always left); "
            "another admin can",
        )
    role = Role(body.role)
    if user.role is not role:
        user.change_role(role, by=admin.name)
        try:
            store.save(user)
        except ConcurrencyError:
            raise HTTPException(
                status_code=409, detail=f"user {name} was changed meanwhile; try again"
            ) from None
    return UserPublic.from_user(user)


# ---- tokens ----------------------------------------------------------------------------------


@router.get("/tokens", responses=ADMIN_ONLY)
async def list_tokens(
    _admin: AdminDep,
    resources: ResourcesDep,
    user: str | None = None,
    revoked: bool = True,
) -> TokensPage:
    """Tokens (a user's, with `user`), the oldest first; never the tokens themselves, only
    their ids and first characters. `revoked=false` leaves revoked ones out."""

    def query(conn: psycopg.Connection[Any]) -> list[readmodels.TokenRow]:
        return readmodels.list_tokens(conn, user=user, include_revoked=revoked)

    rows = await _with_projected_accounts(resources, query)
    now = datetime.now(UTC)
    return TokensPage(items=[TokenPublic.from_row(row, now) for row in rows])


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    responses={
        **ADMIN_ONLY,
        404: {"model": ErrorPublic, "description": "no such user"},
        422: {"model": ErrorPublic, "description": "the request is not valid"},
    },
)
def create_token(
    body: TokenCreate, admin: AdminDep, store: StoreDep, response: Response
) -> TokenCreated:
    """Make an API token for a user (the caller, by default). The answer holds the token: it
    is shown this once and kept nowhere; only its digest is stored."""
    name = body.user or admin.name
    if body.user is None and admin.name == LOCAL_ADMIN and admin.token_id is None:
        raise HTTPException(
            status_code=422,
            detail="name the user the token is for ('user'): with authentication off, requests "
            "act as the local admin, which is not a user",
        )
    user = store.get_user(name)
    if user is None:
        raise HTTPException(status_code=404, detail=f"user {name} not found")
    expires_at = (
        datetime.now(UTC) + timedelta(days=body.expires_in_days)
        if body.expires_in_days is not None
        else None
    )
    for _ in range(3):
        # Ids are derived from the token; a clash with an existing one (never seen in practice:
        # 48 bits) is a conflict on the id, and a fresh token is made.
        value = new_token()
        token = Token.create(value, user=user, name=body.name, by=admin.name, expires_at=expires_at)
        try:
            store.save(token)
        except ConcurrencyError:
            continue
        response.headers["Cache-Control"] = "no-store"
        return TokenCreated(**TokenPublic.token_fields(token, datetime.now(UTC)), token=value)
    raise HTTPException(status_code=503, detail="could not make a token; try again")


@router.delete(
    "/tokens/{token_id}",
    responses={**ADMIN_ONLY, 404: {"model": ErrorPublic, "description": "no such token"}},
)
def revoke_token(token_id: str, admin: AdminDep, store: StoreDep) -> TokenPublic:
    """Revoke a token: it stops working at once. Revoking it again changes nothing."""
    token = store.get_token(token_id)
    if token is None:
        raise HTTPException(status_code=404, detail=f"token {token_id} not found")
    if not token.revoked:
        token.revoke(by=admin.name)
        try:
            store.save(token)
        except ConcurrencyError:
            token = store.get_token(token_id)
            assert token is not None
    return TokenPublic.from_token(token, datetime.now(UTC))


# ---- reading the accounts' read models -------------------------------------------------------


async def _with_projected_accounts(
    resources: Resources, query: Callable[[psycopg.Connection[Any]], T]
) -> T:
    """The query's answer from read models that hold every account event stored when the
    request came (after waiting for the projector a moment, if need be; past that, what they
    hold)."""
    deadline = time.monotonic() + PROJECTION_WAIT_SECONDS
    stored = await asyncio.to_thread(resources.store.max_position)
    while True:
        current, answer = await asyncio.to_thread(_read, resources, query, stored)
        if current or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


def _read(
    resources: Resources, query: Callable[[psycopg.Connection[Any]], T], stored: int
) -> tuple[bool, T]:
    with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
        resources.require_current_read_models(conn)
        projected = readmodels.projector_position(conn)
        current = projected >= stored or not resources.store.has_account_events(projected, stored)
        # After the position: the rows are at least as recent as it.
        return current, query(conn)
