"""How a service process runs. `started` is the start and end every service shares (logs,
heartbeat, store, NATS, stop signals); `run_step_service` is the common shape of a phase
service on top of it: one subscription per step it does, a watch on cancellations (which stops
the work in hand for a cancelled job), run until SIGTERM / SIGINT, then finish the messages in
hand and stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from vdo_kernel import logs
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bus import EventMessage, connect, ensure_stream
from vdo_kernel.consumer import Subscription
from vdo_kernel.domain import Step
from vdo_kernel.heartbeat import start_heartbeat
from vdo_kernel.livelog import LiveLog
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepRunner, StepWork
from vdo_kernel.store import JobStore, open_store
from vdo_kernel.subjects import JOB_CANCELLED, STEP_TRIGGERS, step_consumer

log = logs.get(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def worker_name(service: str) -> str:
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Started:
    """What every service process has once it is up: its store, its NATS connection with the
    event stream there, and the event SIGTERM / SIGINT sets."""

    settings: Settings
    database_url: str
    store: JobStore
    nc: Client
    js: JetStreamContext
    stop: asyncio.Event


@contextlib.asynccontextmanager
async def started(
    service: str, settings: Settings, *, pool_size: int = 2
) -> AsyncIterator[Started]:
    """Start a service process the one way: its logs, its heartbeat, then the store and NATS
    (each waited for up to the start-up timeout), the event stream made sure of, and the stop
    signals heard. At the end: NATS drained and the store closed."""
    logs.configure(service, level=settings.log_level, fmt=settings.log_format)
    start_heartbeat(settings.heartbeat_path)
    nats_url, database_url = settings.require_urls()
    tls = settings.nats_tls()
    store = await asyncio.to_thread(
        open_store, database_url, pool_size=pool_size, timeout=settings.startup_timeout_seconds
    )
    try:
        nc = await connect(
            nats_url,
            name=service,
            connect_timeout=settings.startup_timeout_seconds,
            tls=tls,
        )
        try:
            js = nc.jetstream()
            await ensure_stream(js, replicas=settings.stream_replicas)
            stop = asyncio.Event()
            stop_on_signals(stop)
            yield Started(settings, database_url, store, nc, js, stop)
        finally:
            logs.get(service).info("service stopping")
            with contextlib.suppress(Exception):
                await nc.drain()
    finally:
        store.close()


async def run_step_service(
    service: str,
    work: Mapping[Step, StepWork],
    settings: Settings | None = None,
    *,
    alongside: Callable[[Started], Awaitable[None]] | None = None,
) -> None:
    """Run `service`'s steps until SIGTERM / SIGINT. `alongside`, if given, runs next to the
    steps for as long as they do (the AI services keep their report current with it and answer
    requests to try a provider's key)."""
    settings = settings or Settings()
    # The store is synchronous; its calls run in threads, one per message in hand at most.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.consumer_concurrency * len(work) + 4)
    )
    async with started(service, settings, pool_size=min(settings.consumer_concurrency, 10)) as up:
        log = logs.get(service)
        live = LiveLog(up.nc)
        blobs = BlobStore(settings.blobs_dir)
        runners = [
            StepRunner(
                step=step,
                work=step_work,
                store=up.store,
                blobs=blobs,
                settings=settings,
                worker=worker_name(service),
                live=live,
            )
            for step, step_work in work.items()
        ]
        subscriptions = [
            Subscription(
                up.js,
                durable=step_consumer(runner.step),
                filter_subjects=list(STEP_TRIGGERS[runner.step]),
                handler=runner.handle,
                ack_wait=settings.ack_wait_seconds,
                concurrency=settings.consumer_concurrency,
                shutdown_grace=settings.shutdown_grace_seconds,
            )
            for runner in runners
        ]
        log.info("service started", steps=[s.value for s in work])
        try:
            await asyncio.gather(
                *(sub.run(up.stop) for sub in subscriptions),
                watch_cancellations(
                    up.nc, up.store, runners, up.stop, every=settings.cancel_check_seconds
                ),
                *([alongside(up)] if alongside is not None else []),
            )
        finally:
            await live.close()


async def watch_cancellations(
    nc: Client,
    store: JobStore,
    runners: Sequence[StepRunner],
    stop: asyncio.Event,
    *,
    every: float,
) -> None:
    """Stop the work in hand for a job as soon as it is cancelled.

    Every ``JobCancelled`` published is heard on core NATS (no consumer to keep: only the work
    in hand matters, and a message missed while disconnected is caught below); every `every`
    seconds the store is also asked about the jobs being worked on."""

    async def heard(msg: Msg) -> None:
        try:
            message = EventMessage.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            return
        for runner in runners:
            runner.abandon(message.job_id, message.version)

    subscription = await nc.subscribe(JOB_CANCELLED, cb=heard)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
            working = {job for runner in runners for job in runner.working_on}
            if not working:
                continue
            try:
                cancelled = await asyncio.to_thread(store.cancellations, working)
            except Exception as error:
                log.warning("could not ask the store about cancellations", error=repr(error))
                continue
            for job_id, version in cancelled.items():
                for runner in runners:
                    runner.abandon(job_id, version)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
