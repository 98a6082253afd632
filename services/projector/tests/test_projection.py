"""The projection on a real PostgreSQL (the service following the store's commits): in order,
exactly once, and a rebuild from the log compares equal to the live read models."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError
from nats.js.errors import NotFoundError

from vdo_kernel import readmodels
from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.bus import connect, ensure_consumer, ensure_stream
from vdo_kernel.domain import Job, Outcome, Step
from vdo_kernel.store import JobStore
from vdo_kernel.subjects import ALL_EVENTS, RETIRED_CONSUMER_PROJECTOR, STREAM
from vdo_projector.projection import Projection, checksums, rebuild
from vdo_projector.service import Projector, retire_bus_consumer

PASSING = {
    Step.PLAN: Outcome.OK,
    Step.BUILD: Outcome.OK,
    Step.WRITE_TESTS: Outcome.OK,
    Step.RUN_TESTS: Outcome.PASSED,
    Step.REVIEW: Outcome.APPROVED,
    Step.SANDBOX_RUN: Outcome.UP,
}
ROUTES = {"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"]}


@pytest.fixture
def projection(database_url: str, store: JobStore) -> Iterator[Projection]:
    projection = Projection(database_url, store)
    yield projection
    projection.close()


def submit(store: JobStore, title: str = "todo api", priority: int = 5) -> UUID:
    job = Job.submit(
        title=title,
        description="a FastAPI todo API with tests",
        max_attempts=2,
        routes=ROUTES if title == "completed" else None,
        priority=priority,
    )
    store.save(job)
    return job.id


def admit(store: JobStore, job_id: UUID) -> None:
    """What the scheduler does when the job's turn comes."""
    job = store.get(job_id)
    job.admit(by="scheduler", causation_id="test")
    store.save(job)


def start(store: JobStore, job_id: UUID) -> None:
    job = store.get(job_id)
    due = job.due()
    assert due is not None
    job.start_step(due, worker="test-worker", causation_id="test")
    store.save(job)


def finish(store: JobStore, job_id: UUID, outcome: Outcome | None = None) -> None:
    job = store.get(job_id)
    due = job.due()
    assert due is not None
    job.finish_step(
        due,
        outcome=outcome or PASSING[due.step],
        summary=f"{due.step.value} of attempt {due.attempt}",
        causation_id="test",
        artifacts={"app.py": "ab" * 32},
        details={"tokens": 12, "cost_usd": 0.25},
    )
    store.save(job)


def step(store: JobStore, job_id: UUID, outcome: Outcome | None = None) -> None:
    start(store, job_id)
    finish(store, job_id, outcome)


def start_call(
    store: JobStore, job_id: UUID, *, call: int, try_number: int, route: str, reserved: float
) -> str:
    """One try of a model call of the step that is due (started, not finished)."""
    job = store.get(job_id)
    due = job.due()
    assert due is not None
    provider, model = route.split(":", 1)
    key = job.start_model_call(
        due,
        call=call,
        try_number=try_number,
        provider=provider,
        model=model,
        reserved_usd=reserved,
        note="fallback" if try_number > 1 else "",
        causation_id="test",
    )
    store.save(job)
    return key


def finish_call(store: JobStore, job_id: UUID, key: str, **result: Any) -> None:
    job = store.get(job_id)
    job.finish_model_call(key, causation_id="test", **result)
    store.save(job)


