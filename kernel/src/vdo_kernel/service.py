"""The common shape of a phase service: settings, store, bus, one subscription per step it
does, run until SIGTERM / SIGINT, then finish the messages in hand and stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from vdo_kernel import logs
from vdo_kernel.blobs import BlobStore
from vdo_kernel.bus import connect, ensure_stream
from vdo_kernel.consumer import Subscription
from vdo_kernel.domain import Step
from vdo_kernel.livelog import LiveLog
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepRunner, StepWork
from vdo_kernel.store import JobStore
from vdo_kernel.subjects import STEP_TRIGGERS, step_consumer


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def worker_name(service: str) -> str:
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


async def run_step_service(
    service: str, work: Mapping[Step, StepWork], settings: Settings | None = None
) -> None:
    settings = settings or Settings()
    logs.configure(service, level=settings.log_level, fmt=settings.log_format)
    log = logs.get(service)
    nats_url, database_url = settings.require_urls()
    # The store is synchronous; its calls run in threads, one per message in hand at most.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=settings.consumer_concurrency * len(work) + 4)
    )
    store = await asyncio.to_thread(
        JobStore, database_url, pool_size=min(settings.consumer_concurrency, 10)
    )
    blobs = BlobStore(settings.blobs_dir)
    nc = await connect(nats_url, name=service)
    js = nc.jetstream()
    await ensure_stream(js)
    stop = asyncio.Event()
    stop_on_signals(stop)
    live = LiveLog(nc)
    subscriptions = [
        Subscription(
            js,
            durable=step_consumer(step),
            filter_subjects=list(STEP_TRIGGERS[step]),
            handler=StepRunner(
                step=step,
                work=step_work,
                store=store,
                blobs=blobs,
                settings=settings,
                worker=worker_name(service),
                live=live,
            ).handle,
            ack_wait=settings.ack_wait_seconds,
            concurrency=settings.consumer_concurrency,
        )
        for step, step_work in work.items()
    ]
    log.info("service started", steps=[s.value for s in work])
    try:
        await asyncio.gather(*(sub.run(stop) for sub in subscriptions))
    finally:
        log.info("service stopping")
        await live.close()
        with contextlib.suppress(Exception):
            await nc.drain()
        store.close()
