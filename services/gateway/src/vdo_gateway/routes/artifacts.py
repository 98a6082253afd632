"""A job's results: each attempt's files (what the builder and the tester wrote), one file's
content, the whole result as a zip, and what changed between two attempts.

Read from the job's history in the store and the blob store: a result is there the moment its
step's event is stored. A job the caller may not see answers 404, as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from vdo_gateway.artifacts import (
    AttemptNotFoundError,
    BadPathError,
    FileDiff,
    FileNotFoundInResultError,
    JobFiles,
    MissingBlobError,
    NoFilesError,
    ResultFile,
    content_disposition,
    diff_results,
    find_file,
    is_text,
    zip_stream,
)
from vdo_gateway.auth import Principal, PrincipalDep
from vdo_gateway.deps import MAX_POSITION, SettingsDep, StoreDep
from vdo_gateway.history import visible_history
from vdo_gateway.models import ErrorPublic
from vdo_kernel.blobs import BlobStore
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

router = APIRouter(prefix="/jobs", tags=["artifacts"])

ATTEMPT_MAX: Final = 10_000
# What a file or a zip is answered with besides its type: never guessed at by a browser, never
# run as a page, never kept by a shared cache.
SAFE_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, no-cache",
}
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {
        "model": ErrorPublic,
        "description": "no such job, attempt or file, or no files yet",
    },
    410: {
        "model": ErrorPublic,
        "description": "the history names a blob this deployment's blob store does not hold",
    },
    422: {"model": ErrorPublic, "description": "the request is not valid"},
}
FILE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **ERRORS,
    400: {"model": ErrorPublic, "description": "the path cannot name a file of a result"},
}

Attempt = Annotated[
    int | None,
    Query(ge=1, le=ATTEMPT_MAX, description="the attempt (default: the last one with files)"),
]


class ArtifactFile(BaseModel):
    path: str = Field(description="relative to the result's top, '/'-separated")
    size: int | None = Field(description="in bytes; none when the blob store lacks the content")
    sha256: str = Field(description="of the content (the blob's name)")
    step: str = Field(description="the step that wrote it: build (the code) or write_tests")
    attempt: int = Field(
        description="the attempt whose step wrote it (an earlier one, when a retry reused its "
        "result)"
    )
    written_at: datetime = Field(description="when that step finished")

    @classmethod
    def of(cls, file: ResultFile) -> ArtifactFile:
        return cls(
            path=file.path,
            size=file.size,
            sha256=file.sha256,
            step=file.step,
            attempt=file.attempt,
            written_at=file.written_at,
        )


class ArtifactTree(BaseModel):
    job_id: UUID
    attempt: int
    attempts: int = Field(description="how many attempts the job has had")
    steps: list[str] = Field(
        description="the steps whose files are in: build, and write_tests once it finished"
    )
    items: list[ArtifactFile] = Field(description="by path")
    total: int = Field(description="files in the result")
    total_bytes: int = Field(description="their size together")
    limit: int
    offset: int


class FileDiffPublic(BaseModel):
    path: str
    change: Literal["added", "removed", "modified"]
    from_sha256: str | None
    to_sha256: str | None
    binary: bool = Field(description="not text: no line diff")
    diff: str | None = Field(description="a unified diff (a/… to b/…); none when binary")
    lines_added: int
    lines_removed: int
    truncated: bool = Field(description="the diff was too long and is cut")

    @classmethod
    def of(cls, diff: FileDiff) -> FileDiffPublic:
        return cls(
            path=diff.path,
            change=diff.change,
            from_sha256=diff.from_sha256,
            to_sha256=diff.to_sha256,
            binary=diff.binary,
            diff=diff.diff,
            lines_added=diff.lines_added,
            lines_removed=diff.lines_removed,
            truncated=diff.truncated,
        )


class AttemptsDiff(BaseModel):
    job_id: UUID
    from_attempt: int
    to_attempt: int
    items: list[FileDiffPublic] = Field(description="the files that changed, by path")
    total: int = Field(description="files that changed")
    added: int
    removed: int
    modified: int
    unchanged: int
    limit: int
    offset: int


@router.get("/{job_id}/artifacts", responses=ERRORS)
def list_artifacts(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    attempt: Attempt = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> ArtifactTree:
    """The files of an attempt's result: the builder's and the tester's, each with its size,
    sha256 and the step that wrote it."""
    with _answering():
        job_files = _job_files(store, settings, principal, job_id)
        result = job_files.files(job_files.attempt_or_last(attempt))
    return ArtifactTree(
        job_id=job_id,
        attempt=result.attempt,
        attempts=job_files.attempts,
        steps=result.steps,
        items=[ArtifactFile.of(f) for f in result.files[offset : offset + limit]],
        total=len(result.files),
        total_bytes=sum(f.size or 0 for f in result.files),
        limit=limit,
        offset=offset,
    )


@router.get(
    "/{job_id}/artifacts/file",
    response_class=Response,
    responses={
        200: {
            "description": "the file's content: text/plain (UTF-8) for text, "
            "application/octet-stream otherwise",
            "content": {"text/plain": {}, "application/octet-stream": {}},
        },
        **FILE_ERRORS,
    },
)
def get_artifact_file(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    path: Annotated[
        str,
        Query(description="the file's path in the result, as listed", examples=["app/main.py"]),
    ],
    attempt: Attempt = None,
) -> Response:
    """One file of an attempt's result."""
    with _answering():
        job_files = _job_files(store, settings, principal, job_id)
        file = find_file(job_files.files(job_files.attempt_or_last(attempt)), path)
        data = job_files.content(file)
    text = is_text(data)
    return Response(
        content=data,
        media_type="text/plain; charset=utf-8" if text else "application/octet-stream",
        headers={
            **SAFE_HEADERS,
            "Content-Disposition": content_disposition("inline" if text else "attachment", path),
            "ETag": f'"{file.sha256}"',
        },
    )


