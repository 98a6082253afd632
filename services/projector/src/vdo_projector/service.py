"""The projector process: it follows the store's commits (`vdo_kernel.follow`), catching up
on each from the position its tracking row holds; the start catches up on whatever came
before, and a lost connection to the store is listened again and caught up from there. It
also answers the gateway's requests to verify the read models (`POST /api/admin/verify`)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as CoreSubscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from vdo_kernel import logs
from vdo_kernel.follow import SAFETY_SECONDS, commits
from vdo_kernel.service import started
from vdo_kernel.settings import Settings
from vdo_kernel.subjects import ADMIN_VERIFY, RETIRED_CONSUMER_PROJECTOR, STREAM, VERIFY_QUEUE
from vdo_projector.projection import Projection
from vdo_projector.verify import verify

log = logs.get(__name__)

# How long a catch-up that failed waits before it is tried again.
RETRY_SECONDS = 1.0


class Projector:
    """Translates the store's commits into catch-ups of one projection."""

    def __init__(
        self,
        projection: Projection,
        *,
        safety_seconds: float = SAFETY_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ):
        self.projection = projection
        self.safety_seconds = safety_seconds
        self.retry_seconds = retry_seconds

    async def follow(self, stop: asyncio.Event) -> None:
        """Catch up after each commit until `stop` is set."""
        channel = self.projection.store.recorder.channel_name
        async for _ in commits(
            self.projection.database_url, channel, stop, safety_seconds=self.safety_seconds
        ):
            await self.catch_up(stop)

    async def catch_up(self, stop: asyncio.Event) -> None:
        """Apply everything stored and not yet projected; a failure is tried again shortly
        (not at the next commit, which may be long in coming)."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.projection.catch_up)
                return
            except Exception as error:
                log.warning("catch-up failed; retrying", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.retry_seconds)


async def retire_bus_consumer(js: JetStreamContext) -> None:
    """Delete the durable consumer earlier projectors were woken through, if it is still
    there: nothing reads it any more, and its pending count would read as a lag."""
    try:
        await js.delete_consumer(STREAM, RETIRED_CONSUMER_PROJECTOR)
    except NotFoundError:
        pass
    except Exception as error:  # a tidy-up: the projection does not depend on it
        log.warning("could not delete the projector's old consumer", error=repr(error))


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
            await retire_bus_consumer(up.js)
            log.info("projector started", position=await asyncio.to_thread(projection.position))
            await projector.follow(up.stop)
        finally:
            await asyncio.to_thread(projection.close)