def history(store: JobStore, after_each: object = None) -> dict[str, UUID]:
    """Jobs in every state: completed after a retry, failed, cancelled, queued, running; model
    calls retried, fallen back, failed and left open."""
    hook = after_each if callable(after_each) else (lambda: None)
    jobs = {name: submit(store, name) for name in ("completed", "failed", "cancelled", "queued")}
    jobs["retried"] = submit(store, "retried", priority=9)
    hook()
    done = jobs["completed"]
    admit(store, done)
    start(store, done)
    # The plan's call: rate limited on the main route, then answered by the fallback.
    first = start_call(store, done, call=1, try_number=1, route=ROUTES["planner"][0], reserved=0.2)
    finish_call(store, done, first, outcome="error", error="429 rate limited", latency_ms=80.0)
    hook()
    second = start_call(store, done, call=1, try_number=2, route=ROUTES["planner"][1], reserved=0.2)
    finish_call(
        store,
        done,
        second,
        outcome="ok",
        input_tokens=1200,
        output_tokens=300,
        cached_tokens=1000,
        cache_write_tokens=20,
        cost_usd=0.1,
        latency_ms=2500.5,
        reply="ef" * 32,
    )
    finish(store, done)
    hook()
    for _ in range(2):  # build, write tests
        start(store, done)
        key = start_call(store, done, call=1, try_number=1, route="scripted:demo", reserved=0.1)
        finish_call(store, done, key, outcome="ok", cost_usd=0.2, input_tokens=10)
        finish(store, done)
        hook()
    step(store, done, Outcome.FAILED)  # the tests fail: attempt 2 starts at the build
    hook()
    for _ in range(5):  # build, write tests, run tests, review, sandbox
        step(store, done)
        hook()

    failed = jobs["failed"]
    admit(store, failed)
    start(store, failed)
    start(store, failed)  # started again without a result: resumed
    job = store.get(failed)
    due = job.due()
    assert due is not None
    job.fail_step(due, reason="the model is unreachable", causation_id="test")
    store.save(job)
    hook()

    job = store.get(jobs["cancelled"])
    job.cancel(reason="not needed", by="someone", causation_id="test")
    store.save(job)
    hook()

    # Built, cancelled, then retried from testing with a lower priority: back in the queue.
    retried = jobs["retried"]
    admit(store, retried)
    step(store, retried)
    step(store, retried)
    job = store.get(retried)
    job.cancel(reason="wrong tests", by="someone", causation_id="test")
    store.save(job)
    job = store.get(retried)
    job.retry(
        Step.WRITE_TESTS,
        by="someone",
        reason="test the edge cases",
        priority=2,
        causation_id="test",
    )
    store.save(job)
    hook()

    jobs["running"] = submit(store, "running")
    admit(store, jobs["running"])
    accounts(store)
    step(store, jobs["running"])
    start(store, jobs["running"])
    # A call running (or interrupted: nothing says which until it is resumed).
    start_call(store, jobs["running"], call=1, try_number=1, route="openai:gpt-4.1", reserved=0.3)
    hook()
    return jobs


def accounts(store: JobStore) -> dict[str, str]:
    """Users (one whose role changes) and tokens (one that expires, one revoked), among the
    jobs' events; returns the tokens' ids by name."""
    ada = User.add(name="ada", role=Role.MEMBER, by="first start")
    bob = User.add(name="bob", role=Role.VIEWER, by="ada")
    store.save(ada, bob)
    laptop = Token.create(
        new_token(), user=ada, name="laptop", by="ada", expires_at=datetime(2031, 5, 6, tzinfo=UTC)
    )
    ci = Token.create(new_token(), user=bob, name="ci", by="ada")
    store.save(laptop, ci)
    bob.change_role(Role.MEMBER, by="ada")
    ci.revoke(by="ada")
    store.save(bob, ci)
    return {"laptop": laptop.token_id, "ci": ci.token_id}


