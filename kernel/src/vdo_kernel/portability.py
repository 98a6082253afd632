"""Backup, restore, export and import: moving an event store and its blobs through bundles.

A bundle holds the stored events exactly as stored (so a restore is bit for bit) and every blob
they reference. Loading one is all or nothing for the events (one transaction, original
positions kept) and idempotent for the blobs, so loading the same bundle again, or after a crash
half-way, ends in the same state. Rebuilding the read models and recreating the stream are the
caller's steps: the kernel holds neither the projector nor a bus connection here.

A restore goes into an empty store, or, when its caller says so (`vdo restore`, with the stack
stopped), into one that holds nothing but what its first start wrote (its first admin and that
admin's token): those events are removed in the transaction that loads the bundle's.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from vdo_kernel import __version__
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bootstrap import made_at_first_start
from vdo_kernel.bundle import (
    BundleError,
    BundleWriter,
    EventRecord,
    EventsDigest,
    Manifest,
    VerifiedBundle,
)
from vdo_kernel.domain import Job
from vdo_kernel.relay import RELAY_LOCK_KEY
from vdo_kernel.store import JobStore, StoredJobEvent

# Artifacts that are JSON manifests {relative path: digest} of further blobs.
MANIFEST_ARTIFACTS = ("files", "tests")
_FINISHED_TOPIC = get_topic(Job.StepFinished)
_CALL_FINISHED_TOPIC = get_topic(Job.ModelCallFinished)
_FETCH_ROWS = 5_000
_LOCK_TIMEOUT_SECONDS = 30
# A first start writes two events (the first admin and its token); a log longer than this is
# not one to look through for that.
_FIRST_START_MAX_EVENTS = 20


class PortabilityError(Exception):
    """The operation was refused or could not be done; the message says why."""


class Loaded(enum.Enum):
    IMPORTED = "imported"
    ALREADY_PRESENT = "already present"  # the store already held exactly these events


@dataclass(frozen=True)
class LoadResult:
    outcome: Loaded
    manifest: Manifest
    blobs_written: int
    seconds: float
    # How many events of the deployment's first start the restore replaced (0: none).
    replaced_first_start: int = 0


@dataclass(frozen=True)
class ArtifactRef:
    """Where an event references a blob: for the message when the blob is missing."""

    position: int
    job_id: UUID
    artifact: str


# ---- writing a bundle -----------------------------------------------------------------------


def write_bundle(
    store: JobStore, blobs: BlobStore, out: Path, *, since: int = 0, scratch: Path
) -> Manifest:
    """Write the events after `since` (all of them for 0) and their blobs to `out`.

    The events are read in one REPEATABLE READ transaction, so the bundle is a consistent cut
    of the log while the stack keeps appending: everything up to the then-last position.
    """
    with BundleWriter(scratch, kind="backup" if since == 0 else "export", since=since) as writer:
        refs: dict[str, ArtifactRef] = {}
        for record in _stored_events(store, since):
            writer.add_event(record)
            if record.topic in (_FINISHED_TOPIC, _CALL_FINISHED_TOPIC):
                for name, digest in _artifacts(store, record).items():
                    ref = ArtifactRef(record.position, record.originator_id, name)
                    refs.setdefault(digest, ref)
        for digest, ref in _with_manifest_entries(refs, lambda d: _blob_bytes(blobs, d, refs[d])):
            path = blobs.path(digest)
            if not path.is_file():
                raise PortabilityError(
                    f"blob {digest} is missing from {blobs.root}: the event at position "
                    f"{ref.position} (job {ref.job_id}, artifact {ref.artifact!r}) references it"
                )
            try:
                writer.add_blob(digest, path)
            except BundleError as exc:
                raise PortabilityError(str(exc)) from None
        return writer.write(out, product_version=__version__)


def _stored_events(store: JobStore, since: int) -> Generator[EventRecord, None, None]:
    max_position = store.max_position()
    if since > max_position:
        raise PortabilityError(f"position {since} is after the end of the log ({max_position})")
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM {} WHERE notification_id > %s ORDER BY notification_id"
    ).format(_events_table(store))
    with store.recorder.datastore.get_connection() as conn, conn.transaction():
        conn.execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
            "SET LOCAL idle_in_transaction_session_timeout = 0"
        )
        with conn.cursor(name="vdo_bundle", row_factory=tuple_row, binary=True) as cur:
            cur.itersize = _FETCH_ROWS
            cur.execute(query, (since,))
            for position, originator_id, version, topic, state in cur:
                yield EventRecord(position, originator_id, version, topic, bytes(state))


def _artifacts(store: JobStore, record: EventRecord) -> dict[str, str]:
    row = (
        record.position,
        record.originator_id,
        record.originator_version,
        record.topic,
        record.state,
    )
    data = store.decode_row(row).data
    if record.topic == _CALL_FINISHED_TOPIC:  # a model call's reply
        reply = data.get("reply")
        return {"reply": reply} if isinstance(reply, str) and reply else {}
    artifacts = data.get("artifacts", {})
    return {str(k): v for k, v in artifacts.items() if isinstance(v, str)}


def _with_manifest_entries(
    refs: dict[str, ArtifactRef], read: Callable[[str], bytes]
) -> Iterable[tuple[str, ArtifactRef]]:
    """The referenced blobs, and the blobs that `files`/`tests` manifests list."""
    out = dict(refs)
    for digest, ref in refs.items():
        if ref.artifact in MANIFEST_ARTIFACTS:
            for path, entry in _manifest_entries(read(digest), digest):
                out.setdefault(
                    entry, ArtifactRef(ref.position, ref.job_id, f"{ref.artifact}:{path}")
                )
    return sorted(out.items())


def _manifest_entries(data: bytes, digest: str) -> list[tuple[str, str]]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise PortabilityError(
            f"blob {digest} should be a manifest of files but is not JSON"
        ) from None
    if not isinstance(manifest, dict):
        raise PortabilityError(f"blob {digest} should be a manifest of files but is not one")
    return [(str(p), d) for p, d in manifest.items() if isinstance(d, str)]


def _blob_bytes(blobs: BlobStore, digest: str, ref: ArtifactRef) -> bytes:
    try:
        return blobs.get(digest)
    except KeyError:
        raise PortabilityError(
            f"blob {digest} is missing from {blobs.root}: the event at position {ref.position} "
            f"(job {ref.job_id}, artifact {ref.artifact!r}) references it"
        ) from None
    except ValueError as exc:
        raise PortabilityError(str(exc)) from None


# ---- loading a bundle -----------------------------------------------------------------------


def restore(
    store: JobStore, blobs: BlobStore, bundle: VerifiedBundle, *, over_first_start: bool = False
) -> LoadResult:
    """Load a bundle of the whole log into an empty store (or finish loading it, when the
    store already holds exactly its events).

    ``over_first_start``: a store that holds only what its first start wrote counts as empty,
    and those events are replaced by the bundle's; for a caller that has made sure the stack is
    stopped (a running relay is found and refused anyway), and that then recreates the stream
    and rebuilds the read models, which still reflect the replaced events."""
    manifest = bundle.manifest
    if manifest.since != 0:
        raise PortabilityError(
            f"this bundle holds only the events after position {manifest.since} (an export); "
            f"load it with `vdo import` into a deployment whose log ends at {manifest.since}"
        )
    return _load(store, blobs, bundle, over_first_start=over_first_start)


def holds_only_first_start(store: JobStore) -> bool:
    """Whether the store's whole log is what its first start wrote (see `bootstrap`)."""
    end = store.max_position()
    if not 0 < end <= _FIRST_START_MAX_EVENTS:
        return False
    return made_at_first_start(store.read(0, _FIRST_START_MAX_EVENTS))