@router.get(
    "/{job_id}/artifacts.zip",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the result as a zip (streamed): entries by path, dated when their "
            "step finished; the same bytes every time",
            "content": {"application/zip": {}},
        },
        **ERRORS,
    },
)
def download_artifacts(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    attempt: Attempt = None,
) -> StreamingResponse:
    """An attempt's result as a zip (default: the last attempt with files)."""
    with _answering():
        job_files = _job_files(store, settings, principal, job_id)
        result = job_files.files(job_files.attempt_or_last(attempt))
        job_files.require_contents(result)
    name = f"vdo-{str(job_id)[:8]}-attempt-{result.attempt}.zip"
    return StreamingResponse(
        zip_stream(job_files, result),
        media_type="application/zip",
        headers={**SAFE_HEADERS, "Content-Disposition": content_disposition("attachment", name)},
    )


@router.get("/{job_id}/diff", responses=ERRORS)
def diff_attempts(
    job_id: UUID,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    from_attempt: Annotated[
        int | None,
        Query(alias="from", ge=1, le=ATTEMPT_MAX, description="default: the one before `to`"),
    ] = None,
    to_attempt: Annotated[
        int | None,
        Query(alias="to", ge=1, le=ATTEMPT_MAX, description="default: the last with files"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> AttemptsDiff:
    """What changed in the result from one attempt to another, file by file (unified diffs)."""
    with _answering():
        job_files = _job_files(store, settings, principal, job_id)
        to_number = job_files.attempt_or_last(to_attempt)
        if from_attempt is None:
            if to_number == 1:
                raise HTTPException(
                    status_code=404,
                    detail=f"job {job_id} has only one attempt with files: nothing to compare "
                    "it with (give from and to)",
                )
            from_number = to_number - 1
        else:
            from_number = job_files.attempt_or_last(from_attempt)
        old, new = job_files.files(from_number), job_files.files(to_number)
        diff = diff_results(job_files, old, new)
    counts = {
        change: sum(1 for d in diff.changed if d.change == change)
        for change in ("added", "removed", "modified")
    }
    return AttemptsDiff(
        job_id=job_id,
        from_attempt=from_number,
        to_attempt=to_number,
        items=[FileDiffPublic.of(d) for d in diff.changed[offset : offset + limit]],
        total=len(diff.changed),
        added=counts["added"],
        removed=counts["removed"],
        modified=counts["modified"],
        unchanged=diff.unchanged,
        limit=limit,
        offset=offset,
    )


def _job_files(store: JobStore, settings: Settings, principal: Principal, job_id: UUID) -> JobFiles:
    events = visible_history(store, principal, job_id)
    return JobFiles(job_id, events, BlobStore(settings.blobs_dir))


@contextmanager
def _answering() -> Iterator[None]:
    try:
        yield
    except BadPathError as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    except (AttemptNotFoundError, NoFilesError, FileNotFoundInResultError) as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except MissingBlobError as error:
        raise HTTPException(status_code=410, detail=str(error)) from None
