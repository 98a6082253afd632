"""`vdo backup`, `restore`, `export` and `import`: move a deployment's history through bundles.

`vdo restore` also goes into a deployment that holds nothing but what its first start wrote (its
first admin and that admin's token), with its stack stopped: the restored history replaces them,
the stream is recreated so the relay publishes the restored log from its start, the read models
are rebuilt, and the restored users and tokens are the deployment's from then on. A stopped
deployment's embedded PostgreSQL and NATS are started for the restore, and stopped after it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from vdo_cli.client import ClientError, database_url, read_stack_file, redact_url
from vdo_cli.ownership import DataDirectoryInUseError, DataDirectoryLock
from vdo_cli.views import make_console
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bootstrap import admins, token_file
from vdo_kernel.bundle import BundleError, Manifest, VerifiedBundle, open_bundle
from vdo_kernel.portability import (
    Loaded,
    LoadResult,
    PortabilityError,
    check_stack_stopped,
    holds_only_first_start,
    import_bundle,
    restore,
    write_bundle,
)
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore

EXIT_FAILED = 1
NATS_CONNECT_SECONDS = 3.0

Out = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Where to write the bundle (default: a new file here).", dir_okay=False
    ),
]
BundleFile = Annotated[
    Path, typer.Argument(metavar="FILE", help="A bundle written by `vdo backup` or `vdo export`.")
]


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command("restore")(restore_command)
    app.command("export")(export_command)
    app.command("import")(import_command)


def backup(out: Out = None) -> None:
    """Back up the whole event log and its blobs to one file (safe while the stack runs).

    The backup is the log as it was when the backup started, with every blob it references."""
    _write(out, since=0, name="vdo-backup")


def export_command(
    since: Annotated[
        int,
        typer.Option(min=0, help="Only the events after this position (0: the whole log)."),
    ],
    out: Out = None,
) -> None:
    """Export the events after a position, and their blobs, for `vdo import` elsewhere.

    A migration: restore a backup there, then at cut-over export and import the rest."""
    _write(out, since=since, name=f"vdo-export-{since}")


def restore_command(file: BundleFile) -> None:
    """Restore a backup into an empty deployment, or one that holds only its first admin.

    Checks the whole bundle first, then loads the events with their positions, writes the
    blobs, recreates the stream and rebuilds the read models. Running it again is harmless.
    A deployment whose first start made its first admin (and nothing else) is restored into
    with its stack stopped: the backup's users and tokens replace that admin and its token."""
    with _reporting_errors():
        settings = _settings()
        console = make_console()
        started = time.monotonic()
        with (
            _verified(file, settings.home) as bundle,
            _servers(settings, console) as servers,
            _store(servers.database_url) as store,
        ):
            console.print(f"verified {file}: {_describe(bundle.manifest)}", markup=False)
            over_first_start = holds_only_first_start(store)
            if over_first_start:
                # Before anything changes: a running stack is refused, and the stream (which
                # holds the first start's events under the positions the restored ones take)
                # is recreated; if the load then fails, the relay republishes what is there.
                check_stack_stopped(store)
                stream = _recreate_stream(servers, settings, console)
            result = restore(
                store, BlobStore(settings.blobs_dir), bundle, over_first_start=over_first_start
            )
            console.print(_loaded(result, "restored"), markup=False)
            if result.replaced_first_start:
                console.print(stream, markup=False)
                console.print(_rebuild(servers.database_url), markup=False)
            else:
                # The stream is made (or NATS found unreachable, which takes its connect
                # timeout) while the read models are rebuilt: neither needs the other.
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vdo-stream") as pool:
                    ensured = pool.submit(_ensure_stream, servers.nats_url, settings)
                    rebuilt = _rebuild(servers.database_url)
                    console.print(ensured.result(), markup=False)
                console.print(rebuilt, markup=False)
            if result.replaced_first_start:
                for line in _now_in_force(settings, store, result):
                    console.print(line, markup=False)
        console.print(f"done in {time.monotonic() - started:.1f} s", markup=False)


def import_command(file: BundleFile) -> None:
    """Import an export after this deployment's log, which must end where the export begins.

    Importing the same export twice changes nothing."""
    with _reporting_errors():
        settings = _settings()
        url = database_url(settings)
        console = make_console()
        with _verified(file, settings.home) as bundle, _store(url) as store:
            console.print(f"verified {file}: {_describe(bundle.manifest)}", markup=False)
            result = import_bundle(store, BlobStore(settings.blobs_dir), bundle)
        console.print(_loaded(result, "imported"), markup=False)


