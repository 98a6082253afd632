"""Bundles on a real PostgreSQL: a backup restores bit for bit, an export imports once, and a bad
bundle is refused with its reason before anything is changed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from vdo_kernel.accounts import Role, Token, User
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bootstrap import Outcome as AdminOutcome
from vdo_kernel.bootstrap import ensure_admin, made_at_first_start
from vdo_kernel.bundle import (
    FORMAT_VERSION,
    BundleError,
    Part,
    VerifiedBundle,
    open_bundle,
    whole_checksum,
)
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.portability import (
    Loaded,
    PortabilityError,
    check_stack_stopped,
    holds_only_first_start,
    import_bundle,
    restore,
    write_bundle,
)
from vdo_kernel.relay import RELAY_LOCK_KEY
from vdo_kernel.store import JobStore, StoredJobEvent

PASSING = {
    Step.PLAN: Outcome.OK,
    Step.BUILD: Outcome.OK,
    Step.WRITE_TESTS: Outcome.OK,
    Step.RUN_TESTS: Outcome.PASSED,
    Step.REVIEW: Outcome.APPROVED,
    Step.SANDBOX_RUN: Outcome.UP,
}

Members = list[tuple[tarfile.TarInfo, bytes]]


class Deployment:
    """An event store and its blobs."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.store = JobStore(database_url, pool_size=2)
        self.blobs = BlobStore(home / "blobs")
        self.database_url = database_url

    def rows(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM vdo_events ORDER BY notification_id"
            ).fetchall()

    def blob_files(self) -> list[Path]:
        return sorted(p for p in self.blobs.root.rglob("*") if p.is_file())

    def add_job(self, title: str, *, steps: int = len(PASSING)) -> Job:
        """A job through `steps` steps, each with artifacts like the real services write; the
        last of them started but not finished when `steps` is fewer than all."""
        job = Job.submit(title=title, description="a small program")
        job.admit(by="scheduler", causation_id="test")
        for number in range(steps + (steps < len(PASSING))):
            due = job.due()
            assert due is not None
            job.start_step(due, worker="test", causation_id="test")
            if number == steps:
                break
            job.finish_step(
                due,
                outcome=PASSING[due.step],
                summary="done",
                causation_id="test",
                artifacts=self._artifacts(due.step, title),
            )
        self.store.save(job)
        return job

    def _artifacts(self, step: Step, title: str) -> dict[str, str]:
        put = self.blobs.put_text
        if step is Step.PLAN:
            return {"plan": put(f"plan of {title}")}
        if step in (Step.BUILD, Step.WRITE_TESTS):
            name = "files" if step is Step.BUILD else "tests"
            files = {f"{name}/{title}.py": put(f"# {name} of {title}\n"), "common.py": put("#\n")}
            return {name: put(json.dumps(files, sort_keys=True))}
        return {"output": put(f"{step} output of {title}")}


