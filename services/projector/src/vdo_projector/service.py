"""The projector process: bus messages wake the projection up; a one-second poll catches what
a lost or late message would have, and the start catches up on whatever came before. It also
answers the gateway's requests to verify the read models (`POST /api/admin/verify`)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as CoreSubscription

from vdo_kernel import logs
from vdo_kernel.consumer import Delivery, Subscription
from vdo_kernel.service import started
from vdo_kernel.settings import Settings
from vdo_kernel.subjects import ADMIN_VERIFY, CONSUMER_PROJECTOR, STREAM_SUBJECTS, VERIFY_QUEUE
from vdo_projector.projection import Projection
from vdo_projector.verify import verify

log = logs.get(__name__)

IDLE_POLL_SECONDS = 1.0


class Projector:
    """Translates deliveries and the clock into catch-ups of one projection."""

    def __init__(self, projection: Projection, *, idle_poll_seconds: float = IDLE_POLL_SECONDS):
        self.projection = projection
        self.idle_poll_seconds = idle_poll_seconds

    async def handle(self, delivery: Delivery) -> None:
        # The message's position is only a lower bound on what to apply; its content is not
        # used, so order and duplicates on the bus do not matter.
        await asyncio.to_thread(self.projection.catch_up, delivery.message.position)

    async def poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.projection.catch_up)
            except Exception as error:
                log.warning("catch-up failed; retrying", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.idle_poll_seconds)


class VerifyResponder:
    """Answers verify requests with the report `vdo replay --verify --json` prints, one check at
    a time (a second request waits for the first: each replays the whole log aside)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._one_at_a_time = asyncio.Lock()

    async def answer(self, msg: Msg) -> None:
        async with self._one_at_a_time:
            try:
                report = await asyncio.to_thread(verify, self.database_url)
                reply = report.to_json()
            except Exception as error:
                log.warning("verify failed", error=repr(error))
                # The URL may carry a password; the message names the failure without it.
                reason = str(error).replace(self.database_url, "the database")
                reply = {"error": f"verifying the read models failed: {reason}"}
        if msg.reply:
            with contextlib.suppress(Exception):  # the requester may have given up
                await msg.respond(json.dumps(reply, default=str).encode())


async def answer_verify_requests(nc: Client, database_url: str) -> CoreSubscription:
    """Subscribe to verify requests (in the projectors' queue group: one replica answers)."""
    responder = VerifyResponder(database_url)
    return await nc.subscribe(ADMIN_VERIFY, queue=VERIFY_QUEUE, cb=responder.answer)


async def run_projector(settings: Settings | None = None) -> None:
    """`python -m vdo_projector`."""
    async with started("projector", settings or Settings()) as up:
        projection = Projection(up.database_url, up.store)
        try:
            await asyncio.to_thread(projection.setup)
            projector = Projector(projection)
            await answer_verify_requests(up.nc, up.database_url)
            subscription = Subscription(
                up.js,
                durable=CONSUMER_PROJECTOR,
                filter_subjects=list(STREAM_SUBJECTS),
                handler=projector.handle,
                ack_wait=up.settings.ack_wait_seconds,
                # One at a time: each catch-up applies everything available, so parallel
                # deliveries would only queue on the tracking lock.
                concurrency=1,
            )
            log.info("projector started", position=await asyncio.to_thread(projection.position))
            await asyncio.gather(subscription.run(up.stop), projector.poll(up.stop))
        finally:
            await asyncio.to_thread(projection.close)