def _write(out: Path | None, *, since: int, name: str) -> None:
    with _reporting_errors():
        settings = _settings()
        url = database_url(settings)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = out or Path.cwd() / f"{name}-{stamp}.tar.gz"
        if target.exists():
            raise ClientError(f"{target} already exists; choose another --out")
        started = time.monotonic()
        with (
            _store(url) as store,
            tempfile.TemporaryDirectory(prefix="vdo-bundle-", dir=target.parent) as scratch,
        ):
            manifest = write_bundle(
                store, BlobStore(settings.blobs_dir), target, since=since, scratch=Path(scratch)
            )
        size = target.stat().st_size
        make_console().print(
            f"wrote {target} ({size / 1e6:.1f} MB in {time.monotonic() - started:.1f} s): "
            f"{_describe(manifest)}; provider keys and other credentials are not included",
            markup=False,
        )


def _describe(manifest: Manifest) -> str:
    counts = manifest.counts
    if counts.events:
        span = f"positions {manifest.first_position}..{manifest.last_position}"
    else:
        span = f"no events after position {manifest.since}"
    return (
        f"{counts.events} events of {counts.jobs} jobs, {counts.blobs} blobs, {span} "
        f"(vdo {manifest.product_version}, {manifest.created_at})"
    )


def _loaded(result: LoadResult, verb: str) -> str:
    manifest = result.manifest
    blobs = f"{result.blobs_written} blob(s) written"
    if result.outcome is Loaded.ALREADY_PRESENT:
        return (
            f"the event store already holds these {manifest.counts.events} events (up to "
            f"position {manifest.last_position}): nothing {verb} twice; {blobs}"
        )
    return (
        f"{verb} {manifest.counts.events} events (positions after {manifest.since} up to "
        f"{manifest.last_position}) and {blobs} in {result.seconds:.1f} s"
    )


@contextmanager
def _verified(file: Path, home: Path) -> Iterator[VerifiedBundle]:
    # Checked parts wait under VDO_HOME: on the blobs' file system, they are linked into
    # place instead of copied.
    home.mkdir(parents=True, exist_ok=True)
    try:
        with open_bundle(file, scratch=home) as bundle:
            yield bundle
    except BundleError as exc:
        raise ClientError(f"{file} refused, nothing was changed: {exc}") from None


@contextmanager
def _store(url: str) -> Iterator[JobStore]:
    try:
        store = JobStore(url, pool_size=1)
    except Exception as exc:
        message = str(exc).replace(url, redact_url(url))
        raise ClientError(f"cannot open the event store at {redact_url(url)}: {message}") from exc
    try:
        yield store
    except PortabilityError as exc:
        raise ClientError(str(exc)) from None
    finally:
        store.close()


