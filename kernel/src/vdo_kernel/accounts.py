"""Users and API tokens (who may use the API, and what they may do): aggregates and their
events, pure and without I/O.

Accounts are event-sourced like jobs: every user added, every role changed, every token made or
revoked is an event in the store, so a backup carries them and a replay rebuilds them. A token
itself is never stored, anywhere: its events hold its SHA-256 digest, and a short id taken from
that digest (shown in lists, used to revoke it and to find it when it is presented).

Ids are derived from names (a user's from its name, a token's from its short id), so two
writers adding the same user, or two tokens that happened to share an id, collide on the
aggregate's first version instead of both being stored.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Final
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from vdo_kernel.domain import DomainError


class Role(enum.StrEnum):
    """What a user may do. Values are stable: they appear in stored events."""

    ADMIN = "admin"  # everything, every job, and the accounts and the deployment's history
    MEMBER = "member"  # submit jobs, and see and act on their own
    VIEWER = "viewer"  # see every job, act on none


# Names are lower case, so two users cannot differ only by case (or look alike that way).
USER_NAME: Final = re.compile(r"[a-z][a-z0-9._-]{0,63}")
USER_NAME_RULE: Final = (
    "1 to 64 characters: a lower-case letter, then lower-case letters, digits, '.', '_' or '-'"
)
TOKEN_NAME_MAX: Final = 100
# The fixed namespace the accounts' ids are derived in (uuid5); never change it.
NAMESPACE: Final = UUID("4f1c7a52-9d3e-5b8a-a6c1-2e7d90b4c3f8")

TOKEN_PREFIX: Final = "vdo_"  # noqa: S105 (a fixed prefix, not a secret)
# Random bytes in a generated token: 256 bits, so it cannot be guessed or searched for.
TOKEN_BYTES: Final = 32
# A token given to the deployment (VDO_ADMIN_TOKEN) must be at least this long: it is digested
# like a generated one, which is only safe for a value nobody can guess (see `token_digest`).
MIN_TOKEN_LENGTH: Final = 32
MAX_TOKEN_LENGTH: Final = 512
TOKEN_ID_LENGTH: Final = 12
# How many characters of a token are kept (and listed) to help a person tell tokens apart:
# the fixed prefix and four random characters, which leave 232 bits unknown.
SHOWN_PREFIX_LENGTH: Final = 8


def user_id(name: str) -> UUID:
    return uuid5(NAMESPACE, f"user:{name}")


def token_uuid(token_id: str) -> UUID:
    return uuid5(NAMESPACE, f"token:{token_id}")


def check_user_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise DomainError(f"a user name is {USER_NAME_RULE}")
    return name


def new_token() -> str:
    """A fresh API token: ``vdo_`` and 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 digest of a token, in hex: what is stored instead of the token.

    A plain fast hash is the right tool here, unlike for passwords: a token is 256 random bits
    (or, when given to the deployment, at least `MIN_TOKEN_LENGTH` characters chosen to be
    unguessable), so there is no dictionary to try and no search a slow hash (bcrypt, scrypt,
    argon2) would slow down; their cost only protects secrets people choose and remember. The
    digest is one-way: whoever reads the store or a backup learns no token from it.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id_of(digest: str) -> str:
    """A token's short public id: the first characters of its digest (so any token, however
    it was made, has one, and the gateway finds it without a search)."""
    return digest[:TOKEN_ID_LENGTH]


def digests_match(expected: str, presented: str) -> bool:
    """Compare two digests in constant time (no timing tells how much of one matched)."""
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))


class AccountEvent(Aggregate.Event):
    """The envelope of every account event: as a job's (correlation and causation), and who
    did it (`by`: a user's name, or what the deployment did by itself)."""

    correlation_id: str
    causation_id: str
    by: str


