"""Live updates (`/api/ws`) on the whole stack, every service a process: a client cut off
mid-job and reconnected from the last position it saw gets every event it missed, once and in
order; a hundred clients at once all get every update of a job."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tests.harness import RunningStack
from tests.live_client import LiveClient, ended, ws_url


def auth(running: RunningStack) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {running.token}"}}


def is_event(message: dict[str, Any]) -> bool:
    return bool(message["type"] == "event")


async def test_a_client_cut_off_mid_job_resumes_without_a_gap_or_a_repeat(
    make_stack: Any,
) -> None:
    running: RunningStack = await asyncio.to_thread(make_stack, scripted_delay_seconds=0.3)
    job_id = await asyncio.to_thread(running.submit)
    seen: list[dict[str, Any]] = []
    missed: list[int] = []
    finished = False
    while not finished:
        url = ws_url(running.gateway_url, job=job_id, after=seen[-1]["position"] if seen else 0)
        async with LiveClient.connect(url, **auth(running)) as client:
            backlog = await client.until(lambda m: m["type"] == "caught_up")
            missed.append(sum(map(is_event, backlog)))
            finished = any(map(ended, backlog))
            # Two live events, then the connection is cut (or the job ends first).
            live = 0
            while not finished and live < 2:
                message = await client.receive(timeout=30)
                live += is_event(message)
                finished = ended(message)
        seen += client.events
        await asyncio.sleep(0.5)  # the job moves on meanwhile
    history = await asyncio.to_thread(running.events, job_id)
    assert seen == history
    assert len(missed) > 2
    assert sum(missed[1:]) > 0, "no reconnection had anything to catch up on"


async def test_every_job_resumed_after_cuts_while_two_jobs_run(make_stack: Any) -> None:
    running: RunningStack = await asyncio.to_thread(make_stack, scripted_delay_seconds=0.2)
    jobs = [await asyncio.to_thread(running.submit, f"job {n}") for n in range(2)]
    seen: list[dict[str, Any]] = []
    done: set[str] = set()
    while len(done) < len(jobs):
        url = ws_url(running.gateway_url, after=seen[-1]["position"] if seen else 0)
        async with LiveClient.connect(url, **auth(running)) as client:
            with contextlib.suppress(TimeoutError):
                await client.until(lambda m: ended(m) or len(client.events) >= 5, timeout=5)
        seen += client.events
        done |= {e["job_id"] for e in client.events if ended({"type": "event", "event": e})}
        await asyncio.sleep(0.3)
    histories = [await asyncio.to_thread(running.events, job) for job in jobs]
    everything = sorted((e for h in histories for e in h), key=lambda e: e["position"])
    assert seen == everything


async def test_a_hundred_clients_all_get_every_update_of_a_job(
    running_stack: RunningStack,
) -> None:
    url = ws_url(running_stack.gateway_url, after=0)
    async with contextlib.AsyncExitStack() as stack:
        clients = await asyncio.gather(
            *(
                stack.enter_async_context(LiveClient.connect(url, **auth(running_stack)))
                for _ in range(100)
            )
        )
        await asyncio.gather(
            *(client.until(lambda m: m["type"] == "caught_up") for client in clients)
        )
        job_id = await asyncio.to_thread(running_stack.submit)
        await asyncio.gather(
            *(
                client.until(lambda m: ended(m) and m["event"]["job_id"] == job_id, timeout=60)
                for client in clients
            )
        )
    history = await asyncio.to_thread(running_stack.events, job_id)
    for client in clients:
        assert [e for e in client.events if e["job_id"] == job_id] == history
