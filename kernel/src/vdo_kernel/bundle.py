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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from uuid import UUID

FORMAT = "vdo-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
EVENTS_KIND = "events"
BLOB_KIND = "blob"
KNOWN_KINDS = frozenset({EVENTS_KIND, BLOB_KIND})
EVENTS_PER_PART = 25_000
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


@dataclass
class VerifiedBundle:
    """A bundle whose every part has been checked; its parts are copies in a scratch directory
    (gone when the `open_bundle` block ends)."""

    manifest: Manifest
    _paths: dict[str, Path] = field(repr=False)

    @property
    def event_parts(self) -> list[Part]:
        return [p for p in self.manifest.parts if p.kind == EVENTS_KIND]

    @property
    def blob_digests(self) -> list[str]:
        return [p.sha256 for p in self.manifest.parts if p.kind == BLOB_KIND]

    def blob_path(self, digest: str) -> Path:
        return self._paths[f"blobs/sha256/{digest}"]

    def events(self) -> Iterator[EventRecord]:
        for part in self.event_parts:
            yield from self.events_of(part)

    def events_of(self, part: Part) -> Iterator[EventRecord]:
        with self._paths[part.name].open("rb") as fh:
            for number, line in enumerate(fh, 1):
                yield EventRecord.parse(line, f"line {number} of {part.name}")


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
    paths: dict[str, Path] = {}
    while True:
        name, size = _next_member(gz)
        if name is None:
            break
        part = expected.get(name)
        if part is None:
            raise BundleError(f"the archive holds {name!r}, which its manifest does not list")
        if name in paths:
            raise BundleError(f"the archive holds {name!r} twice")
        if size != part.size:
            raise BundleError(
                f"{name} is {size} bytes in the archive but {part.size} in the manifest"
            )
        target = scratch / f"part-{len(paths):07d}"
        sha = hashlib.sha256()
        with target.open("wb") as out:
            left = size
            while left:
                chunk = gz.read(min(left, _CHUNK))
                if not chunk:
                    raise BundleError(f"the archive ends inside {name}: it is truncated")
                sha.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        if sha.hexdigest() != part.sha256:
            raise BundleError(f"{name} is damaged: its checksum does not match the manifest")
        _skip_padding(gz, size)
        paths[name] = target
    trailer = gz.read(TRAILER_MAX_BYTES + 1)
    while trailer:
        if len(trailer) > TRAILER_MAX_BYTES or trailer.strip(b"\0"):
            raise BundleError("the archive has data after its end")
        trailer = gz.read(TRAILER_MAX_BYTES + 1)
    missing = sorted(set(expected) - set(paths))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BundleError(f"the bundle is incomplete: {missing[0]}{more} missing")
    bundle = VerifiedBundle(manifest, paths)
    _check_events(bundle)
    return bundle


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


def _check_events(bundle: VerifiedBundle) -> None:
    """Every event follows the one before, and the manifest's counts and checksum are true."""
    manifest = bundle.manifest
    digest = EventsDigest()
    last, count = manifest.since, 0
    jobs: dict[UUID, int] = {}
    for part in bundle.event_parts:
        first_in_part = last + 1
        for record in bundle.events_of(part):
            if record.position != last + 1:
                raise BundleError(
                    f"{part.name}: event at position {record.position} follows {last} "
                    "(a bundle's events are gapless and in order)"
                )
            previous = jobs.get(record.originator_id)
            if previous is not None and record.originator_version != previous + 1:
                raise BundleError(
                    f"{part.name}: job {record.originator_id} has version "
                    f"{record.originator_version} after {previous}"
                )
            if manifest.since == 0 and previous is None and record.originator_version != 1:
                raise BundleError(
                    f"{part.name}: job {record.originator_id} starts at version "
                    f"{record.originator_version} in a bundle of the whole log"
                )
            jobs[record.originator_id] = record.originator_version
            digest.add(record)
            last = record.position
            count += 1
        if (part.count, part.first_position, part.last_position) != (
            last - first_in_part + 1,
            first_in_part,
            last,
        ):
            raise BundleError(f"the manifest's counts for {part.name} are wrong")
    if count != manifest.counts.events:
        raise BundleError(
            f"the manifest says {manifest.counts.events} events but the bundle holds {count}"
        )
    if len(jobs) != manifest.counts.jobs:
        raise BundleError(
            f"the manifest says {manifest.counts.jobs} jobs but the bundle's events "
            f"belong to {len(jobs)}"
        )
    first = manifest.since + 1 if count else None
    if (manifest.first_position, manifest.last_position) != (first, last):
        raise BundleError(
            f"the manifest says positions {manifest.first_position}..{manifest.last_position} "
            f"but the bundle holds {first}..{last}"
        )
    if digest.hexdigest() != manifest.events_sha256:
        raise BundleError("the bundle's events do not match the manifest's events checksum")


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