def rows(database_url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def test_projection_applies_every_event_in_order(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    jobs = history(store)
    applied = projection.catch_up()
    assert applied == store.max_position()
    assert projection.position() == store.max_position()

    # Every job event is in the timeline; the accounts' events are not (they have tables of
    # their own).
    timeline = rows(database_url, "SELECT position FROM vdo_read.timeline ORDER BY position")
    logged = store.read(after=0, limit=10_000)
    assert [r[0] for r in timeline] == [e.position for e in logged if e.is_job_event]
    assert any(not e.is_job_event for e in logged)
    users = rows(database_url, "SELECT name, role, created_by, version FROM vdo_read.users")
    assert sorted(users) == [("ada", "member", "first start", 1), ("bob", "member", "ada", 2)]
    tokens = rows(
        database_url,
        "SELECT user_name, name, expires_at IS NOT NULL, revoked_by FROM vdo_read.tokens "
        "ORDER BY name",
    )
    assert tokens == [("bob", "ci", False, "ada"), ("ada", "laptop", True, None)]

    with psycopg.connect(database_url) as conn:
        done = readmodels.get_job(conn, jobs["completed"])
        assert done is not None
        events = store.job_events(jobs["completed"])
        assert (done.status, done.phase, done.step, done.attempt) == ("completed", None, None, 2)
        assert done.created_at == events[0].timestamp
        assert done.updated_at == done.finished_at == events[-1].timestamp
        assert done.started_at == next(e.timestamp for e in events if e.type == "StepStarted")
        assert (done.version, done.last_position) == (events[-1].version, events[-1].position)
        steps = readmodels.job_steps(conn, jobs["completed"])
        assert [(s.step, s.attempt, s.outcome) for s in steps] == [
            ("plan", 1, "ok"),
            ("build", 1, "ok"),
            ("write_tests", 1, "ok"),
            ("run_tests", 1, "failed"),
            ("build", 2, "ok"),
            ("write_tests", 2, "ok"),
            ("run_tests", 2, "passed"),
            ("review", 2, "approved"),
            ("sandbox_run", 2, "up"),
        ]
        assert steps[0].artifacts == {"app.py": "ab" * 32}
        assert steps[0].details == {"tokens": 12, "cost_usd": 0.25}
        assert done.routes == ROUTES
        # Every finished try counts, the failed one too; summed in log order.
        assert done.cost_usd == 0.0 + 0.1 + 0.2 + 0.2
        calls, count = readmodels.job_calls(conn, jobs["completed"])
        assert count == len(calls) == 4
        assert [(c.step, c.call, c.try_number, c.provider, c.model, c.outcome) for c in calls] == [
            ("plan", 1, 1, "anthropic", "claude-sonnet-4-5", "error"),
            ("plan", 1, 2, "openai", "gpt-4.1", "ok"),
            ("build", 1, 1, "scripted", "demo", "ok"),
            ("write_tests", 1, 1, "scripted", "demo", "ok"),
        ]
        rate_limited, answered = calls[0], calls[1]
        assert rate_limited.key == f"{jobs['completed']}:plan:1:1:1"
        assert (rate_limited.error, rate_limited.cost_usd, rate_limited.latency_ms) == (
            "429 rate limited",
            0.0,
            80.0,
        )
        assert (answered.reserved_usd, answered.note, answered.reply) == (
            0.2,
            "fallback",
            "ef" * 32,
        )
        assert (
            answered.input_tokens,
            answered.output_tokens,
            answered.cached_tokens,
            answered.cache_write_tokens,
        ) == (1200, 300, 1000, 20)
        assert answered.started_at is not None
        assert answered.finished_at is not None
        assert answered.started_at < answered.finished_at
        middle, _ = readmodels.job_calls(conn, jobs["completed"], limit=2, offset=1)
        assert [c.key for c in middle] == [calls[1].key, calls[2].key]
        summary = readmodels.calls_summary(conn, jobs["completed"])
        assert (summary.count, summary.open, summary.failed) == (4, 0, 1)
        assert summary.cost_usd == pytest.approx(done.cost_usd)
        assert (summary.input_tokens, summary.output_tokens, summary.cached_tokens) == (
            1220,
            300,
            1000,
        )

        failed = readmodels.get_job(conn, jobs["failed"])
        assert failed is not None
        assert (failed.status, failed.phase, failed.step) == ("failed", "planning", "plan")
        assert failed.finished_reason == "planning failed: the model is unreachable"
        (plan,) = readmodels.job_steps(conn, jobs["failed"])
        assert (plan.resumed, plan.failed_reason) == (1, "the model is unreachable")

        cancelled = readmodels.get_job(conn, jobs["cancelled"])
        assert cancelled is not None
        assert (cancelled.status, cancelled.finished_reason) == ("cancelled", "not needed")

        queued = readmodels.get_job(conn, jobs["queued"])
        assert queued is not None
        assert (queued.status, queued.phase, queued.step, queued.started_at) == (
            "queued",
            "planning",
            "plan",
            None,
        )
        running = readmodels.get_job(conn, jobs["running"])
        assert running is not None
        assert (running.status, running.phase, running.step) == ("running", "building", "build")
        assert (running.routes, running.cost_usd) == ({}, 0.0)
        (open_call,) = readmodels.job_calls(conn, jobs["running"])[0]
        assert (open_call.finished_at, open_call.outcome, open_call.cost_usd) == (None, None, None)
        running_calls = readmodels.calls_summary(conn, jobs["running"])
        assert (running_calls.count, running_calls.open, running_calls.held_usd) == (1, 1, 0.3)

        retried = readmodels.get_job(conn, jobs["retried"])
        assert retried is not None
        retry = store.job_events(jobs["retried"])[-1]
        assert retry.type == "JobRetried"
        assert (retried.status, retried.phase, retried.step, retried.attempt) == (
            "queued",
            "testing",
            "write_tests",
            2,
        )
        assert (retried.priority, retried.queued_position) == (2, retry.position)
        assert (retried.finished_at, retried.finished_reason, retried.max_attempts) == (
            None,
            None,
            2,
        )
        # The queue: the higher priority first (the retry lowered this one's).
        assert (queued.priority, queued.queue_position, retried.queue_position) == (5, 1, 2)
        assert (done.priority, done.queued_position, done.queue_position) == (5, None, None)
        in_line, waiting = readmodels.list_jobs(conn, limit=10, offset=0, status="queued")
        assert [(j.id, j.queue_position) for j in in_line] == [
            (jobs["queued"], 1),
            (jobs["retried"], 2),
        ]
        assert waiting == 2
        assert readmodels.queued_ahead(conn, 5) == 1
        assert readmodels.queued_ahead(conn, 0) == 2

        page, total = readmodels.list_jobs(conn, limit=2, offset=0)
        assert total == 6
        assert [j.id for j in page] == [jobs["running"], jobs["retried"]]
        assert [j.queue_position for j in page] == [None, 2]
        stats = readmodels.stats(conn)
        assert stats.by_status == {
            "queued": 2,
            "running": 1,
            "completed": 1,
            "failed": 1,
            "cancelled": 1,
        }
        assert stats.mean_completed_seconds is not None
        assert stats.mean_completed_seconds > 0
        assert stats.total_cost_usd == pytest.approx(0.5)
        (today,) = stats.cost_by_day
        assert (today.day, today.calls) == (done.finished_at.astimezone(UTC).date(), 4)
        assert today.cost_usd == pytest.approx(0.5)
        assert [(m.provider, m.model, m.calls, m.failed) for m in stats.cost_by_model] == [
            ("scripted", "demo", 2, 0),
            ("openai", "gpt-4.1", 1, 0),
            ("anthropic", "claude-sonnet-4-5", 1, 1),
        ]


async def test_catching_up_to_the_same_position_twice_changes_nothing(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    submit(store)
    first = store.read(after=0)[0].position
    await asyncio.to_thread(projection.catch_up, first)
    before = checksums(database_url)
    await asyncio.to_thread(projection.catch_up, first)
    assert checksums(database_url) == before
    assert projection.position() == 1


async def test_catch_ups_to_positions_out_of_order_and_repeated_give_the_right_result(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    delivered: list[int] = []

    def deliver_something() -> None:
        # Catch up to a random earlier position (late, repeated, or ahead of others) after
        # each change: what gets applied is whatever the store holds, in its order.
        events = store.read(after=0, limit=10_000)
        position = random.choice(events).position
        delivered.append(position)
        projection.catch_up(position)

    random.seed(7)
    await asyncio.to_thread(history, store, deliver_something)
    assert delivered != sorted(delivered)
    await asyncio.to_thread(projection.catch_up, store.max_position())
    live = checksums(database_url)
    summary = rebuild(database_url)
    assert summary.checksums == live == checksums(database_url)


def test_rebuild_gives_identical_checksums_to_the_live_read_models(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    history(store, projection.catch_up)
    live = checksums(database_url)
    assert len(set(live.values())) == len(readmodels.TABLES)

    summary = rebuild(database_url)
    assert summary.events_applied == summary.position == store.max_position()
    assert summary.duration_seconds >= 0
    assert summary.checksums == live
    assert checksums(database_url) == live
    # The live projector carries on after a rebuild from the rebuilt position.
    submit(store)
    assert projection.catch_up() == 1
    assert rebuild(database_url).checksums == checksums(database_url)


def test_checksums_of_missing_read_models_are_those_of_empty_ones(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    missing = checksums(database_url)
    projection.setup()
    assert checksums(database_url) == missing
    assert rebuild(database_url).checksums == missing


def test_two_replicas_apply_each_event_exactly_once(database_url: str, store: JobStore) -> None:
    replicas = [Projection(database_url, batch_size=3) for _ in range(2)]
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []

    def follow(replica: Projection) -> None:
        try:
            while writing.is_set():
                replica.catch_up()
            replica.catch_up()
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=follow, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    try:
        history(store)
    finally:
        writing.clear()
        for thread in threads:
            thread.join(timeout=60)
    try:
        assert errors == []
        assert replicas[0].position() == store.max_position()
        count = rows(database_url, "SELECT count(*) FROM vdo_read.timeline")
        job_events = [e for e in store.read(after=0, limit=10_000) if e.is_job_event]
        assert count[0][0] == len(job_events)
        live = checksums(database_url)
        assert rebuild(database_url).checksums == live
    finally:
        for replica in replicas:
            replica.close()


async def test_the_projector_follows_the_store(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    stop = asyncio.Event()
    # A long safety interval: only the store's commits can make the projection keep up here.
    projector = Projector(projection, safety_seconds=3600)
    task = asyncio.create_task(projector.follow(stop))
    try:
        await asyncio.to_thread(history, store)
        for _ in range(200):
            if await asyncio.to_thread(projection.position) == store.max_position():
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(projection.position) == store.max_position()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert rebuild(database_url).checksums == checksums(database_url)


def projected(database_url: str) -> int:
    """The read models' position, as another reader of them sees it."""
    with psycopg.connect(database_url) as conn:
        return readmodels.projector_position(conn)


async def test_the_projector_catches_up_after_losing_its_connections_to_the_store(
    database_url: str, store: JobStore, projection: Projection
) -> None:
    await asyncio.to_thread(projection.setup)
    stop = asyncio.Event()
    projector = Projector(projection, safety_seconds=3600, retry_seconds=0.2)
    task = asyncio.create_task(projector.follow(stop))
    try:
        await asyncio.to_thread(submit, store)
        for _ in range(100):
            if await asyncio.to_thread(projected, database_url) == store.max_position():
                break
            await asyncio.sleep(0.05)
        # Every connection to the database but this one goes (as when PostgreSQL restarts):
        # the projection's, its listening one, and the store's pool.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        for _ in range(10):  # the store's pool finds its connections broken, one by one
            try:
                await asyncio.to_thread(submit, store)
                break
            except (PersistenceError, psycopg.Error):
                continue
        await asyncio.to_thread(history, store)
        for _ in range(200):
            if await asyncio.to_thread(projected, database_url) == store.max_position():
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(projected, database_url) == store.max_position()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert rebuild(database_url).checksums == checksums(database_url)


def test_rebuild_from_the_command_line(database_url: str, store: JobStore) -> None:
    history(store)
    env = {**os.environ, "VDO_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "vdo_projector", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["events_applied"] == store.max_position()
    assert summary["checksums"] == checksums(database_url)


def test_a_rebuild_while_the_projector_runs_loses_and_repeats_nothing(
    database_url: str, store: JobStore
) -> None:
    replica = Projection(database_url, batch_size=2)
    replica.setup()
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []

    def follow() -> None:
        while writing.is_set():
            try:
                replica.catch_up()
            except BaseException as error:  # reported by the test thread
                errors.append(error)
                return

    follower = threading.Thread(target=follow)
    follower.start()
    rebuilds = []
    try:
        history(store, lambda: rebuilds.append(rebuild(database_url)))
    finally:
        writing.clear()
        follower.join(timeout=60)
    try:
        assert errors == []
        replica.catch_up()
        assert replica.position() == store.max_position()
        assert rebuild(database_url).checksums == checksums(database_url)
        assert len(rebuilds) > 5
    finally:
        replica.close()


async def test_the_projector_process_projects_and_stops_cleanly(
    database_url: str, nats_url: str, store: JobStore
) -> None:
    env = {**os.environ, "VDO_DATABASE_URL": database_url, "VDO_NATS_URL": nats_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vdo_projector"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # No relay: the projector follows the store, not the bus.
    try:
        await asyncio.to_thread(history, store)
        for _ in range(300):
            if proc.poll() is not None:
                break
            with psycopg.connect(database_url) as conn:
                if readmodels.exists(conn) and readmodels.projector_position(conn) == (
                    store.max_position()
                ):
                    break
            await asyncio.sleep(0.05)
        with psycopg.connect(database_url) as conn:
            assert readmodels.projector_position(conn) == store.max_position()
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    assert returncode == 0, stderr
    assert rebuild(database_url).checksums == checksums(database_url)


async def test_the_consumer_projectors_were_once_woken_through_is_deleted(nats_url: str) -> None:
    nc = await connect(nats_url, name="test")
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_consumer(js, RETIRED_CONSUMER_PROJECTOR, [ALL_EVENTS], ack_wait=5)
        await retire_bus_consumer(js)
        with pytest.raises(NotFoundError):
            await js.consumer_info(STREAM, RETIRED_CONSUMER_PROJECTOR)
        await retire_bus_consumer(js)  # gone already: nothing to do
    finally:
        await nc.close()
