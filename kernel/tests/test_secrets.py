"""The secret store on a real PostgreSQL: values are encrypted at rest under a key file of the
data directory, never readable from the database alone, and names and values are checked."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from vdo_kernel.secrets import (
    Connect,
    SecretStore,
    SecretStoreError,
    display_url,
    last_four,
    load_or_make_key,
    provider_base_url,
    provider_key,
)

KEY = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"


def connector(url: str) -> Connect:
    return lambda: psycopg.connect(url, autocommit=True)


@pytest.fixture
def secrets(database_url: str, tmp_path: Path) -> SecretStore:
    return SecretStore.open(connector(database_url), tmp_path / "home" / "secret-store.key")


def test_a_key_is_encrypted_at_rest_and_read_back(
    secrets: SecretStore, database_url: str, tmp_path: Path
) -> None:
    info = secrets.put(provider_key("anthropic"), KEY, by="admin")
    assert info.last4 == "6789"
    assert info.updated_by == "admin"
    assert secrets.read("provider/") == {provider_key("anthropic"): KEY}
    # What PostgreSQL holds gives nothing away, in any encoding.
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT name, value FROM vdo_secrets").fetchall()
        dump = conn.execute("SELECT vdo_secrets::text FROM vdo_secrets").fetchall()
    assert [name for name, _ in stored] == ["provider/anthropic/api_key"]
    assert KEY.encode() not in bytes(stored[0][1])
    assert KEY not in repr(dump)
    # The key file is the owner's alone.
    key_file = tmp_path / "home" / "secret-store.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert KEY not in repr(secrets)


def test_described_secrets_show_at_most_their_last_four_characters(
    secrets: SecretStore,
) -> None:
    secrets.put(provider_key("openai"), KEY, by="ann")
    secrets.put(provider_key("google"), "short", by="ann")
    infos = secrets.describe("provider/")
    assert infos[provider_key("openai")].last4 == "6789"
    assert infos[provider_key("google")].last4 == ""  # too short to show any of it
    assert last_four("abc") == ""


def test_replacing_and_removing(secrets: SecretStore) -> None:
    secrets.put(provider_key("openai"), "first-key-0000000000")
    secrets.put(provider_key("openai"), "second-key-111111111")
    secrets.put(provider_base_url("openai"), "http://127.0.0.1:11434/v1")
    assert secrets.read("provider/openai/") == {
        provider_key("openai"): "second-key-111111111",
        provider_base_url("openai"): "http://127.0.0.1:11434/v1",
    }
    assert secrets.delete(provider_key("openai"), provider_base_url("openai")) == 2
    assert secrets.read("provider/") == {}
    assert secrets.delete(provider_key("openai")) == 0


def test_a_value_stored_under_another_key_file_is_left_out_and_named(
    database_url: str, tmp_path: Path
) -> None:
    first = SecretStore.open(connector(database_url), tmp_path / "a.key")
    first.put(provider_key("anthropic"), KEY)
    other = SecretStore.open(connector(database_url), tmp_path / "b.key")
    with capture_logs() as logs:
        assert other.read("provider/") == {}
    assert any(entry.get("secret") == provider_key("anthropic") for entry in logs)
    assert other.describe("provider/")[provider_key("anthropic")].last4 == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("provider", KEY),  # no path
        ("../../etc/passwd", KEY),
        ("provider/anthropic/api_key\x00", KEY),
        ("Provider/Anthropic/API", KEY),
        ("provider/anthropic/api_key", ""),
        ("provider/anthropic/api_key", "x" * 8193),
    ],
)
def test_bad_names_and_values_are_refused_and_change_nothing(
    secrets: SecretStore, name: str, value: str
) -> None:
    with pytest.raises(SecretStoreError):
        secrets.put(name, value)
    assert secrets.read("") == {}


def test_two_processes_making_the_key_file_at_once_agree_on_one(tmp_path: Path) -> None:
    path = tmp_path / "secret-store.key"
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_or_make_key(path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1


def test_a_damaged_key_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "secret-store.key"
    path.write_text("not a key")
    with pytest.raises(SecretStoreError, match="enter the stored credentials again"):
        load_or_make_key(path)


def test_a_base_url_is_shown_without_its_credentials() -> None:
    shown = display_url("https://user:pa55word@llm.example:8443/v1?api_key=secret")
    assert shown == "https://llm.example:8443/v1"