def import_bundle(store: JobStore, blobs: BlobStore, bundle: VerifiedBundle) -> LoadResult:
    """Append an export's events to a store whose log ends where the export begins."""
    return _load(store, blobs, bundle)


def check_stack_stopped(store: JobStore) -> None:
    """PortabilityError while a relay runs on this store (its stack is running)."""
    with store.recorder.datastore.get_connection() as conn, conn.transaction():
        _require_no_relay(conn)


def _require_no_relay(conn: psycopg.Connection[Any]) -> None:
    # The relay holds this lock as long as it runs; taken here until the transaction ends, it
    # also keeps a relay from starting meanwhile.
    row = conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS free", (RELAY_LOCK_KEY,)).fetchone()
    if not (row and row["free"]):
        raise PortabilityError(
            "the stack of this deployment is running (its relay is publishing from the event "
            "store): stop it, then restore"
        )


def _load(
    store: JobStore, blobs: BlobStore, bundle: VerifiedBundle, *, over_first_start: bool = False
) -> LoadResult:
    started = time.monotonic()
    manifest = bundle.manifest
    _check_references(store, bundle)
    if _holds(store, manifest):
        written = _write_blobs(blobs, bundle)
        return LoadResult(Loaded.ALREADY_PRESENT, manifest, written, time.monotonic() - started)
    end = store.max_position()
    if end != manifest.since:
        first_start = manifest.since == 0 and holds_only_first_start(store)
        if not (over_first_start and first_start):
            _check_target(end, manifest, first_start=first_start)
    written, replaced = _copy_events(
        store, bundle, lambda: _write_blobs(blobs, bundle), over_first_start=over_first_start
    )
    return LoadResult(
        Loaded.IMPORTED,
        manifest,
        written,
        time.monotonic() - started,
        replaced_first_start=replaced,
    )


