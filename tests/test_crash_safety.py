"""Crash safety on the real stack: duplicates, a relay crash, a killed service, a NATS restart."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

from tests.harness import WORD_COUNT, RunningStack

from vdo_kernel.bus import EventMessage, connect
from vdo_kernel.subjects import HEADER_MSG_ID, STREAM

STEPS = ["plan", "build", "write_tests", "run_tests", "review", "sandbox_run"]


def finished_counts(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["data"]["step"] for e in events if e["type"] == "StepFinished")


def assert_completed_once_per_step(events: list[dict[str, Any]]) -> None:
    assert events[-1]["type"] == "JobCompleted", [e["type"] for e in events]
    assert finished_counts(events) == dict.fromkeys(STEPS, 1)
    assert sum(e["type"] == "JobCompleted" for e in events) == 1


def started(step: str) -> Any:
    return lambda events: any(
        e["type"] == "StepStarted" and e["data"]["step"] == step for e in events
    )


async def stream_positions(nats_url: str) -> list[int]:
    nc = await connect(nats_url, name="test-reader")
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        positions = []
        for seq in range(1, (info.state.last_seq or 0) + 1):
            msg = await js.get_msg(STREAM, seq=seq)
            positions.append(EventMessage.decode(msg.data or b"").position)
        return positions
    finally:
        await nc.close()


def test_a_message_delivered_twice_changes_the_store_once(make_stack: Any) -> None:
    running: RunningStack = make_stack(scripted_delay_seconds=0.5)
    job_id = running.submit()
    running.wait_for(job_id, started("plan"))

    async def deliver_again() -> None:
        # The same event again under a new message id: the bus cannot drop it, so the
        # planner really receives it twice; only its tracking record can stop a second plan.
        nc = await connect(running.nats_url, name="test-duplicator")
        js = nc.jetstream()
        # The message that made planning due: the job's admission from the queue.
        info = await js.stream_info(STREAM)
        for seq in range(1, (info.state.last_seq or 0) + 1):
            stored = await js.get_msg(STREAM, seq=seq)
            message = EventMessage.decode(stored.data or b"")
            if message.type == "JobAdmitted" and str(message.job_id) == job_id:
                break
        else:
            raise AssertionError("the job's admission is not on the bus")
        for copy in range(3):
            headers = {**message.headers(), HEADER_MSG_ID: f"duplicate-{copy}"}
            await js.publish(message.subject, message.encode(), headers=headers)
        await nc.close()

    asyncio.run(deliver_again())
    events = running.wait_for(job_id)
    assert_completed_once_per_step(events)
    assert sum(e["type"] == "StepStarted" and e["data"]["step"] == "plan" for e in events) == 1


def test_the_relay_killed_between_commit_and_publish_loses_and_duplicates_nothing(
    make_stack: Any,
) -> None:
    running: RunningStack = make_stack()
    warmup = running.submit()
    running.wait_for(warmup)
    # Freeze the relay so the next commits cannot be published, then kill it outright.
    running.stack.kill("relay", signal.SIGSTOP)
    job_ids = [running.submit(f"while the relay is down {i}") for i in range(3)]
    time.sleep(0.5)
    running.stack.kill("relay", signal.SIGKILL)
    for job_id in job_ids:
        assert_completed_once_per_step(running.wait_for(job_id))
    assert any("relay exited" in line for line in running.stack.events)
    positions = asyncio.run(stream_positions(running.nats_url))
    assert positions == list(range(1, len(positions) + 1)), "the stream has a gap or a duplicate"


def test_a_phase_service_killed_mid_phase_is_restarted_and_the_job_completes(
    make_stack: Any,
) -> None:
    running: RunningStack = make_stack(scripted_delay_seconds=2.0)
    job_id = running.submit("survives a crash", WORD_COUNT + ": builder dies while building")
    running.wait_for(job_id, started("build"), timeout=30)
    old_pid = running.stack.kill("builder", signal.SIGKILL)
    events = running.wait_for(job_id, timeout=90)
    assert_completed_once_per_step(events)
    resumed = [e for e in events if e["type"] == "StepResumed"]
    assert [e["data"]["step"] for e in resumed] == ["build"]
    assert any("builder exited with code -9" in line for line in running.stack.events)
    assert running.stack.pid("builder") not in (None, old_pid)


def test_services_reconnect_after_nats_restarts_mid_job(make_stack: Any) -> None:
    running: RunningStack = make_stack(scripted_delay_seconds=1.0)
    job_id = running.submit("survives NATS", WORD_COUNT + ": the bus goes away for a while")
    running.wait_for(job_id, started("plan"), timeout=30)
    running.stack.restart_nats(down_seconds=2.0)
    events = running.wait_for(job_id, timeout=120)
    assert_completed_once_per_step(events)
    after = running.submit("after the restart", WORD_COUNT)
    assert_completed_once_per_step(running.wait_for(after, timeout=60))