class _Server(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Servers:
    """Where the deployment's event store and NATS are, for one command; the embedded servers
    of a stopped stack, started for it, are stopped at the end."""

    database_url: str
    nats_url: str | None
    # The stopped stack's own embedded NATS, which `nats` starts when the stream must change.
    embedded_nats: Path | None = None
    started: list[_Server] = field(default_factory=list)

    def nats(self, console: Console | None = None) -> str | None:
        if self.nats_url is None and self.embedded_nats is not None:
            from vdo_cli.embedded import EmbeddedNats

            server = EmbeddedNats(self.embedded_nats)
            server.start()
            self.started.append(server)
            self.nats_url = server.url
            if console is not None:
                console.print(
                    f"started the stopped stack's embedded NATS ({self.embedded_nats})",
                    markup=False,
                )
        return self.nats_url


@contextmanager
def _servers(settings: Settings, console: Console) -> Iterator[_Servers]:
    """VDO_DATABASE_URL and VDO_NATS_URL, else the running stack's, else (the stack stopped)
    the embedded servers in VDO_HOME, started for this command."""
    stack = read_stack_file(settings.home)
    url = settings.database_url or (stack.database_url if stack else None)
    nats_url = settings.nats_url or (stack.nats_url if stack else None)
    nats_dir = settings.home / "nats"
    ownership = DataDirectoryLock(settings.home, purpose="a vdo command on the stopped stack")
    servers = _Servers(
        database_url="",
        nats_url=nats_url,
        embedded_nats=nats_dir if nats_url is None and (nats_dir / "jetstream").is_dir() else None,
    )
    try:
        if url is None:
            postgres_dir = settings.home / "postgres"
            if not (postgres_dir / "data" / "PG_VERSION").is_file():
                url = database_url(settings)  # no deployment here: its clear error
            else:
                from vdo_cli.embedded import EmbeddedPostgres

                # The stopped stack's servers are this command's while it runs: no stack
                # may start on the directory meanwhile (nor may this run beside one).
                try:
                    ownership.acquire()
                except DataDirectoryInUseError as exc:
                    raise ClientError(str(exc)) from None
                postgres = EmbeddedPostgres(postgres_dir)
                try:
                    postgres.start()
                except RuntimeError as exc:
                    raise ClientError(
                        f"the stack in {settings.home} is stopped and its embedded PostgreSQL "
                        f"did not start: {exc}"
                    ) from exc
                servers.started.append(postgres)
                url = postgres.url
                console.print(
                    f"the stack is stopped: started its embedded PostgreSQL ({postgres_dir})",
                    markup=False,
                )
        servers.database_url = url
        yield servers
    finally:
        for server in reversed(servers.started):
            server.stop()
        ownership.release()


def _make_stream(url: str, settings: Settings, *, anew: bool) -> None:
    """Create the event stream on the NATS at `url` (one connection, no reconnecting); `anew`:
    delete it first if it exists."""

    async def make() -> None:
        import nats
        from nats.js.errors import NotFoundError

        from vdo_kernel.bus import ensure_stream, server_urls
        from vdo_kernel.subjects import STREAM

        nc = await nats.connect(
            servers=server_urls(url),
            name="vdo-restore",
            connect_timeout=NATS_CONNECT_SECONDS,
            tls=settings.nats_tls(),
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        try:
            js = nc.jetstream()
            if anew:
                with suppress(NotFoundError):
                    await js.delete_stream(STREAM)
            await ensure_stream(js, replicas=settings.stream_replicas)
        finally:
            await nc.close()

    asyncio.run(make())


def _recreate_stream(servers: _Servers, settings: Settings, console: Console) -> str:
    """Delete the event stream and make it again, empty, so that the relay publishes the log
    from its start and no duplicate window drops a restored event for a replaced one's id."""
    url = servers.nats(console)
    if url is None:
        raise ClientError(
            "the deployment's NATS is not known (VDO_NATS_URL is not set and there is no "
            f"embedded NATS in {settings.home / 'nats'}): its stream holds the events being "
            "replaced and must be recreated; set VDO_NATS_URL and try again (nothing was changed)"
        )

    try:
        _make_stream(url, settings, anew=True)
    except Exception as exc:
        raise ClientError(
            f"NATS at {redact_url(url)} could not recreate the event stream "
            f"({type(exc).__name__}: {exc}); it holds the events being replaced, so nothing was "
            "changed: start NATS (or set VDO_NATS_URL) and try again"
        ) from exc
    return (
        f"the event stream on {redact_url(url)} was recreated: the relay publishes the restored "
        "log from its start"
    )


def _now_in_force(settings: Settings, store: JobStore, result: LoadResult) -> list[str]:
    """What changed for who may use the deployment, and how to get in now."""
    lines = [
        f"replaced this deployment's first start ({result.replaced_first_start} events: its "
        "first admin and that admin's token): the restored deployment's own users and tokens "
        "are in force now, and this deployment's former admin token no longer works"
    ]
    kept = token_file(settings.home)
    if kept.exists():
        kept.unlink()
        lines.append(f"removed {kept}, which held that former token")
    found = admins(store)
    if found:
        lines.append(
            f"to get in, use a token of the backup's deployment (admins: {', '.join(found)}): "
            f"copy its admin-token file to {kept}, or set VDO_TOKEN; the next `vdo up` makes no "
            "new admin (VDO_ADMIN_TOKEN counts only if it is one of the restored tokens)"
        )
    else:
        lines.append(
            "the backup has no admin: the next `vdo up` makes a first admin and shows its token "
            "(or set VDO_ADMIN_TOKEN to choose it)"
        )
    return lines


def _ensure_stream(url: str | None, settings: Settings) -> str:
    """Create the event stream if NATS answers; otherwise the stack creates it when it starts."""
    if url is None:
        return "no NATS configured or running: the stream is created when the stack starts"

    try:
        _make_stream(url, settings, anew=False)
    except Exception as exc:
        return (
            f"NATS at {redact_url(url)} is not reachable ({type(exc).__name__}); "
            "the stream is created when the stack starts"
        )
    return f"the event stream is ready on {redact_url(url)}"


def _rebuild(url: str) -> str:
    try:
        # Imported here: only restore needs the projector, which the CLI does not depend on.
        from vdo_projector.projection import rebuild
    except ModuleNotFoundError as exc:
        if exc.name not in ("vdo_projector", "vdo_projector.projection"):
            raise
        return "the projector is not installed here: it builds the read models when it starts"
    try:
        summary = rebuild(url)
    except Exception as exc:
        message = str(exc).replace(url, redact_url(url))
        raise ClientError(
            f"the events are restored, but rebuilding the read models failed ({message}); "
            "run `vdo projections rebuild`"
        ) from exc
    return (
        f"read models rebuilt from {summary.events_applied} events up to position "
        f"{summary.position} in {summary.duration_seconds:.1f} s"
    )


@contextmanager
def _reporting_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        make_console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"VDO_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ClientError(f"invalid configuration: {problems}") from None
