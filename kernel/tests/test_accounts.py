"""Users and tokens: their rules, their events in the store (a token only as its digest), and
the first admin a deployment makes at its first start."""

from __future__ import annotations

import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from eventsourcing.utils import get_topic

from vdo_kernel.accounts import (
    ACCOUNT_EVENT_TYPES,
    Role,
    Token,
    User,
    digests_match,
    new_token,
    token_digest,
    token_id_of,
    token_uuid,
    user_id,
)
from vdo_kernel.bootstrap import (
    AdminTokenError,
    Outcome,
    ensure_admin,
    read_token_file,
    token_file,
)
from vdo_kernel.bundle import JOB_TOPIC_PREFIX
from vdo_kernel.domain import EVENT_TYPES, DomainError
from vdo_kernel.store import ConcurrencyError, JobStore
from vdo_kernel.subjects import event_subject

GIVEN = "vdo_given-admin-token-0123456789abcdefghijklmnop"


def test_a_user_has_a_lower_case_name_and_one_role() -> None:
    ada = User.add(name="ada.l-1_x", role=Role.MEMBER, by="admin")
    assert (ada.name, ada.role, ada.id) == ("ada.l-1_x", Role.MEMBER, user_id("ada.l-1_x"))
    ada.change_role(Role.VIEWER, by="admin")
    assert ada.role is Role.VIEWER
    with pytest.raises(DomainError, match="already viewer"):
        ada.change_role(Role.VIEWER, by="admin")
    for bad in ("", "Ada", "1ada", "a b", "a" * 65, "ada\x00", "é"):
        with pytest.raises(DomainError, match="a user name is"):
            User.add(name=bad, role=Role.MEMBER, by="admin")


def test_a_token_is_recorded_by_its_digest_and_an_id_taken_from_it() -> None:
    ada = User.add(name="ada", role=Role.MEMBER, by="admin")
    value = new_token()
    assert value.startswith("vdo_")
    assert len(value) == 47
    assert new_token() != value
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    token = Token.create(value, user=ada, name="laptop", by="admin", expires_at=expires)
    digest = token_digest(value)
    assert (token.sha256, token.token_id, token.id) == (
        digest,
        digest[:12],
        token_uuid(token_id_of(digest)),
    )
    assert token.prefix == value[:8]
    assert (token.user_name, token.user_id, token.expires_at) == ("ada", ada.id, expires)
    assert not token.is_expired(expires - timedelta(seconds=1))
    assert token.is_expired(expires)
    assert digests_match(token.sha256, token_digest(value))
    assert not digests_match(token.sha256, token_digest(value + "x"))
    events = token.collect_events()
    assert value not in json.dumps([str(e.__dict__) for e in events])

    token.revoke(by="admin")
    assert token.revoked
    with pytest.raises(DomainError, match="already revoked"):
        token.revoke(by="admin")


@pytest.mark.parametrize(
    ("value", "name", "expires", "problem"),
    [
        ("short", "n", None, "32 to 512 characters"),
        (new_token(), "", None, "1 to 100 printable"),
        (new_token(), "tab\there", None, "1 to 100 printable"),
        (new_token(), "x" * 101, None, "1 to 100 printable"),
        (new_token(), "n", datetime(2030, 1, 1), "with its zone"),
    ],
)
def test_a_bad_token_record_is_refused(
    value: str, name: str, expires: datetime | None, problem: str
) -> None:
    ada = User.add(name="ada", role=Role.MEMBER, by="admin")
    with pytest.raises(DomainError, match=problem):
        Token.create(value, user=ada, name=name, by="admin", expires_at=expires)


def test_the_accounts_events_go_on_subjects_of_their_own() -> None:
    assert event_subject("TokenCreated") == "vdo.account.TokenCreated"
    assert event_subject("UserAdded") == "vdo.account.UserAdded"
    assert event_subject("JobSubmitted") == "vdo.job.JobSubmitted"


def test_a_bundle_counts_jobs_and_not_accounts_among_its_aggregates() -> None:
    assert all(get_topic(cls).startswith(JOB_TOPIC_PREFIX) for cls in EVENT_TYPES.values())
    assert not any(
        get_topic(cls).startswith(JOB_TOPIC_PREFIX) for cls in ACCOUNT_EVENT_TYPES.values()
    )


