"""Admin: the deployment's history in and out as bundles, the API side of `vdo backup`, `vdo
export`, `vdo restore` and `vdo import` (docs/backup-format.md), and the read models checked
against the log, the API side of `vdo replay --verify` (the projector does the check, asked over
NATS: the gateway does not replay anything itself).

A bundle is written to a file under VDO_HOME and sent from there (the kernel writes bundles to
files); the file's name is gone before the first byte is sent, so nothing is left behind however
the download ends. An upload is written to a file as it arrives and verified whole before the
store or the blob directory is touched. After a load the read models are not rebuilt here: the
running projector reads on from its tracking position and catches up by itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from vdo_gateway.auth import require_admin
from vdo_gateway.deps import MAX_POSITION, POOL_WAIT_SECONDS, ResourcesDep
from vdo_gateway.models import BundleLoaded, ErrorPublic, VerifyReportPublic
from vdo_gateway.resources import NoAnswerError, Resources
from vdo_gateway.spool import receive_to, send_from
from vdo_kernel import logs, readmodels
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bundle import BundleError, Manifest, open_bundle
from vdo_kernel.portability import (
    Loaded,
    LoadResult,
    PortabilityError,
    import_bundle,
    restore,
    write_bundle,
)
from vdo_kernel.subjects import ADMIN_VERIFY

log = logs.get(__name__)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

RESTORE_PATH = "/restore"
IMPORT_PATH = "/import"
# The uploads that carry a bundle: the app gives them the bundle size limit.
UPLOAD_PATHS = (RESTORE_PATH, IMPORT_PATH)
# A check replays the whole log aside (about 5 s for 100,000 events); past this the answer is
# 504 and `vdo replay --verify` is the way, without a limit.
VERIFY_TIMEOUT_SECONDS = 300.0
BUNDLE_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/octet-stream"})

ADMIN = (
    "\n\nAn admin endpoint: it reads or replaces the whole deployment's history (users and "
    "tokens included, as their events: tokens digested, never in clear), so only an admin may "
    "call it."
)
BUNDLE_FILE = {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the bundle file, as it was downloaded",
        "content": {
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description}


@router.get(
    "/backup",
    response_class=StreamingResponse,
    responses={200: {"content": BUNDLE_FILE, "description": "the backup bundle"}},
    description="A backup of the whole event log and every blob it references, as one bundle "
    "file: a consistent cut of the log as it was when the backup started, taken while the "
    "stack keeps running. `POST /api/admin/restore` loads it into an empty deployment." + ADMIN,
)
async def get_backup(resources: ResourcesDep) -> StreamingResponse:
    return await _download(resources, since=0, name="vdo-backup")


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": BUNDLE_FILE, "description": "the export bundle"},
        422: _error("the position is not a whole number, or is after the end of the log"),
    },
    description="The events after a position and the blobs they reference, as one bundle "
    "file, for `POST /api/admin/import` into a deployment whose log ends at that position "
    "(a migration's cut-over: restore a backup there, then export and import the rest)." + ADMIN,
)
async def get_export(
    resources: ResourcesDep,
    since: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_POSITION,
            description="only the events after this position (0: the whole log)",
        ),
    ],
) -> StreamingResponse:
    return await _download(resources, since=since, name=f"vdo-export-{since}")


@router.post(
    RESTORE_PATH,
    openapi_extra=UPLOAD_BODY,
    responses={
        409: _error("the deployment is not empty"),
        413: _error("the bundle is larger than VDO_MAX_BUNDLE_BYTES"),
        415: _error("the body is not sent as a bundle file"),
        422: _error("the bundle is refused (damaged, incomplete, or an export); nothing changed"),
    },
    description="Restore a backup into this deployment, whose event store must be empty. The "
    "whole bundle is verified before anything is changed; then its blobs and all its events "
    "(with their original positions, in one transaction) are loaded. Restoring the same backup "
    "again changes nothing. The read models are not rebuilt by this call: the projector "
    "catches up with the restored events by itself. A deployment that started with "
    "authentication on holds its first admin (as events), so it is not empty here: restore "
    "through the API into one started with VDO_AUTH=off (loopback only), or stop it and run "
    "`vdo restore FILE` against it, which replaces that first admin. The restored users and "
    "tokens are then the deployment's." + ADMIN,
)
async def post_restore(request: Request, resources: ResourcesDep) -> BundleLoaded:
    return await _upload(request, resources, restoring=True)


@router.post(
    IMPORT_PATH,
    openapi_extra=UPLOAD_BODY,
    responses={
        409: _error("this deployment's log does not end where the export begins"),
        413: _error("the bundle is larger than VDO_MAX_BUNDLE_BYTES"),
        415: _error("the body is not sent as a bundle file"),
        422: _error("the bundle is refused (damaged or incomplete); nothing changed"),
    },
    description="Append an export's events to this deployment, whose log must end exactly "
    "where the export begins. Verified whole first, loaded in one transaction; importing the "
    "same export again changes nothing." + ADMIN,
)
async def post_import(request: Request, resources: ResourcesDep) -> BundleLoaded:
    return await _upload(request, resources, restoring=False)


@router.post(
    "/verify",
    responses={
        500: _error("the projector could not do the check"),
        503: _error("no projector answers (none running, or NATS unreachable)"),
        504: _error("the projector did not answer in time"),
    },
    description="Check the live read models against the log, as `vdo replay --verify` does: "
    "the projector replays the log aside (into a throw-away schema, up to the position the "
    "live read models reflect) and compares them table by table. `equal` is true when every "
    "table's checksum matches; otherwise each differing table lists its rows (missing, extra, "
    "or which columns differ, live value then the log's). Nothing is changed. A running "
    "projector does the check, so this answers 503 while none runs." + ADMIN,
)
async def post_verify(resources: ResourcesDep) -> VerifyReportPublic:
    bus = resources.bus
    try:
        answer = await bus.request(
            ADMIN_VERIFY, b"{}", wait_seconds=VERIFY_TIMEOUT_SECONDS, who="projector"
        )
    except NoAnswerError as exc:
        timed_out = exc.timed_out
        raise HTTPException(
            status_code=504 if timed_out else 503,
            detail=f"the read models could not be verified: {exc}; "
            + (
                "`vdo replay --verify` runs the check without a time limit"
                if timed_out
                else "start the projector (or check NATS), or run `vdo replay --verify` "
                "against the database"
            ),
        ) from None
    try:
        raw = json.loads(answer)
        if isinstance(raw, dict) and isinstance(raw.get("error"), str):
            raise HTTPException(status_code=500, detail=raw["error"])
        return VerifyReportPublic.from_report(raw)
    except ValueError:
        log.error("the projector's verify answer is not a report", answer=answer[:200])
        raise HTTPException(
            status_code=500, detail="the projector's answer is not a verify report"
        ) from None


# ---- downloads ------------------------------------------------------------------------------


async def _download(resources: Resources, *, since: int, name: str) -> StreamingResponse:
    written = await asyncio.to_thread(_write, resources, since)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {
        "Content-Disposition": f'attachment; filename="{name}-{stamp}.tar.gz"',
        "Content-Length": str(written.size),
        # Where the export for a later import should start.
        "X-VDO-Last-Position": str(written.manifest.last_position),
    }
    return StreamingResponse(
        send_from(written.file), media_type="application/gzip", headers=headers
    )


@dataclass(frozen=True)
class _Written:
    manifest: Manifest
    file: BinaryIO
    size: int


def _write(resources: Resources, since: int) -> _Written:
    """Write the bundle and return it open, its file already deleted."""
    settings, store = resources.settings, resources.store
    end = store.max_position()
    if since > end:
        raise HTTPException(
            status_code=422,
            detail=f"position {since} is after the end of the log ({end}): nothing to export",
        )
    settings.home.mkdir(parents=True, exist_ok=True)
    # Under VDO_HOME rather than /tmp: a bundle is as large as the blobs, which live there.
    with tempfile.TemporaryDirectory(prefix="vdo-bundle-", dir=settings.home) as scratch:
        out = Path(scratch) / "bundle.tar.gz"
        try:
            manifest = write_bundle(
                store, BlobStore(settings.blobs_dir), out, since=since, scratch=Path(scratch)
            )
        except (PortabilityError, BundleError) as exc:
            # A blob missing or damaged, or a gap in the log: the deployment itself is broken.
            log.error("bundle not written", since=since, error=str(exc))
            raise HTTPException(
                status_code=500, detail=f"the bundle could not be written: {exc}"
            ) from None
        # The open file keeps its bytes when the directory goes; the space is freed on close.
        bundle = out.open("rb")
        size = out.stat().st_size
    return _Written(manifest, bundle, size)


# ---- uploads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    result: LoadResult
    projected: int


async def _upload(request: Request, resources: Resources, *, restoring: bool) -> BundleLoaded:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in BUNDLE_TYPES:
        raise HTTPException(
            status_code=415,
            detail="send the bundle file as the request body, with Content-Type: "
            "application/gzip (or application/octet-stream)",
        )
    home = resources.settings.home
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    scratch = await asyncio.to_thread(tempfile.mkdtemp, prefix="vdo-upload-", dir=home)
    upload = Path(scratch) / "bundle.tar.gz"
    try:
        if not await receive_to(request, upload):
            raise HTTPException(status_code=422, detail="the request body is empty: send a bundle")
        loaded = await asyncio.to_thread(_load, resources, upload, restoring=restoring)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    return _answer(loaded, restoring=restoring)


def _load(resources: Resources, upload: Path, *, restoring: bool) -> _Loaded:
    settings, store = resources.settings, resources.store
    try:
        # Verified parts wait under VDO_HOME: on the blobs' file system they are linked into
        # place instead of copied.
        with open_bundle(upload, scratch=settings.home) as bundle:
            manifest = bundle.manifest
            if restoring and manifest.since != 0:
                raise HTTPException(
                    status_code=422,
                    detail=f"this bundle is an export of the events after position "
                    f"{manifest.since}, not a backup: load it with POST /api/admin/import",
                )
            _check_read_models(resources)
            load = restore if restoring else import_bundle
            result = load(store, BlobStore(settings.blobs_dir), bundle)
    except BundleError as exc:
        reason = str(exc).replace(str(upload), "the uploaded file")
        raise HTTPException(
            status_code=422, detail=f"the bundle is refused, nothing was changed: {reason}"
        ) from None
    except PortabilityError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return _Loaded(result, _projected(resources))


def _check_read_models(resources: Resources) -> None:
    """Refuse to load after read models that are ahead of the store: they were built from
    another history, and a projector catching up from their position would build on it."""
    end = resources.store.max_position()
    projected = _projected(resources)
    if projected > end:
        raise HTTPException(
            status_code=409,
            detail=f"the read models reflect position {projected} but the event store ends at "
            f"{end}: they were built from another history; rebuild them "
            "(`vdo projections rebuild`) and try again",
        )


def _projected(resources: Resources) -> int:
    with resources.read_pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
        return readmodels.projector_position(conn)


def _answer(loaded: _Loaded, *, restoring: bool) -> BundleLoaded:
    result, projected = loaded.result, loaded.projected
    manifest = result.manifest
    counts = manifest.counts
    verb: Literal["restored", "imported"] = "restored" if restoring else "imported"
    outcome: Literal["restored", "imported", "already_present"]
    if result.outcome is Loaded.ALREADY_PRESENT:
        outcome = "already_present"
        detail = (
            f"the event store already holds these {counts.events} events (up to position "
            f"{manifest.last_position}): nothing was {verb} twice; "
            f"{result.blobs_written} missing blob(s) written"
        )
    else:
        outcome = verb
        detail = (
            f"{verb} {counts.events} events of {counts.jobs} jobs (positions after "
            f"{manifest.since} up to {manifest.last_position}) and "
            f"{result.blobs_written} blob(s)"
        )
    if projected >= manifest.last_position:
        read_models = f"the read models are up to date (position {projected})"
    else:
        read_models = (
            f"the read models are catching up from position {projected} to "
            f"{manifest.last_position}: the projector does it by itself "
            "(GET /api/health shows its lag)"
        )
    return BundleLoaded(
        outcome=outcome,
        detail=detail,
        kind=manifest.kind,
        since=manifest.since,
        last_position=manifest.last_position,
        events=counts.events,
        jobs=counts.jobs,
        blobs=counts.blobs,
        blobs_written=result.blobs_written,
        seconds=round(result.seconds, 3),
        projected_position=projected,
        read_models=read_models,
    )