def _check_target(max_position: int, manifest: Manifest, *, first_start: bool = False) -> None:
    if max_position == manifest.since:
        return
    if manifest.since == 0 and first_start:
        raise PortabilityError(
            f"this deployment is not empty: its event store holds {max_position} events, its "
            "first admin and that admin's token, made at its first start with authentication "
            "on; to restore over them (they are replaced by the backup's users and tokens), "
            "stop the stack and run `vdo restore FILE` against this deployment, then start it "
            "again and use a token of the backup's deployment; or restore into a deployment "
            "started with VDO_AUTH=off that has never started with authentication on"
        )
    if manifest.since == 0:
        raise PortabilityError(
            f"this deployment is not empty: its event store holds {max_position} events "
            f"(positions 1..{max_position}), and a restore only goes into an empty one; "
            "restore into a fresh deployment, or use `vdo export`/`vdo import` to add events"
        )
    raise PortabilityError(
        f"this export continues a log that ends at position {manifest.since}, but this "
        f"deployment's log ends at {max_position}; export again with "
        f"`--since {max_position}` from the source"
    )


def _holds(store: JobStore, manifest: Manifest) -> bool:
    """Whether the store already holds exactly the bundle's events (a repeated load)."""
    if manifest.counts.events == 0:
        return store.max_position() >= manifest.since and manifest.since > 0
    if store.max_position() < manifest.last_position:
        return False
    digest = EventsDigest()
    with closing(_stored_events(store, manifest.since)) as records:
        for record in records:
            if record.position > manifest.last_position:
                break
            digest.add(record)
    return digest.hexdigest() == manifest.events_sha256


def _check_references(store: JobStore, bundle: VerifiedBundle) -> None:
    """Every blob the bundle's events reference is in the bundle."""
    present = set(bundle.blob_digests)
    refs: dict[str, ArtifactRef] = {}
    for record in bundle.topic_events(_FINISHED_TOPIC):
        for name, digest in _artifacts(store, record).items():
            refs.setdefault(digest, ArtifactRef(record.position, record.originator_id, name))

    def read(digest: str) -> bytes:
        if digest not in present:
            raise _missing_in_bundle(digest, refs[digest])
        return bundle.blob_bytes(digest)

    for digest, ref in _with_manifest_entries(refs, read):
        if digest not in present:
            raise _missing_in_bundle(digest, ref)


def _missing_in_bundle(digest: str, ref: ArtifactRef) -> BundleError:
    return BundleError(
        f"the bundle is incomplete: blob {digest}, referenced by the event at position "
        f"{ref.position} (job {ref.job_id}, artifact {ref.artifact!r}), is not in it"
    )


def _write_blobs(blobs: BlobStore, bundle: VerifiedBundle) -> int:
    """Put the bundle's blobs the store lacks in place, then make them durable with one sync.

    Each is written aside (or linked there from a scratch file on the same file system) and
    renamed, so a reader never sees half a blob; one sync at the end instead of one per blob
    keeps a restore of tens of thousands of blobs to about a second. Which blobs are present
    is read once per directory rather than asked once per blob.
    """
    present: dict[str, set[str]] = {}
    written = 0
    for digest in bundle.blob_digests:
        folder, name = os.path.split(blobs.path(digest))
        names = present.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder))
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                names = set()
            present[folder] = names
        if name in names:
            continue
        target = os.path.join(folder, name)
        aside = os.path.join(folder, f".restore-{name}")
        source = bundle.blob_file(digest)
        if source is None:
            _write_file(aside, bundle.blob_bytes(digest))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
            try:
                os.link(source, aside)
            except OSError:
                shutil.copyfile(source, aside)
        os.replace(aside, target)
        names.add(name)
        written += 1
    if written:
        os.sync()
    return written


