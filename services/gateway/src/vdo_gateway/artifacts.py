"""The files an attempt of a job produced: the builder's (the ``files`` artifact of its ``build``
step) and the tester's (the ``tests`` artifact of its ``write_tests`` step), as one tree, the
way the sandbox lays them out to run the tests (the tests last, so a test file of the same path
wins). Each artifact is a manifest blob, JSON ``{path: digest of the file's blob}``.

Everything here is read from the history and the blob store by digest: a path a caller sends is
only ever compared with the manifests' paths, never used to open anything, and the manifests'
own paths are checked before they name anything (a zip entry, a download), so nothing outside
the blob store can be read or named.
"""

from __future__ import annotations

import difflib
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import quote
from uuid import UUID

from vdo_gateway.history import replayed
from vdo_kernel import logs
from vdo_kernel.blobs import BlobNotFoundError, BlobStore
from vdo_kernel.domain import Job, Step
from vdo_kernel.paths import path_problem
from vdo_kernel.store import StoredJobEvent

log = logs.get(__name__)

# The steps that write files, the artifact each leaves, in the order they are laid out.
FILE_STEPS: Final = ((Step.BUILD, "files"), (Step.WRITE_TESTS, "tests"))
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
# A file diff longer than this is cut (and says so).
MAX_DIFF_CHARS: Final = 200_000
# Zip entries' times must fall in the years the format can hold.
_ZIP_YEARS: Final = (1980, 2107)


class ArtifactsError(Exception):
    """What was asked for is not there; the message says why."""


class AttemptNotFoundError(ArtifactsError):
    pass


class NoFilesError(ArtifactsError):
    pass


class FileNotFoundInResultError(ArtifactsError):
    pass


class BadPathError(ArtifactsError):
    """The path asked for cannot name a file of a result (400, not 404)."""


class MissingBlobError(ArtifactsError):
    """The history names a blob this deployment's blob store does not hold (410)."""


@dataclass(frozen=True)
class ResultFile:
    path: str
    sha256: str
    # None when the blob is not in this deployment's blob store.
    size: int | None
    step: str
    # The attempt whose step wrote it (an earlier one's, when a retry reused its result).
    attempt: int
    written_at: datetime


@dataclass(frozen=True)
class AttemptFiles:
    attempt: int
    files: list[ResultFile]
    # The steps whose files are there: build, and write_tests once it finished.
    steps: list[str]

    def by_path(self) -> dict[str, ResultFile]:
        return {f.path: f for f in self.files}


class JobFiles:
    """A job's results, attempt by attempt, from its history and the blob store."""

    def __init__(self, job_id: UUID, events: list[StoredJobEvent], blobs: BlobStore) -> None:
        self.job_id = job_id
        self.blobs = blobs
        self.job: Job = replayed(events)
        self.finished_at: dict[tuple[str, int], datetime] = {
            (str(e.data["step"]), int(e.data["attempt"])): e.timestamp
            for e in events
            if e.type == "StepFinished"
        }

    @property
    def attempts(self) -> int:
        return self.job.attempt

    def attempt_or_last(self, attempt: int | None) -> int:
        """The attempt asked for (checked), or the last one with files."""
        if attempt is not None:
            if not 1 <= attempt <= self.attempts:
                raise AttemptNotFoundError(
                    f"job {self.job_id} has no attempt {attempt} (it has had "
                    f"{self._attempts_text()})"
                )
            return attempt
        for candidate in range(self.attempts, 0, -1):
            if self._digest(Step.BUILD, "files", candidate) is not None:
                return candidate
        raise NoFilesError(f"job {self.job_id} has no files yet (no build has finished)")

    def files(self, attempt: int) -> AttemptFiles:
        """The attempt's result: every file, by path."""
        tree: dict[str, ResultFile] = {}
        steps: list[str] = []
        for step, artifact in FILE_STEPS:
            digest = self._digest(step, artifact, attempt)
            if digest is None:
                continue
            steps.append(step.value)
            origin = self.job.origin(step, attempt)
            written_at = self.finished_at[(step.value, origin)]
            for path, file_digest in self._manifest(digest, step, attempt).items():
                tree[path] = ResultFile(
                    path=path,
                    sha256=file_digest,
                    size=self._size(file_digest),
                    step=step.value,
                    attempt=origin,
                    written_at=written_at,
                )
        if not steps:
            raise NoFilesError(
                f"attempt {attempt} of job {self.job_id} has no files yet (its build has not "
                "finished)"
            )
        return AttemptFiles(attempt=attempt, files=[tree[p] for p in sorted(tree)], steps=steps)

    def content(self, file: ResultFile) -> bytes:
        try:
            return self.blobs.get(file.sha256)
        except BlobNotFoundError:
            raise MissingBlobError(
                f"the content of {file.path!r} (blob {file.sha256}) is not in this "
                "deployment's blob store"
            ) from None

    def require_contents(self, result: AttemptFiles) -> None:
        """MissingBlobError unless every file's content is there (checked before a download
        starts, so it never stops half-way)."""
        for file in result.files:
            if file.size is None:
                raise MissingBlobError(
                    f"the content of {file.path!r} (blob {file.sha256}) is not in this "
                    "deployment's blob store"
                )

    def _digest(self, step: Step, artifact: str, attempt: int) -> str | None:
        digest = self.job.record(step, attempt).artifacts.get(artifact)
        return digest if isinstance(digest, str) and _DIGEST.fullmatch(digest) else None

    def _manifest(self, digest: str, step: Step, attempt: int) -> dict[str, str]:
        try:
            raw = json.loads(self.blobs.get(digest))
        except BlobNotFoundError:
            raise MissingBlobError(
                f"the {step.value} step's list of files of attempt {attempt} (blob {digest}) is "
                "not in this deployment's blob store"
            ) from None
        if not isinstance(raw, dict):
            raise MissingBlobError(f"blob {digest} is not a list of files")
        manifest: dict[str, str] = {}
        for path, file_digest in raw.items():
            if (
                not isinstance(path, str)
                or path_problem(path) is not None
                or not isinstance(file_digest, str)
                or not _DIGEST.fullmatch(file_digest)
            ):
                # Never written by the builder or the tester (they check every path first).
                log.warning("a manifest entry is not a safe file", manifest=digest)
                continue
            manifest[path] = file_digest
        return manifest

    def _size(self, digest: str) -> int | None:
        try:
            return self.blobs.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def _attempts_text(self) -> str:
        return "1 attempt" if self.attempts == 1 else f"attempts 1 to {self.attempts}"


