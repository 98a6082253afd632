"""The first admin: made when a deployment with authentication on starts and has none.

`vdo up` calls `ensure_admin` before any service starts. With no admin in the store it adds the
user ``admin`` and a token for it, as events like any others (the token digested), and writes
the token to ``<VDO_HOME>/admin-token``, readable by its owner only, for the CLI; the caller
shows it once. ``VDO_ADMIN_TOKEN`` gives that token instead of a generated one (then no file is
written: whoever set it has it). A deployment with an admin is left as it is: restarting never
writes anything, so a restored or migrated log stays exactly the source's.

A log that holds nothing but what a first start wrote (`made_at_first_start`) may be replaced
whole by a restore (`vdo restore`, with the stack stopped): nothing but the first admin is lost.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from vdo_kernel.accounts import (
    MAX_TOKEN_LENGTH,
    MIN_TOKEN_LENGTH,
    Role,
    Token,
    User,
    digests_match,
    new_token,
    token_digest,
    token_id_of,
)

if TYPE_CHECKING:
    # Only named here: reading the token file (the CLI's every command) needs no event store.
    from vdo_kernel.store import JobStore, StoredJobEvent

FIRST_ADMIN: Final = "admin"
# Who the first admin's events say made them.
BY: Final = "first start"
# A file name and the tokens' labels, not secrets.
TOKEN_FILE: Final = "admin-token"  # noqa: S105
GENERATED_TOKEN_NAME: Final = "first admin token"  # noqa: S105
GIVEN_TOKEN_NAME: Final = "VDO_ADMIN_TOKEN"  # noqa: S105
_LOCK: Final = "vdo:first-admin"


class AdminTokenError(ValueError):
    """VDO_ADMIN_TOKEN is unusable; the message says why, never what it holds."""


class Outcome(enum.Enum):
    CREATED = "created"  # the first admin and its token were added
    PRESENT = "present"  # an admin exists (and the given token, if any, is one of its own)
    IGNORED = "ignored"  # VDO_ADMIN_TOKEN is set but is not (or no longer) a working token
    NONE = "none"  # no admin, and nothing was asked to make one


@dataclass(frozen=True)
class AdminBootstrap:
    outcome: Outcome
    # What to tell the operator, in one sentence (never the token).
    message: str
    # A generated token, to show once; None otherwise.
    token: str | None = None
    token_file: Path | None = None


def token_file(home: Path) -> Path:
    return home / TOKEN_FILE


def check_admin_token(token: str) -> None:
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH or not token.isprintable():
        raise AdminTokenError(
            f"VDO_ADMIN_TOKEN must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} printable "
            "characters nobody can guess (e.g. the output of "
            "`python -c 'import secrets; print(\"vdo_\" + secrets.token_urlsafe(32))'`)"
        )
    if token != token.strip():
        raise AdminTokenError("VDO_ADMIN_TOKEN must not begin or end with white space")


def ensure_admin(
    store: JobStore, home: Path, *, admin_token: str | None = None, generate: bool = True
) -> AdminBootstrap:
    """Make the first admin if the deployment has none (see the module's description).

    ``generate``: with no ``admin_token``, generate one (and keep it in the token file); when
    False, only report. Safe to call from several processes at once: one does the work.
    """
    if admin_token is not None:
        check_admin_token(admin_token)
    with store.exclusive(_LOCK):
        if admin_token is not None:
            digest = token_digest(admin_token)
            known = store.get_token(token_id_of(digest))
            if known is not None and digests_match(known.sha256, digest):
                if known.revoked:
                    return AdminBootstrap(
                        Outcome.IGNORED,
                        f"VDO_ADMIN_TOKEN is token {known.token_id} of this deployment, which "
                        "was revoked: it does not work; unset it",
                    )
                return AdminBootstrap(
                    Outcome.PRESENT,
                    f"VDO_ADMIN_TOKEN is token {known.token_id} of user {known.user_name}",
                )
        found = admins(store)
        if found:
            if admin_token is not None:
                return AdminBootstrap(
                    Outcome.IGNORED,
                    "VDO_ADMIN_TOKEN is set, but this deployment has admins already "
                    f"({', '.join(found)}) and it is not one of their tokens: it is ignored "
                    "(an admin makes tokens with `vdo token create`)",
                )
            return AdminBootstrap(Outcome.PRESENT, f"admins: {', '.join(found)}")
        if admin_token is None and not generate:
            return AdminBootstrap(
                Outcome.NONE,
                "this deployment has no admin yet: nobody can use the API until one is made "
                "(start it with `vdo up`, or set VDO_ADMIN_TOKEN)",
            )
        return _create(store, home, admin_token)


def admins(store: JobStore) -> list[str]:
    """The names of the users who are admins now, sorted."""
    names = [
        str(event.data["name"]) for event in store.account_events() if event.type == "UserAdded"
    ]
    admins = []
    for name in names:
        user = store.get_user(name)
        if user is not None and user.role is Role.ADMIN:
            admins.append(name)
    return sorted(admins)


def made_at_first_start(events: Sequence[StoredJobEvent]) -> bool:
    """Whether these events (a whole log, in order) are exactly what a first start writes into
    an empty store: the first admin added, then its token, nothing else and nobody else's."""
    if not events or events[0].type != "UserAdded":
        return False
    first = events[0].data
    if (first.get("name"), first.get("role"), first.get("by")) != (FIRST_ADMIN, Role.ADMIN, BY):
        return False
    tokens = events[1:]
    return bool(tokens) and all(
        event.type == "TokenCreated"
        and event.data.get("by") == BY
        and event.data.get("user_name") == FIRST_ADMIN
        and event.data.get("name") in (GENERATED_TOKEN_NAME, GIVEN_TOKEN_NAME)
        for event in tokens
    )


def _create(store: JobStore, home: Path, admin_token: str | None) -> AdminBootstrap:
    user = store.get_user(FIRST_ADMIN)
    if user is None:
        user = User.add(name=FIRST_ADMIN, role=Role.ADMIN, by=BY)
    else:
        # A user of that name exists without the role (restored from a history without any
        # admin): it is made the admin rather than shadowed.
        user.change_role(Role.ADMIN, by=BY)
    value = admin_token if admin_token is not None else new_token()
    token = Token.create(
        value,
        user=user,
        name=GIVEN_TOKEN_NAME if admin_token is not None else GENERATED_TOKEN_NAME,
        by=BY,
    )
    path: Path | None = None
    if admin_token is None:
        # Written before the events are: once they are stored, the token is somewhere.
        path = token_file(home)
        write_secret(path, value + "\n")
    store.save(user, token)
    if admin_token is not None:
        return AdminBootstrap(
            Outcome.CREATED,
            f"made the first admin, {user.name}, with the token VDO_ADMIN_TOKEN gives "
            f"(token {token.token_id})",
        )
    return AdminBootstrap(
        Outcome.CREATED,
        f"made the first admin, {user.name}, and its token {token.token_id}",
        token=value,
        token_file=path,
    )


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read or write (mode 0600), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        # mkstemp makes the file 0600 already; said again, in case that ever changes.
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read_token_file(home: Path) -> str | None:
    """The token kept in ``<home>/admin-token``, or None when there is none (or it cannot be
    read)."""
    try:
        text = token_file(home).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None