@pytest.fixture
def source(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(database_url, tmp_path / "source")
    yield deployment
    deployment.store.close()


@pytest.fixture
def target(make_database: Callable[[], str], tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(make_database(), tmp_path / "target")
    yield deployment
    deployment.store.close()


@pytest.fixture
def backup(source: Deployment, tmp_path: Path) -> Path:
    for n in range(3):
        source.add_job(f"job{n}")
    source.add_job("halfway", steps=2)  # writing its tests started, never finished
    return write(source, tmp_path / "backup.tar.gz")


def write(deployment: Deployment, out: Path, since: int = 0) -> Path:
    scratch = out.parent / f"scratch-{out.name}"
    scratch.mkdir()
    write_bundle(deployment.store, deployment.blobs, out, since=since, scratch=scratch)
    return out


def test_a_backup_restores_bit_for_bit_and_again_changes_nothing(
    source: Deployment, target: Deployment, backup: Path
) -> None:
    with open_bundle(backup) as bundle:
        manifest = bundle.manifest
        assert (manifest.format_version, manifest.kind, manifest.since) == (1, "backup", 0)
        assert manifest.counts.events == source.store.max_position() == manifest.last_position
        assert manifest.counts.jobs == 4
        result = restore(target.store, target.blobs, bundle)
    assert result.outcome is Loaded.IMPORTED
    assert target.rows() == source.rows()
    assert [p.relative_to(target.blobs.root) for p in target.blob_files()] == [
        p.relative_to(source.blobs.root) for p in source.blob_files()
    ]
    assert manifest.counts.blobs == len(source.blob_files())
    halfway = target.store.job_events(target.store.read(0)[-1].job_id)
    assert halfway[-1].type == "StepStarted"

    # Again (or after a crash half-way): the events are recognised, nothing is added.
    (target.blob_files()[0]).unlink()
    with open_bundle(backup) as bundle:
        again = restore(target.store, target.blobs, bundle)
    assert (again.outcome, again.blobs_written) == (Loaded.ALREADY_PRESENT, 1)
    assert target.rows() == source.rows()


def test_a_restore_refuses_a_deployment_that_is_not_empty(target: Deployment, backup: Path) -> None:
    target.add_job("already here")
    with (
        open_bundle(backup) as bundle,
        pytest.raises(PortabilityError, match=r"not empty: its event store holds 15 events"),
    ):
        restore(target.store, target.blobs, bundle)
    assert target.store.max_position() == 15


def test_a_restore_over_a_first_start_replaces_it_and_only_that(
    source: Deployment, target: Deployment, backup: Path, tmp_path: Path
) -> None:
    made = ensure_admin(target.store, tmp_path / "target-home")
    assert made.outcome is AdminOutcome.CREATED
    first_start = target.rows()
    assert len(first_start) == 2
    assert holds_only_first_start(target.store)
    # Without being asked to, a restore refuses it, and says what to do.
    with (
        open_bundle(backup) as bundle,
        pytest.raises(PortabilityError, match=r"stop the stack and run `vdo restore FILE`"),
    ):
        restore(target.store, target.blobs, bundle)
    # A relay running on the store (its stack is up) is refused, and nothing changes.
    with psycopg.connect(target.database_url, autocommit=True) as relay:
        relay.execute("SELECT pg_advisory_lock(%s)", (RELAY_LOCK_KEY,))
        with pytest.raises(PortabilityError, match=r"the stack of this deployment is running"):
            check_stack_stopped(target.store)
        with (
            open_bundle(backup) as bundle,
            pytest.raises(PortabilityError, match=r"stack of this deployment is running"),
        ):
            restore(target.store, target.blobs, bundle, over_first_start=True)
    assert target.rows() == first_start
    check_stack_stopped(target.store)

    with open_bundle(backup) as bundle:
        result = restore(target.store, target.blobs, bundle, over_first_start=True)
    assert (result.outcome, result.replaced_first_start) == (Loaded.IMPORTED, 2)
    # The log is the backup's, positions from 1, bit for bit; and appends carry on after it.
    assert target.rows() == source.rows()
    assert target.store.read(0, 1)[0].position == 1
    assert not holds_only_first_start(target.store)
    target.add_job("after")
    assert target.store.max_position() == source.store.max_position() + 15


def test_a_restore_over_more_than_a_first_start_is_refused(
    target: Deployment, backup: Path, tmp_path: Path
) -> None:
    ensure_admin(target.store, tmp_path / "target-home")
    # Anything more than the first start: another user, or another token of the admin's.
    target.store.save(User.add(name="ada", role=Role.MEMBER, by="admin"))
    assert not holds_only_first_start(target.store)
    before = target.rows()
    with (
        open_bundle(backup) as bundle,
        pytest.raises(PortabilityError, match=r"not empty: its event store holds 3 events"),
    ):
        restore(target.store, target.blobs, bundle, over_first_start=True)
    assert target.rows() == before


def test_only_what_a_first_start_writes_counts_as_one(store: JobStore, tmp_path: Path) -> None:
    assert not holds_only_first_start(store)  # empty
    ensure_admin(store, tmp_path, admin_token="vdo_" + "t" * 40)
    events = store.read(0)
    assert made_at_first_start(events)
    admin = store.get_user("admin")
    assert admin is not None
    by_hand = Token.create("vdo_" + "u" * 40, user=admin, name="laptop", by="admin")
    assert not made_at_first_start([*events, *_stored(store, by_hand)])
    assert not made_at_first_start(events[1:])
    assert not made_at_first_start(events[:1])


def _stored(store: JobStore, token: Token) -> list[StoredJobEvent]:
    store.save(token)
    return store.read(store.max_position() - 1)


def test_an_export_imports_once_and_only_where_the_log_ends(
    source: Deployment, target: Deployment, backup: Path, tmp_path: Path
) -> None:
    with open_bundle(backup) as bundle:
        restore(target.store, target.blobs, bundle)
    cut = source.store.max_position()
    source.add_job("later")
    export = write(source, tmp_path / "export.tar.gz", since=cut)
    with open_bundle(export) as bundle:
        assert (bundle.manifest.kind, bundle.manifest.since) == ("export", cut)
        assert import_bundle(target.store, target.blobs, bundle).outcome is Loaded.IMPORTED
        assert import_bundle(target.store, target.blobs, bundle).outcome is (Loaded.ALREADY_PRESENT)
        with pytest.raises(PortabilityError, match=r"an export.*vdo import"):
            restore(target.store, target.blobs, bundle)
    assert target.rows() == source.rows()
    assert len(target.blob_files()) == len(source.blob_files())

    source.add_job("even later")
    skipped = write(source, tmp_path / "skipped.tar.gz", since=cut + 2)
    before = target.rows()
    with (
        open_bundle(skipped) as bundle,
        pytest.raises(PortabilityError, match=rf"ends at position {cut + 2}.*ends at {cut + 15}"),
    ):
        import_bundle(target.store, target.blobs, bundle)
    assert target.rows() == before


def test_a_backup_taken_while_jobs_are_appended_is_a_consistent_cut(
    source: Deployment, target: Deployment, tmp_path: Path
) -> None:
    source.add_job("first")
    stop = threading.Event()

    def append() -> None:
        n = 0
        while not stop.is_set():
            source.add_job(f"busy{n}", steps=3)
            n += 1

    writer = threading.Thread(target=append)
    writer.start()
    try:
        bundles = [write(source, tmp_path / f"b{n}.tar.gz") for n in range(3)]
    finally:
        stop.set()
        writer.join()
    for path in bundles:
        with open_bundle(path) as bundle:
            events = list(bundle.events())
            assert [e.position for e in events] == list(range(1, len(events) + 1))


def test_a_blob_missing_from_the_store_fails_the_backup(source: Deployment, tmp_path: Path) -> None:
    job = source.add_job("lost")
    build = next(
        e for e in source.store.job_events(job.id) if e.data.get("artifacts", {}).get("files")
    )
    files = json.loads(source.blobs.get(build.data["artifacts"]["files"]))
    source.blobs.path(files["common.py"]).unlink()
    with pytest.raises(PortabilityError, match=r"blob .* is missing.*artifact 'files:common.py'"):
        write(source, tmp_path / "b.tar.gz")
    assert not list(tmp_path.glob("b.tar.gz*"))


# ---- bad bundles ------------------------------------------------------------------------------


def read_members(path: Path) -> Members:
    with tarfile.open(path, "r:gz") as tar:
        members = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            members.append((info, handle.read() if handle else b""))
        return members


def write_members(path: Path, members: Members) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def manifest_of(members: Members) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(members[0][1])
    return data


def with_manifest(members: Members, manifest: dict[str, Any]) -> Members:
    return [(members[0][0], json.dumps(manifest).encode()), *members[1:]]


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> tuple[Any, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "manifest.json"
    return info, data


def lie(field: str, delta: int) -> Callable[[Members], Members]:
    def change(members: Members) -> Members:
        manifest = manifest_of(members)
        if field == "part count":
            manifest["parts"][0]["count"] += delta
        else:
            manifest["counts"][field] += delta
        return with_manifest(members, manifest)

    return change


def forge(change: Callable[[dict[str, Any]], None]) -> Callable[[Members], Members]:
    """Change the manifest and make its own checksum agree, as a careful forger would."""

    def apply(members: Members) -> Members:
        manifest = manifest_of(members)
        change(manifest)
        manifest["sha256"] = whole_checksum(
            Part(p["name"], p["kind"], p["size"], p["sha256"]) for p in manifest["parts"]
        )
        return with_manifest(members, manifest)

    return apply


def drop_blob_part(manifest: dict[str, Any]) -> None:
    blob = next(p for p in manifest["parts"] if p["kind"] == "blob")
    manifest["parts"].remove(blob)
    manifest["counts"]["blobs"] -= 1


def blob_index(members: Members) -> int:
    return next(i for i, (info, _) in enumerate(members) if info.name.startswith("blobs/"))


def tamper_event(members: Members) -> Members:
    info, data = members[1]
    return [members[0], (info, flip(data, data.index(b'"state":"') + 12)), *members[2:]]


def tamper_blob(members: Members) -> Members:
    i = blob_index(members)
    return [*members[:i], (members[i][0], flip(members[i][1], 0)), *members[i + 1 :]]


def without_part(members: Members) -> Members:
    i = blob_index(members)
    return members[:i] + members[i + 1 :]


def set_version(members: Members) -> Members:
    return with_manifest(members, {**manifest_of(members), "format_version": FORMAT_VERSION + 1})


def oversized(members: Members) -> Members:
    # A member far larger than the manifest says (as a decompression bomb would be).
    info, _ = members[1]
    return [members[0], (info, b"\0" * (8 * 1024 * 1024)), *members[2:]]


def adding(extra: tuple[Any, bytes]) -> Callable[[Members], Members]:
    return lambda members: [*members, extra]


def leading(extra: tuple[Any, bytes]) -> Callable[[Members], Members]:
    return lambda members: [extra, *members]


def forged_event_file(members: Members) -> Members:
    """An event part changed together with its checksums: only the events checksum is left."""
    tampered = tamper_event(members)
    manifest = manifest_of(tampered)
    manifest["parts"][0]["sha256"] = hashlib.sha256(tampered[1][1]).hexdigest()
    return forge(lambda m: m.update(parts=manifest["parts"]))(with_manifest(tampered, manifest))


BAD_ARCHIVES: dict[str, tuple[Callable[[Members], Members], str]] = {
    "an event part with a byte flipped": (tamper_event, r"events/000001.jsonl is damaged"),
    "a blob with a byte flipped": (tamper_blob, r"blobs/sha256/.* is damaged"),
    "a part missing": (without_part, r"incomplete: blobs/sha256/.* missing"),
    "an unknown format version": (set_version, r"format version 2; this vdo reads version 1"),
    "a manifest lying about the events": (lie("events", 1), r"says 53 events but .* holds 52"),
    "a manifest lying about the jobs": (lie("jobs", -1), r"says 3 jobs but .* belong to 4"),
    "a manifest lying about the blobs": (lie("blobs", 1), r"blobs but lists"),
    "a manifest lying about a part": (lie("part count", 1), r"counts for events/000001"),
    "a forged event part": (forged_event_file, r"do not match the manifest's events checksum"),
    "a member larger than the manifest says": (oversized, r"bytes in the archive but"),
    "a path going up": (adding(member("../x")), r"unsafe name: '../x'"),
    "an absolute path": (adding(member("/etc/x")), r"unsafe name: '/etc/x'"),
    "a path going up inside": (adding(member("blobs/../../x")), r"unsafe name"),
    "a symbolic link": (adding(member("evil", b"", tarfile.SYMTYPE)), r"a symbolic link"),
    "a hard link": (adding(member("evil", b"", tarfile.LNKTYPE)), r"a hard link"),
    "a directory": (adding(member("blobs", b"", tarfile.DIRTYPE)), r"a directory"),
    "an entry the manifest does not list": (adding(member("notes.txt")), r"does not list"),
    "a part twice": (lambda m: [*m, m[1]], r"twice"),
    "a member before the manifest": (leading(member("x.txt")), r"does not start with manifest"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_a_bad_archive_is_refused_and_nothing_imported(
    case: str, target: Deployment, backup: Path, tmp_path: Path
) -> None:
    change, reason = BAD_ARCHIVES[case]
    bad = write_members(tmp_path / "bad.tar.gz", change(read_members(backup)))
    assert_refused(bad, reason, target)


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "a truncated file": (lambda b: b[: len(b) // 2], r"damaged or truncated"),
    "a file missing its last byte": (lambda b: b[:-1], r"damaged or truncated"),
    "a compressed byte flipped": (lambda b: flip(b, len(b) // 2), r"damaged|truncated"),
    "a text file": (lambda _: b"hello, world\n", r"not a VDO bundle"),
    "an empty file": (lambda _: b"", r"not a VDO bundle"),
    "compressed text": (lambda _: gzip.compress(b"hello"), r"truncated"),
    "compressed noise": (lambda _: gzip.compress(bytes(range(256)) * 4), r"archive is damaged"),
    "data after the end": (
        lambda b: b + gzip.compress(b"surprise" * 100),
        r"data after its end",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_and_nothing_imported(
    case: str, target: Deployment, backup: Path, tmp_path: Path
) -> None:
    change, reason = BAD_FILES[case]
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(change(backup.read_bytes()))
    assert_refused(bad, reason, target)


def test_a_bundle_without_a_blob_its_events_reference_is_refused(
    target: Deployment, backup: Path, tmp_path: Path
) -> None:
    members = forge(drop_blob_part)(without_part(read_members(backup)))
    assert_refused(write_members(tmp_path / "bad.tar.gz", members), r"incomplete: blob", target)


def assert_refused(path: Path, reason: str, target: Deployment) -> None:
    def load(bundle: VerifiedBundle) -> None:
        restore(target.store, target.blobs, bundle)

    with pytest.raises(BundleError, match=reason), open_bundle(path) as bundle:
        load(bundle)
    assert target.store.max_position() == 0
    assert target.blob_files() == []


def test_a_bundle_written_otherwise_by_another_tool_restores_the_same(
    source: Deployment,
    target: Deployment,
    backup: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts in another order, event lines spaced out, and blobs past the memory budget (kept
    in scratch files): the reader's fast paths are not the only ones."""
    monkeypatch.setattr("vdo_kernel.bundle.EVENTS_PER_PART", 10)
    members = read_members(write(source, tmp_path / "small-parts.tar.gz"))
    manifest = manifest_of(members)
    assert sum(p["kind"] == "events" for p in manifest["parts"]) == 6
    info, data = members[1]
    spaced = b"".join(
        json.dumps(json.loads(line), indent=1).replace("\n", " ").encode() + b"\n"
        for line in data.splitlines()
    )
    part = manifest["parts"][0]
    part.update(size=len(spaced), sha256=hashlib.sha256(spaced).hexdigest())
    members = forge(lambda m: m.update(parts=manifest["parts"]))(
        with_manifest([members[0], (info, spaced), *members[2:]], manifest)
    )
    bundle_file = write_members(tmp_path / "other.tar.gz", [members[0], *members[:0:-1]])
    monkeypatch.setattr("vdo_kernel.bundle.BLOB_IN_MEMORY_MAX", 8)
    with open_bundle(bundle_file) as bundle:
        assert restore(target.store, target.blobs, bundle).outcome is Loaded.IMPORTED
    assert target.rows() == source.rows()
    assert len(target.blob_files()) == len(source.blob_files())
