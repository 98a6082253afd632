"""The consumer base: a durable JetStream pull consumer shared by a service's replicas.

Each message is handed to the service's handler; while it works, the message is kept alive
with `in_progress` so JetStream does not give it to another replica. Success acknowledges it;
an exception hands it back with a delay, to be redelivered (handlers are idempotent through
tracking records, so a redelivery after a crash or a lost ack changes nothing twice).

At shutdown no new message is taken; the ones in hand get `shutdown_grace` seconds to finish,
and what is still running then is stopped and handed back at once, for another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from vdo_kernel import logs
from vdo_kernel.bus import EventMessage, ensure_consumer
from vdo_kernel.subjects import STREAM

log = logs.get(__name__)

# Fetches failing in a row (half a second apart) before a replica says it cannot fetch.
FAILURES_WORTH_A_WARNING = 20


@dataclass(frozen=True)
class Delivery:
    message: EventMessage
    num_delivered: int


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        durable: str,
        filter_subjects: list[str],
        handler: Handler,
        ack_wait: float,
        concurrency: int,
        shutdown_grace: float = 20.0,
    ) -> None:
        self.js = js
        self.durable = durable
        self.filter_subjects = filter_subjects
        self.handler = handler
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(
            self.js,
            self.durable,
            self.filter_subjects,
            ack_wait=self.ack_wait,
            max_ack_pending=max(self.concurrency * 4, 64),
        )
        psub = await self.js.pull_subscribe_bind(durable=self.durable, stream=STREAM)
        log.info("consuming", consumer=self.durable, subjects=self.filter_subjects)
        failures = 0
        try:
            while not stop.is_set():
                if not await self._free_slot(stop):
                    break
                try:
                    # One message per fetch: a batch fetch that long-polls waits for the batch
                    # to fill (up to its timeout) once the first message arrives, which
                    # would hold a lone message back. Concurrency comes from the slots.
                    msgs = await psub.fetch(batch=1, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    self._slots.release()
                    failures = self._fetched(failures)
                    continue
                except Exception as error:
                    # Disconnected, or the server is restarting: the client reconnects by
                    # itself; the durable consumer kept our place.
                    self._slots.release()
                    failures = self._fetch_failed(failures, error)
                    await asyncio.sleep(0.5)
                    continue
                failures = self._fetched(failures)
                if not msgs:
                    self._slots.release()
                    continue
                (msg,) = msgs
                task = asyncio.create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            await self._finish_in_hand()
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    def _fetch_failed(self, failures: int, error: Exception) -> int:
        """Count a failed fetch; say so once they have gone on for a while (a short outage,
        such as a server restarting or a consumer changing leader, is routine)."""
        failures += 1
        log.debug("fetch failed", consumer=self.durable, error=repr(error))
        if failures == FAILURES_WORTH_A_WARNING:
            log.warning(
                "cannot fetch from the consumer; trying again",
                consumer=self.durable,
                failures=failures,
                error=repr(error),
            )
        return failures

    def _fetched(self, failures: int) -> int:
        """A fetch was answered (a message, or none before the timeout)."""
        if failures >= FAILURES_WORTH_A_WARNING:
            log.info("fetching again", consumer=self.durable, after_failures=failures)
        return 0

    async def _free_slot(self, stop: asyncio.Event) -> bool:
        """Wait for room for one more message; False when stopping first (with every slot
        busy, a shutdown must not wait for a slot to free up)."""
        acquiring = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if acquiring.done() and not acquiring.cancelled():
            if stop.is_set():
                self._slots.release()
                return False
            return True
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        if acquiring.done() and not acquiring.cancelled():
            self._slots.release()  # acquired as it was being cancelled
        return False

    async def _finish_in_hand(self) -> None:
        """Let the messages in hand finish, for `shutdown_grace` seconds at most; stop the rest,
        which hands each back (see `_process`)."""
        if not self._tasks:
            return
        in_hand = set(self._tasks)
        _, unfinished = await asyncio.wait(in_hand, timeout=self.shutdown_grace)
        if unfinished:
            log.info(
                "shutting down: handing back the work still in hand",
                consumer=self.durable,
                messages=len(unfinished),
            )
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _handle(self, msg: Msg) -> None:
        try:
            await self._process(msg)
        finally:
            self._slots.release()

    async def _process(self, msg: Msg) -> None:
        try:
            message = EventMessage.decode(msg.data)
        except (ValueError, KeyError, TypeError) as error:
            # Not ours to fix by retrying: it would fail the same way for ever.
            log.error("undecodable message dropped", consumer=self.durable, error=str(error))
            await msg.term()
            return
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        with structlog.contextvars.bound_contextvars(
            job_id=str(message.job_id),
            correlation_id=message.correlation_id,
            position=message.position,
        ):
            try:
                await self.handler(Delivery(message=message, num_delivered=delivered))
            except asyncio.CancelledError:
                # Shutting down: another replica takes it up now, not after ack_wait.
                heartbeat.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(msg.nak())
                raise
            except Exception:
                log.exception("handler failed; message handed back", consumer=self.durable)
                heartbeat.cancel()
                with contextlib.suppress(Exception):
                    await msg.nak(delay=min(0.5 * delivered, 10.0))
                return
            finally:
                heartbeat.cancel()
            try:
                await msg.ack()
            except Exception:
                # The work is committed with its tracking record; the redelivery is a no-op.
                log.warning("ack failed; a redelivery will be skipped", consumer=self.durable)

    async def _keep_alive(self, msg: Msg) -> None:
        interval = max(self.ack_wait / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()
