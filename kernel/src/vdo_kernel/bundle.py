"""The bundle format of backups and exports: writing one, and reading one back fully verified.

A bundle is a gzip-compressed plain (ustar) tar archive: `manifest.json` first, then the parts
it lists (event parts, one blob per part). docs/backup-format.md describes it for other tools.

The reader trusts nothing in the file: it accepts only regular-file members whose names the
manifest lists, refuses a member larger than the manifest says before reading it, copies each
part under a name of its own choosing (never the member's), and checks every checksum, count
and position before a caller may use any of it. It parses tar headers itself so that no
extension header (which a general tar reader loads whole into memory) is ever read.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import re
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from uuid import UUID

FORMAT = "vdo-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# Said in every manifest: what a bundle never holds.
NOT_INCLUDED = (
    "credentials: provider keys and other secrets entered in Settings stay in the secret store "
    "of the deployment that holds them; enter them again after a restore elsewhere"
)
EVENTS_KIND = "events"
BLOB_KIND = "blob"
KNOWN_KINDS = frozenset({EVENTS_KIND, BLOB_KIND})
EVENTS_PER_PART = 25_000
# The topics of a job's events begin so (the `Job` aggregate's events, in `vdo_kernel.domain`):
# `counts.jobs` counts their originators. Users, tokens and templates are events too, of other
# aggregates, and are not jobs.
JOB_TOPIC_PREFIX = "vdo_kernel.domain:Job."
COMPRESS_LEVEL = 1  # measured on 100k events: half the time of level 6, a 20% larger file
MANIFEST_MAX_BYTES = 256 * 1024 * 1024
TRAILER_MAX_BYTES = 1024 * 1024
_BLOCK = 512
_CHUNK = 1024 * 1024
_PART_NAME = re.compile(r"^(events/[0-9]{6}\.jsonl|blobs/sha256/[0-9a-f]{64})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Any member name: relative, plain characters, no `.` or `..` component.
_SAFE_NAME = re.compile(r"^(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")


class BundleError(Exception):
    """The bundle is refused; the message says why. Nothing was imported from it."""


@dataclass(frozen=True)
class EventRecord:
    """One stored event exactly as the store holds it."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes

    def line(self) -> bytes:
        """The event as one line of an event part (the format's canonical serialisation)."""
        return (
            f'{{"position":{self.position},"originator_id":"{self.originator_id}",'
            f'"originator_version":{self.originator_version},'
            f'"topic":{json.dumps(self.topic)},'
            f'"state":"{base64.b64encode(self.state).decode("ascii")}"}}\n'
        ).encode()

    @classmethod
    def parse(cls, line: bytes, where: str) -> EventRecord:
        try:
            raw = json.loads(line)
            position, originator_id = raw["position"], raw["originator_id"]
            version, topic, state = raw["originator_version"], raw["topic"], raw["state"]
            if not (
                type(position) is int
                and type(version) is int
                and isinstance(originator_id, str)
                and isinstance(topic, str)
                and isinstance(state, str)
            ):
                raise TypeError("a field has the wrong type")
            return cls(
                position=position,
                originator_id=UUID(originator_id),
                originator_version=version,
                topic=topic,
                state=base64.b64decode(state, validate=True),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BundleError(f"{where} is not a valid event ({exc})") from None


class EventsDigest:
    """A checksum of events independent of how they are serialised, so that the events a
    store holds can be compared with a bundle's (restoring the same bundle twice)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, record: EventRecord) -> None:
        topic = record.topic.encode()
        self._hash.update(
            struct.pack(
                ">q16sqI",
                record.position,
                record.originator_id.bytes,
                record.originator_version,
                len(topic),
            )
        )
        self._hash.update(topic)
        self._hash.update(struct.pack(">Q", len(record.state)))
        self._hash.update(record.state)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def events_digest(records: Iterable[EventRecord]) -> str:
    digest = EventsDigest()
    for record in records:
        digest.add(record)
    return digest.hexdigest()


@dataclass(frozen=True)
class Part:
    name: str
    kind: str
    size: int
    sha256: str
    # Event parts only: how many events, and their first and last positions.
    count: int | None = None
    first_position: int | None = None
    last_position: int | None = None
    optional: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.kind == EVENTS_KIND:
            out |= {
                "count": self.count,
                "first_position": self.first_position,
                "last_position": self.last_position,
            }
        if self.optional:
            out["optional"] = True
        return out


@dataclass(frozen=True)
class Counts:
    events: int
    jobs: int
    blobs: int


@dataclass(frozen=True)
class Manifest:
    kind: str  # "backup" (the whole log) or "export" (the log after `since`)
    product_version: str
    created_at: str
    since: int
    first_position: int | None
    last_position: int
    counts: Counts
    events_sha256: str
    parts: tuple[Part, ...]
    sha256: str
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "not_included": NOT_INCLUDED,
            "kind": self.kind,
            "product_version": self.product_version,
            "created_at": self.created_at,
            "since": self.since,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "counts": {
                "events": self.counts.events,
                "jobs": self.counts.jobs,
                "blobs": self.counts.blobs,
            },
            "events_sha256": self.events_sha256,
            "sha256": self.sha256,
            "parts": [p.to_json() for p in self.parts],
        }

    @classmethod
    def from_json(cls, raw: Any) -> Manifest:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f"not a VDO bundle (its manifest does not say format {FORMAT!r})")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise BundleError(
                f"the bundle is in format version {version!r}; this vdo reads version "
                f"{FORMAT_VERSION} only" + (" (a newer vdo made it: upgrade)" if newer else "")
            )
        try:
            counts = raw["counts"]
            manifest = cls(
                kind=_text(raw["kind"]),
                product_version=_text(raw["product_version"]),
                created_at=_text(raw["created_at"]),
                since=_natural(raw["since"]),
                first_position=(
                    None if raw["first_position"] is None else _natural(raw["first_position"])
                ),
                last_position=_natural(raw["last_position"]),
                counts=Counts(
                    events=_natural(counts["events"]),
                    jobs=_natural(counts["jobs"]),
                    blobs=_natural(counts["blobs"]),
                ),
                events_sha256=_digest(raw["events_sha256"]),
                parts=tuple(_part(p) for p in raw["parts"]),
                sha256=_digest(raw["sha256"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"the bundle's manifest is malformed ({exc})") from None
        return manifest


def whole_checksum(parts: Iterable[Part]) -> str:
    """The bundle's checksum: sha256 of `sha256sum`-style lines of its parts, sorted by name."""
    lines = "".join(f"{p.sha256}  {p.name}\n" for p in sorted(parts, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()


# ---- writing --------------------------------------------------------------------------------


@dataclass
class _BlobEntry:
    digest: str
    path: Path
    size: int


class BundleWriter:
    """Collects a bundle's events and blobs, then writes the archive (manifest first).

    Event parts are spilled to a scratch directory as they come, so memory stays flat however
    long the log is; blobs are read from where they are when the archive is written.
    """

    def __init__(self, scratch: Path, *, kind: str, since: int) -> None:
        self.scratch = scratch
        self.kind = kind
        self.since = since
        self._parts: list[tuple[Part, Path]] = []
        self._blobs: dict[str, _BlobEntry] = {}
        self._digest = EventsDigest()
        self._jobs: set[UUID] = set()
        self._last = since
        self._count = 0
        self._open: tuple[IO[bytes], Path, Any, int, int] | None = None

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open is not None:
            self._open[0].close()
            self._open = None

    def add_event(self, record: EventRecord) -> None:
        if record.position != self._last + 1:
            raise BundleError(f"the log has a gap: position {record.position} follows {self._last}")
        if self._open is None or self._open[4] >= EVENTS_PER_PART:
            self._close_part()
            path = self.scratch / f"events-{len(self._parts) + 1:06d}"
            self._open = (path.open("wb"), path, hashlib.sha256(), record.position, 0)
        fh, path, sha, first, count = self._open
        line = record.line()
        fh.write(line)
        sha.update(line)
        self._open = (fh, path, sha, first, count + 1)
        self._digest.add(record)
        if record.topic.startswith(JOB_TOPIC_PREFIX):
            self._jobs.add(record.originator_id)
        self._last = record.position
        self._count += 1

    def add_blob(self, digest: str, path: Path) -> None:
        """A blob, checked against its digest now so a damaged store fails the backup."""
        if digest in self._blobs:
            return
        sha, size = hashlib.sha256(), 0
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        if sha.hexdigest() != digest:
            raise BundleError(f"blob {digest} at {path} is corrupt (its content does not match)")
        self._blobs[digest] = _BlobEntry(digest, path, size)

    def _close_part(self) -> None:
        if self._open is None:
            return
        fh, path, sha, first, count = self._open
        fh.close()
        number = len(self._parts) + 1
        part = Part(
            name=f"events/{number:06d}.jsonl",
            kind=EVENTS_KIND,
            size=path.stat().st_size,
            sha256=sha.hexdigest(),
            count=count,
            first_position=first,
            last_position=first + count - 1,
        )
        self._parts.append((part, path))
        self._open = None

    def write(self, out: Path, *, product_version: str) -> Manifest:
        """Write the archive to `out` (aside first, then renamed: a file at `out` is whole)."""
        self._close_part()
        blob_parts = [
            (Part(f"blobs/sha256/{b.digest}", BLOB_KIND, b.size, b.digest), b.path)
            for b in sorted(self._blobs.values(), key=lambda b: b.digest)
        ]
        parts = [*self._parts, *blob_parts]
        created = datetime.now(UTC)
        manifest = Manifest(
            kind=self.kind,
            product_version=product_version,
            created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
            since=self.since,
            first_position=self.since + 1 if self._count else None,
            last_position=self._last,
            counts=Counts(events=self._count, jobs=len(self._jobs), blobs=len(self._blobs)),
            events_sha256=self._digest.hexdigest(),
            parts=tuple(p for p, _ in parts),
            sha256=whole_checksum(p for p, _ in parts),
        )
        body = json.dumps(manifest.to_json(), indent=2).encode() + b"\n"
        partial = out.with_name(out.name + ".partial")
        mtime = int(created.timestamp())
        try:
            with (
                partial.open("wb") as raw,
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=mtime
                ) as gz,
                tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
            ):
                tar.addfile(_member(MANIFEST_NAME, len(body), mtime), _Bytes(body))
                for part, path in parts:
                    with path.open("rb") as fh:
                        tar.addfile(_member(part.name, part.size, mtime), fh)
            with partial.open("rb") as written:
                os.fsync(written.fileno())
            partial.replace(out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return manifest


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    return info


class _Bytes:
    """The minimal file object `TarFile.addfile` reads from."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = bytes(self._data[self._at : end])
        self._at += len(chunk)
        return chunk


# ---- reading --------------------------------------------------------------------------------

# The binary COPY format of PostgreSQL (its signature, and the end marker after the last row):
# verified events are kept in it so that loading them streams bytes instead of parsing again.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
COPY_TRAILER = b"\xff\xff"
# Small blobs wait in memory while the bundle is verified (tens of thousands of scratch files
# cost more than the rest of a restore); past these limits they wait in scratch files.
BLOB_IN_MEMORY_MAX = 1024 * 1024
BLOBS_IN_MEMORY_BYTES = 128 * 1024 * 1024
_BLOB_OVERHEAD = 128  # what holding one blob in memory costs beyond its bytes, roughly
# A row: field count, then (length, value) for position, originator_id, originator_version,
# then the lengths and bytes of the topic and of the state.
_ROW_HEAD = struct.Struct(">hiqi16siqi")
_LENGTH = struct.Struct(">i")
_DIGEST_HEAD = struct.Struct(">q16sqI")
_DIGEST_STATE = struct.Struct(">Q")
# An event line exactly as writers write it; anything else takes the general JSON path.
_CANONICAL_LINE = re.compile(
    rb'\{"position":(0|[1-9][0-9]{0,17}),'
    rb'"originator_id":"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",'
    rb'"originator_version":(0|[1-9][0-9]{0,17}),'
    rb'"topic":"([^"\\\x00-\x1f]*)",'
    rb'"state":"([A-Za-z0-9+/]*={0,2})"\}'
)


class VerifiedBundle:
    """A bundle whose every part has been checked (gone when the `open_bundle` block ends).

    Its events wait in a scratch file, already encoded for PostgreSQL's binary COPY; its blobs
    in memory or, past a budget, in scratch files."""

    def __init__(
        self,
        manifest: Manifest,
        scratch: Path,
        rows: Path,
        ranges: dict[str, tuple[int, int]],
        blobs: dict[str, bytes | Path],
    ) -> None:
        self.manifest = manifest
        self._scratch = scratch
        self._rows = rows
        self._ranges = ranges
        self._blobs = blobs

    def __repr__(self) -> str:
        return f"VerifiedBundle(manifest={self.manifest!r})"

    @property
    def event_parts(self) -> list[Part]:
        return [p for p in self.manifest.parts if p.kind == EVENTS_KIND]

    @property
    def blob_digests(self) -> list[str]:
        return [p.sha256 for p in self.manifest.parts if p.kind == BLOB_KIND]

    def blob_bytes(self, digest: str) -> bytes:
        held = self._blobs[digest]
        return held.read_bytes() if isinstance(held, Path) else held

    def blob_file(self, digest: str) -> Path | None:
        """The scratch file holding the blob, or None when it waits in memory."""
        held = self._blobs[digest]
        return held if isinstance(held, Path) else None

    def blob_path(self, digest: str) -> Path:
        """A file holding the blob (written to the scratch directory if it waits in memory)."""
        held = self._blobs[digest]
        if isinstance(held, Path):
            return held
        path = self._scratch / f"blob-{digest}"
        path.write_bytes(held)
        self._blobs[digest] = path
        return path

    def events(self) -> Iterator[EventRecord]:
        for part in self.event_parts:
            yield from self.events_of(part)

    def events_of(self, part: Part) -> Iterator[EventRecord]:
        start, end = self._ranges[part.name]
        for row in _copy_rows(self._rows, start, end):
            position, originator_id, version, topic, state = row
            yield EventRecord(position, UUID(bytes=originator_id), version, topic.decode(), state)

    def topic_events(self, topic: str) -> Iterator[EventRecord]:
        """The events of one topic, in position order (the others are skipped unparsed)."""
        wanted = topic.encode()
        for row in _copy_rows(self._rows, 0, self._rows.stat().st_size, topic=wanted):
            position, originator_id, version, _, state = row
            yield EventRecord(position, UUID(bytes=originator_id), version, topic, state)

    def copy_data(self) -> Iterator[bytes]:
        """All the events as the data of a `COPY … (FORMAT BINARY)` of the columns
        notification_id, originator_id, originator_version, topic, state."""
        yield COPY_SIGNATURE
        with self._rows.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
        yield COPY_TRAILER


def _copy_rows(
    path: Path, start: int, end: int, *, topic: bytes | None = None
) -> Iterator[tuple[int, bytes, int, bytes, bytes]]:
    """Decode the rows the reader encoded, between two offsets of its rows file."""
    head = _ROW_HEAD.size
    with path.open("rb") as fh:
        fh.seek(start)
        left = end - start
        buffer, at = b"", 0
        while True:
            available = len(buffer) - at
            need = head
            if available >= head:
                (topic_size,) = _LENGTH.unpack_from(buffer, at + head - 4)
                need = head + topic_size + 4
                if available >= need:
                    need += _LENGTH.unpack_from(buffer, at + need - 4)[0]
            if available < need:
                more = fh.read(min(left, max(_CHUNK, need - available))) if left else b""
                if not more:
                    if available:
                        raise BundleError("the verified events were changed on disk")
                    return
                left -= len(more)
                buffer, at = buffer[at:] + more, 0
                continue
            _, _, position, _, originator_id, _, version, topic_size = _ROW_HEAD.unpack_from(
                buffer, at
            )
            row_topic = buffer[at + head : at + head + topic_size]
            if topic is None or row_topic == topic:
                state = buffer[at + head + topic_size + 4 : at + need]
                yield position, originator_id, version, row_topic, state
            at += need


@contextmanager
def open_bundle(path: Path, scratch: Path | None = None) -> Iterator[VerifiedBundle]:
    """Read and verify a whole bundle; raises BundleError with the reason if anything is off."""
    with tempfile.TemporaryDirectory(prefix="vdo-bundle-", dir=scratch) as tmp:
        yield _read(path, Path(tmp))


def _read(path: Path, scratch: Path) -> VerifiedBundle:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise BundleError(f"cannot open {path}: {exc.strerror or exc}") from None
    with raw:
        if raw.read(2) != b"\x1f\x8b":
            raise BundleError(f"{path} is not a VDO bundle (not a gzip-compressed archive)")
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                return _read_archive(gz, scratch)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise BundleError(
                f"{path} is damaged or truncated (its compressed stream is broken: {exc})"
            ) from None


class _Stream(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _read_archive(gz: _Stream, scratch: Path) -> VerifiedBundle:
    name, size = _next_member(gz)
    if name is None or name != MANIFEST_NAME:
        raise BundleError(f"the archive does not start with {MANIFEST_NAME}; not a VDO bundle")
    if size > MANIFEST_MAX_BYTES:
        raise BundleError(f"the manifest is {size} bytes, more than a bundle's manifest can be")
    try:
        manifest = Manifest.from_json(json.loads(_read_exact(gz, size)))
    except ValueError as exc:
        raise BundleError(f"the bundle's manifest is not valid JSON ({exc})") from None
    _skip_padding(gz, size)
    _check_manifest(manifest)
    expected = {p.name: p for p in manifest.parts}
    seen: set[str] = set()
    blobs: dict[str, bytes | Path] = {}
    in_memory = 0
    rows = scratch / "events.copy"
    with rows.open("wb") as rows_out:
        events = _EventsCheck(manifest, rows_out)
        # Event parts arriving out of order wait in scratch files for their turn.
        waiting: dict[str, Path] = {}
        while True:
            name, size = _next_member(gz)
            if name is None:
                break
            part = expected.get(name)
            if part is None:
                raise BundleError(f"the archive holds {name!r}, which its manifest does not list")
            if name in seen:
                raise BundleError(f"the archive holds {name!r} twice")
            if size != part.size:
                raise BundleError(
                    f"{name} is {size} bytes in the archive but {part.size} in the manifest"
                )
            seen.add(name)
            if part.kind == EVENTS_KIND and events.next_part() is part:
                events.check_part(part, _member_chunks(gz, part))
                _skip_padding(gz, size)
                while (ready := events.next_part()) is not None and ready.name in waiting:
                    with waiting.pop(ready.name).open("rb") as fh:
                        events.check_part(ready, iter(lambda: fh.read(_CHUNK), b""))
                continue
            if (
                part.kind == BLOB_KIND
                and size <= BLOB_IN_MEMORY_MAX
                and (in_memory + size + _BLOB_OVERHEAD <= BLOBS_IN_MEMORY_BYTES)
            ):
                data = gz.read(size)
                if len(data) != size:
                    raise BundleError(f"the archive ends inside {name}: it is truncated")
                if hashlib.sha256(data).hexdigest() != part.sha256:
                    raise _damaged(name)
                blobs[part.sha256] = data
                in_memory += size + _BLOB_OVERHEAD
            else:
                # A part of a kind this vdo does not know (and may ignore) is checked and
                # dropped; a large blob, or an event part early, waits in a scratch file.
                keep = part.kind in (BLOB_KIND, EVENTS_KIND)
                target = scratch / f"part-{len(seen):07d}" if keep else None
                _copy_member(gz, part, target)
                if target is not None and part.kind == BLOB_KIND:
                    blobs[part.sha256] = target
                elif target is not None:
                    waiting[name] = target
            _skip_padding(gz, size)
    trailer = gz.read(TRAILER_MAX_BYTES + 1)
    while trailer:
        if len(trailer) > TRAILER_MAX_BYTES or trailer.strip(b"\0"):
            raise BundleError("the archive has data after its end")
        trailer = gz.read(TRAILER_MAX_BYTES + 1)
    missing = sorted(set(expected) - seen)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BundleError(f"the bundle is incomplete: {missing[0]}{more} missing")
    events.finish()
    return VerifiedBundle(manifest, scratch, rows, events.ranges, blobs)


def _damaged(name: str) -> BundleError:
    return BundleError(f"{name} is damaged: its checksum does not match the manifest")


def _member_chunks(gz: _Stream, part: Part) -> Iterator[bytes]:
    left = part.size
    while left:
        chunk = gz.read(min(left, _CHUNK))
        if not chunk:
            raise BundleError(f"the archive ends inside {part.name}: it is truncated")
        left -= len(chunk)
        yield chunk


def _copy_member(gz: _Stream, part: Part, target: Path | None) -> None:
    """Check a member's checksum while copying it to `target` (or only check it)."""
    sha = hashlib.sha256()
    out = target.open("wb") if target is not None else None
    try:
        for chunk in _member_chunks(gz, part):
            sha.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    if sha.hexdigest() != part.sha256:
        raise _damaged(part.name)


class _EventsCheck:
    """Checks the event parts one after the other, in their order, as they stream by: each
    part's checksum, that every event follows the one before, and (at the end) the manifest's
    counts and events checksum. Checked events are written to `rows` for the COPY of a load."""

    def __init__(self, manifest: Manifest, rows: IO[bytes]) -> None:
        self.manifest = manifest
        self.ranges: dict[str, tuple[int, int]] = {}
        self._parts = [p for p in manifest.parts if p.kind == EVENTS_KIND]
        self._done = 0
        self._rows = rows
        self._written = 0
        self._digest = hashlib.sha256()
        self._last = manifest.since
        self._count = 0
        # Every originator's last version (jobs, and the other aggregates' too).
        self._versions: dict[bytes, int] = {}
        self._jobs: set[bytes] = set()

    def next_part(self) -> Part | None:
        return self._parts[self._done] if self._done < len(self._parts) else None

    def check_part(self, part: Part, chunks: Iterator[bytes]) -> None:
        """Check one part from its bytes. The part's checksum is judged first: a damaged part
        is reported as damaged, whatever its damaged events would have said."""
        sha = hashlib.sha256()
        first_in_part = self._last + 1
        start = self._written
        failure: BundleError | None = None
        tail = b""
        number = 0
        for chunk in chunks:
            sha.update(chunk)
            if failure is not None:
                continue
            lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
            tail = lines.pop()
            try:
                self._lines(part, lines, number)
            except BundleError as exc:
                failure = exc
            except struct.error:
                failure = BundleError(f"{part.name} holds a number out of range")
            except ValueError:  # bad base64, hex or digits: judged after the checksum
                failure = BundleError(f"{part.name} holds an event that cannot be read")
            number += len(lines)
        if sha.hexdigest() != part.sha256:
            raise _damaged(part.name)
        if failure is None and tail:
            try:
                self._lines(part, [tail], number)
            except BundleError as exc:
                failure = exc
            except struct.error:
                failure = BundleError(f"{part.name} holds a number out of range")
            except ValueError:
                failure = BundleError(f"{part.name} holds an event that cannot be read")
        if failure is not None:
            raise failure
        if (part.count, part.first_position, part.last_position) != (
            self._last - first_in_part + 1,
            first_in_part,
            self._last,
        ):
            raise BundleError(f"the manifest's counts for {part.name} are wrong")
        self.ranges[part.name] = (start, self._written)
        self._done += 1

    def _lines(self, part: Part, lines: list[bytes], number: int) -> None:
        whole_log = self.manifest.since == 0
        versions = self._versions
        jobs = self._jobs
        job_topic = JOB_TOPIC_PREFIX.encode()
        last = self._last
        rows = bytearray()
        digest = bytearray()
        match = _CANONICAL_LINE.fullmatch
        for line in lines:
            number += 1
            canonical = match(line)
            if canonical is not None and canonical[4].isascii():
                raw_position, raw_id, raw_version, topic, raw_state = canonical.groups()
                position, version = int(raw_position), int(raw_version)
                originator_id = binascii.unhexlify(raw_id.replace(b"-", b""))
                state = binascii.a2b_base64(raw_state)
            else:
                record = EventRecord.parse(line, f"line {number} of {part.name}")
                position, version = record.position, record.originator_version
                originator_id, topic = record.originator_id.bytes, record.topic.encode()
                state = record.state
            if position != last + 1:
                raise BundleError(
                    f"{part.name}: event at position {position} follows {last} "
                    "(a bundle's events are gapless and in order)"
                )
            previous = versions.get(originator_id)
            if previous is not None and version != previous + 1:
                raise BundleError(
                    f"{part.name}: job {UUID(bytes=originator_id)} has version "
                    f"{version} after {previous}"
                )
            if whole_log and previous is None and version != 1:
                raise BundleError(
                    f"{part.name}: job {UUID(bytes=originator_id)} starts at version "
                    f"{version} in a bundle of the whole log"
                )
            versions[originator_id] = version
            if topic.startswith(job_topic):
                jobs.add(originator_id)
            digest += _DIGEST_HEAD.pack(position, originator_id, version, len(topic))
            digest += topic
            digest += _DIGEST_STATE.pack(len(state))
            digest += state
            rows += _ROW_HEAD.pack(5, 8, position, 16, originator_id, 8, version, len(topic))
            rows += topic
            rows += _LENGTH.pack(len(state))
            rows += state
            last = position
            self._count += 1
        self._last = last
        self._digest.update(digest)
        self._rows.write(rows)
        self._written += len(rows)

    def finish(self) -> None:
        """The manifest's counts, positions and events checksum against the events."""
        manifest, last, count = self.manifest, self._last, self._count
        if self._done != len(self._parts):
            raise BundleError("the bundle is incomplete: an event part is missing")
        if count != manifest.counts.events:
            raise BundleError(
                f"the manifest says {manifest.counts.events} events but the bundle holds {count}"
            )
        if len(self._jobs) != manifest.counts.jobs:
            raise BundleError(
                f"the manifest says {manifest.counts.jobs} jobs but the bundle's events "
                f"belong to {len(self._jobs)}"
            )
        first = manifest.since + 1 if count else None
        if (manifest.first_position, manifest.last_position) != (first, last):
            raise BundleError(
                f"the manifest says positions {manifest.first_position}.."
                f"{manifest.last_position} but the bundle holds {first}..{last}"
            )
        if self._digest.hexdigest() != manifest.events_sha256:
            raise BundleError("the bundle's events do not match the manifest's events checksum")


def _check_manifest(manifest: Manifest) -> None:
    for part in manifest.parts:
        if part.kind not in KNOWN_KINDS and not part.optional:
            raise BundleError(
                f"the bundle has a part of kind {part.kind!r} this vdo does not know; "
                "it was made by a newer vdo"
            )
        if part.kind == BLOB_KIND and part.name != f"blobs/sha256/{part.sha256}":
            raise BundleError(f"blob part {part.name} is not named by its checksum")
    names = [p.name for p in manifest.parts]
    if len(set(names)) != len(names):
        raise BundleError("the manifest lists a part twice")
    if whole_checksum(manifest.parts) != manifest.sha256:
        raise BundleError("the manifest's checksum does not match its list of parts")
    blobs = sum(p.kind == BLOB_KIND for p in manifest.parts)
    if blobs != manifest.counts.blobs:
        raise BundleError(
            f"the manifest says {manifest.counts.blobs} blobs but lists {blobs} blob parts"
        )


def _next_member(gz: _Stream) -> tuple[str | None, int]:
    """The next member's name and size, or (None, 0) at the archive's end. Only plain regular
    files with safe names are accepted."""
    header = _read_exact(gz, _BLOCK, allow_end=True)
    if not header or header == b"\0" * _BLOCK:
        return None, 0
    stored = _octal(header[148:156], "header checksum")
    if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
        raise BundleError("the archive is damaged (a header's checksum does not match)")
    try:
        name = header[0:100].split(b"\0", 1)[0].decode("ascii")
        prefix = header[345:500].split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise BundleError("the archive holds a member whose name is not ASCII") from None
    if prefix:
        name = f"{prefix}/{name}"
    typeflag = header[156:157]
    if typeflag not in (b"0", b"\0"):
        kind = {b"1": "a hard link", b"2": "a symbolic link", b"5": "a directory"}.get(
            typeflag, f"a special member (type {typeflag!r})"
        )
        raise BundleError(f"the archive holds {kind} ({name!r}); a bundle holds only files")
    if len(name) > 255 or not _SAFE_NAME.match(name):
        raise BundleError(f"the archive holds an entry with an unsafe name: {name!r}")
    return name, _octal(header[124:136], f"size of {name}")


def _octal(field_: bytes, what: str) -> int:
    text = field_.split(b"\0", 1)[0].strip()
    if not re.fullmatch(rb"[0-7]+", text):
        raise BundleError(f"the archive is damaged (the {what} is not a number)")
    return int(text, 8)


def _read_exact(gz: _Stream, size: int, *, allow_end: bool = False) -> bytes:
    data = gz.read(size)
    if len(data) != size and not (allow_end and not data):
        raise BundleError("the archive is truncated")
    return data


def _skip_padding(gz: _Stream, size: int) -> None:
    if size % _BLOCK:
        _read_exact(gz, _BLOCK - size % _BLOCK)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _natural(value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{value!r} is not a whole number")
    result: int = value
    return result


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _digest(value: Any) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ValueError(f"{value!r} is not a sha256 digest")
    return value


def _part(raw: Any) -> Part:
    if not isinstance(raw, dict):
        raise TypeError("a part is not an object")
    name = _text(raw["name"])
    kind = _text(raw["kind"])
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise TypeError("a part's `optional` is not true or false")
    if not (_PART_NAME if kind in KNOWN_KINDS else _SAFE_NAME).match(name):
        raise ValueError(f"{name!r} is not a part name")
    part = Part(
        name=name,
        kind=kind,
        size=_natural(raw["size"]),
        sha256=_digest(raw["sha256"]),
        optional=optional,
    )
    if kind == EVENTS_KIND:
        part = Part(
            name=part.name,
            kind=kind,
            size=part.size,
            sha256=part.sha256,
            count=_natural(raw["count"]),
            first_position=_natural(raw["first_position"]),
            last_position=_natural(raw["last_position"]),
        )
    return part