def test_accounts_are_stored_and_read_back(store: JobStore) -> None:
    ada = User.add(name="ada", role=Role.MEMBER, by="admin")
    value = new_token()
    token = Token.create(value, user=ada, name="laptop", by="admin")
    positions = store.save(ada, token)
    assert positions == [1, 2]
    loaded = store.get_token(token.token_id)
    assert loaded is not None
    assert (loaded.sha256, loaded.user_name, loaded.revoked) == (token.sha256, "ada", False)
    assert store.get_user("ada") is not None
    assert store.get_user("bob") is None
    assert store.get_token("000000000000") is None
    # A token's id is not a job's: the job routes see nothing there.
    assert store.job_events(token.id) == []
    events = store.read(after=0)
    assert [(e.type, e.is_job_event) for e in events] == [
        ("UserAdded", False),
        ("TokenCreated", False),
    ]
    assert events[1].data["sha256"] == token.sha256
    assert value not in json.dumps([e.to_json() for e in events])
    assert [e.type for e in store.account_events()] == ["UserAdded", "TokenCreated"]
    assert store.has_account_events(0, 2)
    assert not store.has_account_events(2, 2)
    # Two writers adding the same user: the second finds the name taken.
    with pytest.raises(ConcurrencyError):
        store.save(User.add(name="ada", role=Role.ADMIN, by="someone else"))


def test_the_first_start_makes_an_admin_and_keeps_its_token_for_the_owner_only(
    store: JobStore, tmp_path: Path
) -> None:
    made = ensure_admin(store, tmp_path)
    assert made.outcome is Outcome.CREATED
    assert made.token is not None
    assert made.token_file == token_file(tmp_path)
    assert read_token_file(tmp_path) == made.token
    assert stat.S_IMODE(token_file(tmp_path).stat().st_mode) == 0o600
    assert made.token not in made.message
    admin = store.get_user("admin")
    assert admin is not None
    assert admin.role is Role.ADMIN
    token = store.get_token(token_id_of(token_digest(made.token)))
    assert token is not None
    assert token.user_name == "admin"

    again = ensure_admin(store, tmp_path)
    assert (again.outcome, again.token) == (Outcome.PRESENT, None)
    assert store.max_position() == 2
    assert read_token_file(tmp_path) == made.token


def test_vdo_admin_token_gives_the_first_admin_its_token(store: JobStore, tmp_path: Path) -> None:
    made = ensure_admin(store, tmp_path, admin_token=GIVEN)
    assert (made.outcome, made.token) == (Outcome.CREATED, None)
    assert not token_file(tmp_path).exists()
    assert GIVEN not in made.message
    assert ensure_admin(store, tmp_path, admin_token=GIVEN).outcome is Outcome.PRESENT
    # Another one, once there is an admin, is not a way in.
    other = ensure_admin(store, tmp_path, admin_token=GIVEN.replace("given", "other"))
    assert other.outcome is Outcome.IGNORED
    assert "ignored" in other.message
    assert store.max_position() == 2
    # A revoked one stays revoked.
    token = store.get_token(token_id_of(token_digest(GIVEN)))
    assert token is not None
    token.revoke(by="admin")
    store.save(token)
    revoked = ensure_admin(store, tmp_path, admin_token=GIVEN)
    assert revoked.outcome is Outcome.IGNORED
    assert "revoked" in revoked.message
    assert store.max_position() == 3


@pytest.mark.parametrize("bad", ["password", " " + GIVEN, GIVEN + "\n", "x" * 513])
def test_an_unusable_vdo_admin_token_is_refused_without_being_shown(
    store: JobStore, tmp_path: Path, bad: str
) -> None:
    with pytest.raises(AdminTokenError) as raised:
        ensure_admin(store, tmp_path, admin_token=bad)
    assert bad.strip() not in str(raised.value)
    assert store.max_position() == 0


def test_without_generating_nothing_is_made(store: JobStore, tmp_path: Path) -> None:
    result = ensure_admin(store, tmp_path, generate=False)
    assert result.outcome is Outcome.NONE
    assert store.max_position() == 0


def test_an_admin_restored_without_the_role_is_given_it(store: JobStore, tmp_path: Path) -> None:
    store.save(User.add(name="admin", role=Role.VIEWER, by="someone"))
    made = ensure_admin(store, tmp_path)
    assert made.outcome is Outcome.CREATED
    admin = store.get_user("admin")
    assert admin is not None
    assert admin.role is Role.ADMIN


def test_starts_at_once_make_one_admin(database_url: str, tmp_path: Path) -> None:
    results: list[Outcome] = []
    stores = [JobStore(database_url, pool_size=1) for _ in range(4)]
    try:
        threads = [
            threading.Thread(
                target=lambda s=s: results.append(
                    ensure_admin(s, tmp_path, admin_token=GIVEN).outcome
                )
            )
            for s in stores
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(o.value for o in results) == ["created", "present", "present", "present"]
        assert stores[0].max_position() == 2
    finally:
        for s in stores:
            s.close()