def _write_file(path: str, data: bytes) -> None:
    # Truncated if a crashed restore left it; never through a link planted in its place.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _copy_events(
    store: JobStore,
    bundle: VerifiedBundle,
    write_blobs: Callable[[], int],
    *,
    over_first_start: bool = False,
) -> tuple[int, int]:
    """All the bundle's events in one transaction, with their positions, under the lock every
    append takes, so no append can interleave and the log stays gapless (with
    `over_first_start`, the first start's events removed first, in the same transaction).

    The blobs are written (by `write_blobs`, in a thread) while the database takes the events,
    and the transaction commits only once they are durable: once the events are committed,
    everything they reference is there. Returns what `write_blobs` returned and how many
    events were replaced.
    """
    manifest = bundle.manifest
    table = _events_table(store)
    copy = SQL(
        "COPY {} (notification_id, originator_id, originator_version, topic, state) "
        "FROM STDIN (FORMAT BINARY)"
    ).format(table)
    with store.recorder.datastore.get_connection() as conn, conn.transaction():
        conn.execute(
            SQL(
                "SET LOCAL lock_timeout = '{}s'; SET LOCAL idle_in_transaction_session_timeout = 0"
            ).format(SQL(str(_LOCK_TIMEOUT_SECONDS)))
        )
        conn.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        row = conn.execute(
            SQL("SELECT COALESCE(MAX(notification_id), 0) AS max FROM {}").format(table)
        ).fetchone()
        current = int(row["max"]) if row else 0
        replaced = 0
        if current != manifest.since:
            first_start = manifest.since == 0 and _first_start_locked(conn, store, current)
            if not (over_first_start and first_start):
                # Someone appended between the check and the lock.
                _check_target(current, manifest, first_start=first_start)
            _remove_first_start(conn, store)
            replaced = current
        # If the COPY fails, leaving the block waits for the blobs (harmless, content-addressed)
        # and the error goes on; if writing them fails, the events are rolled back.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vdo-blobs") as pool:
            blobs_written = pool.submit(write_blobs)
            if manifest.counts.events:
                with conn.cursor() as cur, cur.copy(copy) as pipe:
                    for chunk in bundle.copy_data():
                        pipe.write(chunk)
            written = blobs_written.result()
        if manifest.counts.events == 0:
            return written, replaced
        # The column's sequence is not what numbers events, but keep it past the positions.
        conn.execute(
            SQL("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)"),
            (_qualified_name(store), manifest.last_position),
        )
        # Wake the relay of a running deployment, as every append does.
        conn.execute("SELECT pg_notify(%s, '')", (store.recorder.channel_name,))
    return written, replaced


def _first_start_locked(conn: psycopg.Connection[Any], store: JobStore, end: int) -> bool:
    """`holds_only_first_start`, read inside the loading transaction (under its lock)."""
    if not 0 < end <= _FIRST_START_MAX_EVENTS:
        return False
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {} ORDER BY notification_id"
            ).format(_events_table(store))
        ).fetchall()
    events: list[StoredJobEvent] = [store.decode_row(row) for row in rows]
    return made_at_first_start(events)


def _remove_first_start(conn: psycopg.Connection[Any], store: JobStore) -> None:
    """Remove the first start's events (and any tracking record of them), refusing while a
    relay runs: it has published them and would not publish the restored events that take
    their positions."""
    _require_no_relay(conn)
    conn.execute(SQL("DELETE FROM {}").format(_events_table(store)))
    conn.execute(
        SQL("DELETE FROM {}.{}").format(
            Identifier(store.recorder.datastore.schema),
            Identifier(store.recorder.tracking_table_name),
        )
    )


def _events_table(store: JobStore) -> Composed:
    return SQL("{}.{}").format(
        Identifier(store.recorder.datastore.schema), Identifier(store.recorder.events_table_name)
    )


def _qualified_name(store: JobStore) -> str:
    schema, table = store.recorder.datastore.schema, store.recorder.events_table_name
    return f'"{schema}"."{table}"'