class User(Aggregate):
    """A person (or a program) that uses the API, with one role."""

    class Event(AccountEvent):
        pass

    class Added(Event, Aggregate.Created):
        name: str
        role: str

    class RoleChanged(Event):
        role: str

        def apply(self, aggregate: Aggregate) -> None:
            _user(aggregate).role = Role(self.role)

    def __init__(self, name: str, role: str, correlation_id: str, causation_id: str, by: str):
        self.name = name
        self.role = Role(role)
        self.added_by = by

    @classmethod
    def add(cls, *, name: str, role: Role, by: str) -> User:
        check_user_name(name)
        aggregate_id = user_id(name)
        correlation = str(aggregate_id)
        return cls._create(
            cls.Added,
            id=aggregate_id,
            name=name,
            role=Role(role).value,
            by=by,
            correlation_id=correlation,
            causation_id=correlation,
        )

    def change_role(self, role: Role, *, by: str) -> None:
        role = Role(role)
        if role is self.role:
            raise DomainError(f"{self.name} is already {role.value}")
        self.trigger_event(
            self.RoleChanged,
            role=role.value,
            by=by,
            correlation_id=str(self.id),
            causation_id=str(self.id),
        )


class Token(Aggregate):
    """An API token of one user: its digest, never the token itself."""

    class Event(AccountEvent):
        pass

    class Created(Event, Aggregate.Created):
        token_id: str
        user_id: str
        user_name: str
        name: str
        # The SHA-256 digest of the token, in hex (`token_digest`).
        sha256: str
        prefix: str
        # ISO 8601 in UTC, or None for a token that does not expire.
        expires_at: str | None

    class Revoked(Event):
        def apply(self, aggregate: Aggregate) -> None:
            token = _token(aggregate)
            token.revoked = True
            token.revoked_at = self.timestamp
            token.revoked_by = self.by

    def __init__(
        self,
        token_id: str,
        user_id: str,
        user_name: str,
        name: str,
        sha256: str,
        prefix: str,
        expires_at: str | None,
        correlation_id: str,
        causation_id: str,
        by: str,
    ) -> None:
        self.token_id = token_id
        self.user_id = UUID(user_id)
        self.user_name = user_name
        self.name = name
        self.sha256 = sha256
        self.prefix = prefix
        self.expires_at = datetime.fromisoformat(expires_at) if expires_at else None
        self.created_by = by
        self.revoked = False
        self.revoked_at: datetime | None = None
        self.revoked_by: str | None = None

    @classmethod
    def create(
        cls,
        token: str,
        *,
        user: User,
        name: str,
        by: str,
        expires_at: datetime | None = None,
    ) -> Token:
        """The token's record (the token itself is not kept: the caller shows it once)."""
        if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            raise DomainError(
                f"a token is {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters long"
            )
        name = name.strip()
        if not name or len(name) > TOKEN_NAME_MAX or not name.isprintable():
            raise DomainError(f"a token's name is 1 to {TOKEN_NAME_MAX} printable characters")
        if expires_at is not None and expires_at.utcoffset() is None:
            raise DomainError("a token's expiry must be a time with its zone")
        digest = token_digest(token)
        token_id = token_id_of(digest)
        aggregate_id = token_uuid(token_id)
        correlation = str(aggregate_id)
        return cls._create(
            cls.Created,
            id=aggregate_id,
            token_id=token_id,
            user_id=str(user.id),
            user_name=user.name,
            name=name,
            sha256=digest,
            prefix=token[:SHOWN_PREFIX_LENGTH],
            expires_at=expires_at.isoformat() if expires_at is not None else None,
            by=by,
            correlation_id=correlation,
            causation_id=correlation,
        )

    def revoke(self, *, by: str) -> None:
        if self.revoked:
            raise DomainError(f"token {self.token_id} is already revoked")
        self.trigger_event(
            self.Revoked, by=by, correlation_id=str(self.id), causation_id=str(self.id)
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def _user(aggregate: Aggregate) -> User:
    assert isinstance(aggregate, User)
    return aggregate


def _token(aggregate: Aggregate) -> Token:
    assert isinstance(aggregate, Token)
    return aggregate


ACCOUNT_EVENT_TYPES: dict[str, type[AccountEvent]] = {
    "UserAdded": User.Added,
    "UserRoleChanged": User.RoleChanged,
    "TokenCreated": Token.Created,
    "TokenRevoked": Token.Revoked,
}
ACCOUNT_EVENT_NAMES: dict[type[AccountEvent], str] = {
    cls: name for name, cls in ACCOUNT_EVENT_TYPES.items()
}


def is_account_event(event_type: str) -> bool:
    return event_type in ACCOUNT_EVENT_TYPES