def find_file(result: AttemptFiles, path: str) -> ResultFile:
    problem = path_problem(path)
    if problem is not None:
        raise BadPathError(f"the path {problem}")
    found = result.by_path().get(path)
    if found is None:
        raise FileNotFoundInResultError(f"attempt {result.attempt} has no file {path!r}")
    return found


def is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def content_disposition(kind: Literal["inline", "attachment"], path: str) -> str:
    """A Content-Disposition naming the file by its last part: an ASCII name for every client
    and the exact one (RFC 6266) for those that read it; no quote, slash or control character
    can get through either."""
    name = path.rsplit("/", 1)[-1]
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].lstrip(".") or "file"
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


# ---- the zip ---------------------------------------------------------------------------------


class _Chunks:
    """A write-only file for `zipfile`: it collects what is written, to be handed on a piece
    at a time (no seek and no tell: zipfile then writes a streamable archive)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(job_files: JobFiles, result: AttemptFiles) -> Iterator[bytes]:
    """The result as a zip, produced while it is sent. Byte for byte the same every time: the
    entries in path order, each dated when its step finished, with fixed attributes."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in result.files:
            info = zipfile.ZipInfo(file.path, date_time=zip_time(file.written_at))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whichever system serves it
            info.external_attr = 0o100644 << 16
            archive.writestr(info, job_files.content(file))
            yield sink.take()
    yield sink.take()


def zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    """A time as a zip entry holds it: in the years the format can hold, to the even second."""
    year = min(max(moment.year, _ZIP_YEARS[0]), _ZIP_YEARS[1])
    return (year, moment.month, moment.day, moment.hour, moment.minute, moment.second // 2 * 2)


# ---- diffs -----------------------------------------------------------------------------------

Change = Literal["added", "removed", "modified"]


@dataclass(frozen=True)
class FileDiff:
    path: str
    change: Change
    from_sha256: str | None
    to_sha256: str | None
    binary: bool
    # A unified diff (None for a binary file).
    diff: str | None
    lines_added: int
    lines_removed: int
    truncated: bool


@dataclass(frozen=True)
class ResultDiff:
    changed: list[FileDiff]
    unchanged: int


def diff_results(job_files: JobFiles, old: AttemptFiles, new: AttemptFiles) -> ResultDiff:
    """What changed from one attempt's result to another's, file by file, in path order."""
    before, after = old.by_path(), new.by_path()
    changed: list[FileDiff] = []
    unchanged = 0
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is not None and b is not None and a.sha256 == b.sha256:
            unchanged += 1
            continue
        changed.append(_file_diff(job_files, path, a, b))
    return ResultDiff(changed=changed, unchanged=unchanged)


def _file_diff(
    job_files: JobFiles, path: str, a: ResultFile | None, b: ResultFile | None
) -> FileDiff:
    change: Change = "added" if a is None else "removed" if b is None else "modified"
    old = job_files.content(a) if a is not None else b""
    new = job_files.content(b) if b is not None else b""
    from_sha256, to_sha256 = (a.sha256 if a else None), (b.sha256 if b else None)
    if not (is_text(old) and is_text(new)):
        return FileDiff(
            path=path,
            change=change,
            from_sha256=from_sha256,
            to_sha256=to_sha256,
            binary=True,
            diff=None,
            lines_added=0,
            lines_removed=0,
            truncated=False,
        )
    lines = list(
        difflib.unified_diff(
            old.decode("utf-8").splitlines(keepends=True),
            new.decode("utf-8").splitlines(keepends=True),
            fromfile=f"a/{path}" if a is not None else "/dev/null",
            tofile=f"b/{path}" if b is not None else "/dev/null",
        )
    )
    body = lines[2:]
    text = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    truncated = len(text) > MAX_DIFF_CHARS
    return FileDiff(
        path=path,
        change=change,
        from_sha256=from_sha256,
        to_sha256=to_sha256,
        binary=False,
        diff=text[:MAX_DIFF_CHARS] if truncated else text,
        lines_added=sum(1 for line in body if line.startswith("+")),
        lines_removed=sum(1 for line in body if line.startswith("-")),
        truncated=truncated,
    )
