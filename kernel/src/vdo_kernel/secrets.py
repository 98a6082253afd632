"""The secret store: credentials the deployment keeps (model providers' keys and base URLs; git
tokens and webhook secrets use it the same way), encrypted at rest.

Each secret is a row of its own table in PostgreSQL, outside the event store: never an event,
never a read model, never part of a backup. Values are encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`) under a key-encryption key kept in a file of its own
(``VDO_SECRET_KEY_PATH``, default ``<VDO_HOME>/secret-store.key``, mode 0600), made at the first
use. The database alone reveals nothing; a secret whose key file is lost must be entered again.

Names are paths: ``provider/anthropic/api_key``, ``provider/openai/base_url``. A value is read
back only by the processes that use it (the AI services); what the API shows of one is its
last four characters at most.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from cryptography.fernet import Fernet, InvalidToken

from vdo_kernel import logs

log = logs.get(__name__)

TABLE = "vdo_secrets"  # named as it is in each query below
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}(/[a-z0-9][a-z0-9_.:-]{0,127}){1,3}$")
MAX_VALUE_CHARS = 8192

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

_CREATE = """
CREATE TABLE IF NOT EXISTS vdo_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT ''
)
"""


PROVIDER_PREFIX = "provider/"


def provider_key(provider: str) -> str:
    """The name a model provider's API key is stored under."""
    return f"{PROVIDER_PREFIX}{provider}/api_key"


def provider_base_url(provider: str) -> str:
    """The name a model provider's base URL is stored under (it may carry credentials)."""
    return f"{PROVIDER_PREFIX}{provider}/base_url"


class SecretStoreError(Exception):
    """The store cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown of a stored secret: never its value."""

    name: str
    last4: str  # empty for a value too short to show any of it
    updated_at: datetime
    updated_by: str


def load_or_make_key(path: Path) -> bytes:
    """The key-encryption key at `path`, made (mode 0600) when there is none. Two processes
    starting at once agree on one: the file is created exclusively, and the loser reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
            out.flush()
            os.fsync(out.fileno())
    for _ in range(50):
        data = path.read_bytes().strip()
        if data:
            break
        # Another process has created it and is writing it this very moment.
        time.sleep(0.01)
    try:
        Fernet(data)
    except ValueError:
        raise SecretStoreError(
            f"{path} does not hold a secret-store key (32 url-safe base64 bytes): restore the "
            "right file, or remove it and enter the stored credentials again"
        ) from None
    if path.stat().st_mode & 0o077:
        with contextlib.suppress(OSError):
            path.chmod(0o600)
    return data


def display_url(url: str) -> str:
    """`url` without user, password or query (where a base URL may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def last_four(value: str) -> str:
    """The last four characters, for a value long enough that they give nothing away."""
    return value[-4:] if len(value) >= 12 else ""


class SecretStore:
    """Reads and writes secrets through connections from `connect` (autocommit)."""

    def __init__(self, connect: Connect, key: bytes, *, key_file: Path | None = None) -> None:
        self._connect = connect
        self._fernet = Fernet(key)
        self._key_file = key_file
        self._table_made = False

    @classmethod
    def open(cls, connect: Connect, key_file: Path) -> SecretStore:
        """The store under the key in `key_file` (made when there is none)."""
        return cls(connect, load_or_make_key(key_file), key_file=key_file)

    def __repr__(self) -> str:
        return f"SecretStore(key_file={str(self._key_file)!r})"

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connect() as conn:
            if not self._table_made:
                # Another process may make it at the same moment.
                with contextlib.suppress(
                    psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable
                ):
                    conn.execute(_CREATE)
                self._table_made = True
            yield conn

    @staticmethod
    def check_name(name: str) -> str:
        if not NAME.fullmatch(name):
            raise SecretStoreError(f"{name[:80]!r} is not a secret's name (kind/what[/field])")
        return name

    def put(self, name: str, value: str, *, by: str = "") -> SecretInfo:
        self.check_name(name)
        if not value or len(value) > MAX_VALUE_CHARS:
            raise SecretStoreError(f"a secret holds 1 to {MAX_VALUE_CHARS} characters")
        token = self._fernet.encrypt(value.encode("utf-8"))
        with self._conn() as conn:
            row = conn.execute(
                "INSERT INTO vdo_secrets (name, value, updated_at, updated_by) "
                "VALUES (%s, %s, now(), %s) ON CONFLICT (name) DO UPDATE SET "
                "value = EXCLUDED.value, updated_at = now(), updated_by = EXCLUDED.updated_by "
                "RETURNING updated_at",
                (name, token, by[:200]),
            ).fetchone()
        assert row is not None
        return SecretInfo(name, last_four(value), row[0], by[:200])

    def delete(self, *names: str) -> int:
        """Remove these secrets; how many there were."""
        for name in names:
            self.check_name(name)
        with self._conn() as conn:
            cursor = conn.execute("DELETE FROM vdo_secrets WHERE name = ANY(%s)", (list(names),))
            return cursor.rowcount

    def _rows(self, prefix: str) -> list[tuple[str, bytes, datetime, str]]:
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT name, value, updated_at, updated_by FROM vdo_secrets "
                "WHERE name LIKE %s ORDER BY name",
                (like,),
            ).fetchall()
        return [(str(r[0]), bytes(r[1]), r[2], str(r[3])) for r in rows]

    def _decrypt(self, name: str, token: bytes) -> str | None:
        try:
            return self._fernet.decrypt(token).decode("utf-8")
        except InvalidToken:
            log.warning(
                "a stored secret cannot be decrypted with this deployment's key file; "
                "enter it again",
                secret=name,
                key_file=str(self._key_file),
            )
            return None

    def read(self, prefix: str = "") -> dict[str, str]:
        """Every secret whose name starts with `prefix`, decrypted (those that cannot be, under
        another key file, are left out and a warning names them)."""
        values: dict[str, str] = {}
        for name, token, _, _ in self._rows(prefix):
            value = self._decrypt(name, token)
            if value is not None:
                values[name] = value
        return values

    def describe(self, prefix: str = "") -> dict[str, SecretInfo]:
        """What may be shown of every secret under `prefix`."""
        infos: dict[str, SecretInfo] = {}
        for name, token, at, by in self._rows(prefix):
            value = self._decrypt(name, token)
            infos[name] = SecretInfo(name, last_four(value) if value else "", at, by)
        return infos
