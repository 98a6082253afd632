"""The job queue on the whole stack: the limits hold however many jobs come at once, priorities
and places in the queue are right, a queued or a running job is cancelled (a running one's work
abandoned: its model call's stream closed, its sandbox run killed), and a retry resumes from the
phase asked for, reusing what came before it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import psutil
import pytest
from conftest import create_database, drop_database
from tests.fakeprovider import FakeProvider, Reply
from tests.harness import WORD_COUNT, RunningStack, clean_environment, start_stack
from typer.testing import CliRunner, Result

from vdo_cli.main import app
from vdo_models.interface import Message, ModelRequest
from vdo_models.scripted import ScriptedModelClient

pytestmark = pytest.mark.e2e

MAX_RUNNING = 3
# One of the built-in scripted model's demo jobs: its first attempt's tests fail.
REPAIR_LOOP = "a command-line word-count tool, to show the repair loop"
ENDS = {"JobCompleted", "JobFailed", "JobCancelled"}
T = TypeVar("T")


# ---- helpers -----------------------------------------------------------------------------------


def wait_until(check: Callable[[], T | None], timeout: float = 30.0, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.1)


def add_user(stack: RunningStack, name: str, role: str = "member") -> str:
    """A user of that role, and a token of theirs."""
    with stack.api() as api:
        made = api.post("/api/users", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        token = api.post("/api/tokens", json={"user": name, "name": "tests"})
        assert token.status_code == 201, token.text
    return str(token.json()["token"])


def submit(stack: RunningStack, title: str, token: str | None = None, **extra: Any) -> str:
    with stack.api(token) as api:
        answer = api.post("/api/jobs", json={"title": title, "description": WORD_COUNT, **extra})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "queued"
    return str(answer.json()["id"])


def post(stack: RunningStack, path: str, body: Any = None, token: str | None = None) -> Any:
    with stack.api(token) as api:
        return api.post(path, json=body)


def queue(stack: RunningStack, token: str | None = None) -> list[dict[str, Any]]:
    """GET /api/jobs?status=queued: the queue in the order it runs."""
    with stack.api(token) as api:
        answer = api.get("/api/jobs", params={"status": "queued", "limit": 200})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def first(events: list[dict[str, Any]], kind: str, step: str | None = None) -> dict[str, Any]:
    return next(
        e for e in events if e["type"] == kind and (step is None or e["data"].get("step") == step)
    )


def has(kind: str, step: str | None = None) -> Callable[[list[dict[str, Any]]], bool]:
    def check(events: list[dict[str, Any]]) -> bool:
        return any(
            e["type"] == kind and (step is None or e["data"].get("step") == step) for e in events
        )

    return check


def runs(histories: dict[str, list[dict[str, Any]]]) -> list[tuple[int, int, str]]:
    """Each run of each job: (position of its admission, position of its end, job id)."""
    spans = []
    for job_id, events in histories.items():
        admitted: int | None = None
        for event in events:
            if event["type"] == "JobAdmitted":
                admitted = event["position"]
            elif event["type"] in ENDS and admitted is not None:
                spans.append((admitted, event["position"], job_id))
                admitted = None
    return spans


def most_at_once(spans: list[tuple[int, int, str]]) -> int:
    """The most runs going on at any point of the log."""
    changes = sorted([(start, 1) for start, _, _ in spans] + [(end, -1) for _, end, _ in spans])
    running = most = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


def vdo(stack: RunningStack, *args: str) -> Result:
    return CliRunner().invoke(
        app, [*args, "--api", stack.gateway_url], env={"VDO_TOKEN": stack.token}
    )


@pytest.fixture(scope="module")
def queue_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[RunningStack]:
    """A stack where three jobs run at once at most, one per user."""
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp("queue"),
        url,
        max_running_jobs=MAX_RUNNING,
        max_running_jobs_per_user=1,
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


class Frozen:
    """A phase service stopped (SIGSTOP) meanwhile: jobs admitted wait at its step, running."""

    def __init__(self, stack: RunningStack, service: str) -> None:
        self.stack, self.service = stack, service

    def __enter__(self) -> None:
        self.stack.stack.kill(self.service, signal.SIGSTOP)

    def __exit__(self, *exc: object) -> None:
        self.stack.stack.kill(self.service, signal.SIGCONT)


# ---- the limits --------------------------------------------------------------------------------


def test_thirty_jobs_at_once_never_run_more_than_the_limits_allow(
    queue_stack: RunningStack,
) -> None:
    users = {f"user{n}": add_user(queue_stack, f"user{n}") for n in range(5)}

    async def submit_all() -> list[tuple[str, str]]:
        async def one(name: str, token: str, n: int) -> tuple[str, str]:
            async with httpx.AsyncClient(
                base_url=queue_stack.gateway_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as api:
                answer = await api.post(
                    "/api/jobs", json={"title": f"{name} {n}", "description": WORD_COUNT}
                )
            assert answer.status_code == 201, answer.text
            return answer.json()["id"], name

        return await asyncio.gather(
            *(one(name, token, n) for name, token in users.items() for n in range(6))
        )

    submitted = dict(asyncio.run(submit_all()))
    assert len(submitted) == 30
    # While they run, the read models never show more running than the limit either.
    deadline = time.monotonic() + 170
    with queue_stack.api() as api:
        while True:
            page = api.get("/api/jobs", params={"status": "running", "limit": 200}).json()
            assert page["total"] <= MAX_RUNNING
            per_user: dict[str, int] = {}
            for job in page["items"]:
                per_user[job["submitted_by"]] = per_user.get(job["submitted_by"], 0) + 1
            assert all(count <= 1 for count in per_user.values()), per_user
            done = api.get("/api/jobs", params={"status": "completed", "limit": 1}).json()
            if done["total"] >= 30:
                break
            assert time.monotonic() < deadline, "the thirty jobs did not complete in time"
            time.sleep(0.2)

    histories = {job_id: queue_stack.events(job_id) for job_id in submitted}
    for job_id, events in histories.items():
        assert types(events).count("JobAdmitted") == 1
        assert types(events)[:2] == ["JobSubmitted", "JobAdmitted"], job_id
        assert events[-1]["type"] == "JobCompleted"
    spans = runs(histories)
    # Never more than three at once (and the limit was what held the others back)...
    assert most_at_once(spans) == MAX_RUNNING
    # ... and never two of one user's.
    for name in users:
        assert most_at_once([s for s in spans if submitted[s[2]] == name]) == 1
    # First come first served within a user's jobs (one priority for all).
    for name in users:
        mine = sorted(
            (
                first(histories[j], "JobSubmitted")["position"],
                first(histories[j], "JobAdmitted")["position"],
            )
            for j in submitted
            if submitted[j] == name
        )
        assert [admitted for _, admitted in mine] == sorted(admitted for _, admitted in mine)


# ---- priorities, places, cancelling a queued job -----------------------------------------------


def test_the_highest_priority_runs_first_and_each_queued_job_shows_its_place(
    queue_stack: RunningStack,
) -> None:
    stack = queue_stack
    with Frozen(stack, "builder"):
        # Running (waiting at its build): the first admin's one job at a time.
        blocker = submit(stack, "blocker")
        stack.wait_for(blocker, has("StepFinished", "plan"))
        jobs = {
            name: submit(stack, name, priority=priority)
            for name, priority in (("b", 5), ("c", 9), ("d", 5), ("e", 0))
        }
        in_order = [jobs["c"], jobs["b"], jobs["d"], jobs["e"]]

        def in_priority_order() -> list[dict[str, Any]] | None:
            line = queue(stack)
            return line if [j["id"] for j in line] == in_order else None

        line = wait_until(in_priority_order, what="the queue in priority order")
        assert [(j["queue_position"], j["priority"]) for j in line] == [
            (1, 9),
            (2, 5),
            (3, 5),
            (4, 0),
        ]
        assert stack.job(jobs["b"])["queue_position"] == 2
        assert (stack.job(blocker)["status"], stack.job(blocker)["queue_position"]) == (
            "running",
            None,
        )
        # The whole list says each queued job's place too.
        with stack.api() as api:
            listed = api.get("/api/jobs", params={"limit": 5}).json()["items"]
        assert {j["id"]: j["queue_position"] for j in listed} == {
            jobs["e"]: 4,
            jobs["d"]: 3,
            jobs["c"]: 1,
            jobs["b"]: 2,
            blocker: None,
        }

        # A queued job cancelled leaves the queue at once, and was never admitted.
        cancelled = post(stack, f"/api/jobs/{jobs['d']}/cancel", {"reason": "not needed"})
        assert cancelled.status_code == 200, cancelled.text
        assert (cancelled.json()["status"], cancelled.json()["queue_position"]) == (
            "cancelled",
            None,
        )
        wait_until(
            lambda: [j["id"] for j in queue(stack)] == [jobs["c"], jobs["b"], jobs["e"]],
            what="the queue without the cancelled job",
        )
        assert [j["queue_position"] for j in queue(stack)] == [1, 2, 3]
        events = stack.events(jobs["d"])
        assert types(events) == ["JobSubmitted", "JobCancelled"]
        assert events[-1]["data"]["reason"] == "not needed"
        again = post(stack, f"/api/jobs/{jobs['d']}/cancel")
        assert again.status_code == 409
        assert again.json()["detail"] == "job is already cancelled"

    for job_id in (blocker, jobs["c"], jobs["b"], jobs["e"]):
        assert stack.wait_for(job_id, timeout=60)[-1]["type"] == "JobCompleted"
    admissions = sorted(
        (first(stack.events(job_id), "JobAdmitted")["position"], name)
        for name, job_id in {"blocker": blocker, **jobs}.items()
        if name != "d"
    )
    assert [name for _, name in admissions] == ["blocker", "c", "b", "e"]
    assert stack.job(jobs["e"])["queue_position"] is None


def test_who_may_cancel_and_retry_a_job(queue_stack: RunningStack) -> None:
    stack = queue_stack
    owner, other, viewer = (
        add_user(stack, "owner"),
        add_user(stack, "other"),
        add_user(stack, "watcher", role="viewer"),
    )
    with Frozen(stack, "planner"):
        job_id = submit(stack, "mine", token=owner)
        assert post(stack, "/api/jobs", {"title": "t", "description": "d"}, viewer).status_code == (
            403
        )
        for action, body in (("cancel", None), ("retry", {"from": "planning"})):
            refused = post(stack, f"/api/jobs/{job_id}/{action}", body, viewer)
            assert refused.status_code == 403, refused.text
            hidden = post(stack, f"/api/jobs/{job_id}/{action}", body, other)
            assert (hidden.status_code, hidden.json()["detail"]) == (
                404,
                f"job {job_id} not found",
            )
        # Nothing was written by the refusals.
        assert types(stack.events(job_id))[-1] in ("JobSubmitted", "JobAdmitted", "StepStarted")
        # Not ended: it cannot be retried yet.
        early = post(stack, f"/api/jobs/{job_id}/retry", {"from": "planning"}, owner)
        assert early.status_code == 409
        assert "only a completed, failed or cancelled job can be retried" in early.json()["detail"]
        mine = post(stack, f"/api/jobs/{job_id}/cancel", {"reason": "mine to stop"}, owner)
        assert mine.status_code == 200, mine.text
        theirs = submit(stack, "theirs", token=other)
        by_admin = post(stack, f"/api/jobs/{theirs}/cancel")
        assert by_admin.status_code == 200, by_admin.text
    assert first(stack.events(job_id), "JobCancelled")["data"]["by"] == "owner"
    bad = post(stack, f"/api/jobs/{job_id}/retry", {"from": "deploying"}, owner)
    assert bad.status_code == 422
    unknown = post(stack, f"/api/jobs/{job_id}/cancel", {"reason": "x", "extra": 1}, owner)
    assert unknown.status_code == 422


# ---- retries -----------------------------------------------------------------------------------


def test_a_retry_from_a_phase_reuses_the_results_before_it(queue_stack: RunningStack) -> None:
    stack = queue_stack
    job_id = submit(stack, "retried")
    assert stack.wait_for(job_id)[-1]["type"] == "JobCompleted"
    build_1 = first(stack.events(job_id), "StepFinished", "build")["data"]["artifacts"]

    # From testing: the tests are written again for the same build, and run.
    retried = post(stack, f"/api/jobs/{job_id}/retry", {"from": "testing", "reason": "more tests"})
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert (body["status"], body["attempt"], body["phase"], body["step"]) == (
        "queued",
        2,
        "testing",
        "write_tests",
    )
    assert isinstance(body["queue_position"], int)
    events = stack.wait_for(job_id, lambda ev: types(ev).count("JobCompleted") == 2)
    second = events[types(events).index("JobRetried") :]
    assert second[0]["data"] | {"by": "?"} == {
        "from_step": "write_tests",
        "attempt": 2,
        "reused_attempt": 1,
        "max_attempts": 3,
        "priority": 5,
        "reason": "more tests",
        "feedback": "more tests",
        "by": "?",
    }
    assert (second[1]["type"], second[1]["data"]["step"], second[1]["data"]["attempt"]) == (
        "JobAdmitted",
        "write_tests",
        2,
    )
    started = [
        (e["data"]["step"], e["data"]["attempt"]) for e in second if e["type"] == "StepStarted"
    ]
    assert started == [("write_tests", 2), ("run_tests", 2), ("review", 2), ("sandbox_run", 2)]
    assert first(second, "StepFinished", "run_tests")["data"]["outcome"] == "passed"
    assert second[-1]["data"] == {"attempts": 2}
    job = stack.job(job_id)
    assert (job["status"], job["attempt"], job["finished_reason"]) == ("completed", 2, None)
    assert sorted((s["step"], s["attempt"]) for s in job["steps"] if s["attempt"] == 2) == sorted(
        started
    )

    # From a step: the same tests run again, nothing else before them is redone.
    retried = post(stack, f"/api/jobs/{job_id}/retry", {"from": "run_tests"})
    assert retried.status_code == 200, retried.text
    events = stack.wait_for(job_id, lambda ev: types(ev).count("JobCompleted") == 3)
    third = events[len(events) - types(events)[::-1].index("JobRetried") - 1 :]
    assert [e["data"]["step"] for e in third if e["type"] == "StepStarted"] == [
        "run_tests",
        "review",
        "sandbox_run",
    ]
    # Every attempt's review looked at the one build of attempt 1.
    assert first(events, "StepFinished", "build")["data"]["artifacts"] == build_1
    assert [e["data"]["attempt"] for e in events if e["type"] == "StepStarted"].count(3) == 3


def test_a_failed_job_is_retried_from_where_it_can_be(queue_stack: RunningStack) -> None:
    stack = queue_stack
    job_id = submit(stack, "fails once", description=REPAIR_LOOP, max_attempts=1)
    events = stack.wait_for(job_id)
    assert events[-1]["type"] == "JobFailed"
    # Its tests failed: nothing after them can reuse them.
    refused = post(stack, f"/api/jobs/{job_id}/retry", {"from": "reviewing"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "cannot retry from review: run_tests of attempt 1 has no good result to reuse "
        "(failed); retry from testing or earlier"
    )
    retried = post(stack, f"/api/jobs/{job_id}/retry", {"from": "building", "priority": 8})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["max_attempts"], retried.json()["priority"]) == (2, 8)
    events = stack.wait_for(job_id, has("JobCompleted"), timeout=60)
    retry = first(events, "JobRetried")["data"]
    # The builder is told why the job failed.
    assert retry["feedback"].startswith("run_tests failed on the last attempt (1 of 1)")
    assert [e["data"]["step"] for e in events if e["type"] == "StepStarted"][-5:] == [
        "build",
        "write_tests",
        "run_tests",
        "review",
        "sandbox_run",
    ]
    assert events[-1]["data"] == {"attempts": 2}


# ---- the command line --------------------------------------------------------------------------


def test_the_command_line_submits_with_a_priority_lists_the_queue_cancels_and_retries(
    queue_stack: RunningStack,
) -> None:
    stack = queue_stack
    with Frozen(stack, "planner"):
        running = vdo(stack, "submit", "cli running", WORD_COUNT)
        assert running.exit_code == 0, running.output
        waiting = vdo(stack, "submit", "cli waiting", WORD_COUNT, "--priority", "7")
        assert waiting.exit_code == 0, waiting.output
        running_id, waiting_id = running.output.strip(), waiting.output.strip()
        wait_until(lambda: [j["id"] for j in queue(stack)] == [waiting_id], what="queued")
        listed = vdo(stack, "jobs", "--status", "queued")
        assert listed.exit_code == 0, listed.output
        line = next(line for line in listed.output.splitlines() if waiting_id in line)
        assert "queued #1" in line
        shown = vdo(stack, "show", waiting_id)
        assert "#1 in the queue (priority 7)" in shown.output
        assert vdo(stack, "submit", "x", WORD_COUNT, "--priority", "10").exit_code == 2

        cancelled = vdo(stack, "cancel", waiting_id, "--reason", "from the command line")
        assert (cancelled.exit_code, cancelled.output.strip()) == (0, f"{waiting_id} cancelled")
        assert vdo(stack, "cancel", running_id).exit_code == 0
        again = vdo(stack, "cancel", running_id)
        assert again.exit_code == 1
        assert "job is already cancelled" in again.output
    assert first(stack.events(waiting_id), "JobCancelled")["data"]["reason"] == (
        "from the command line"
    )
    retried = vdo(stack, "retry", waiting_id, "--from", "planning", "--watch")
    assert retried.exit_code == 0, retried.output
    assert retried.output.startswith(f"{waiting_id} attempt 2 queued")
    assert "completed after 2 attempt(s)" in retried.output
    refused = vdo(stack, "retry", running_id, "--from", "testing")
    assert refused.exit_code == 1
    assert "cannot retry from write_tests: the job has no plan; retry from planning" in " ".join(
        refused.output.split()
    )


# ---- cancelling a running job ------------------------------------------------------------------

KEY = "sk-test-queue-never-stored"
PHASE_MARKERS = {"planner": "planning phase of VDO", "tester": "testing phase of VDO"}
SLOW_TEST = """import time
import unittest


class Slow(unittest.TestCase):
    def test_takes_its_time(self) -> None:
        print("slow test running", flush=True)
        time.sleep(600)
"""


def phase_of(body: Any) -> str | None:
    text = json.dumps(body)
    return next((phase for phase, marker in PHASE_MARKERS.items() if marker in text), None)


def demo_document(phase: str) -> dict[str, Any]:
    request = ModelRequest(
        phase=phase, system="", messages=(Message("user", "go"),), task=WORD_COUNT, attempt=1
    )
    reply = asyncio.run(ScriptedModelClient().complete("demo", request))
    document: dict[str, Any] = json.loads(reply.text)
    return document


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(scope="module")
def slow_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any, fake: FakeProvider
) -> Iterator[RunningStack]:
    """One job at a time; every phase on the scripted model, which takes 3 s a step; OpenAI is
    the fake provider, for the jobs that route a phase to it."""
    url = create_database(postgres_server)
    openai = {k: v for k, v in fake.env(KEY).items() if k.startswith("OPENAI_")}
    running = start_stack(
        tmp_path_factory.mktemp("slow"),
        url,
        environ=clean_environment(**openai),
        max_running_jobs=1,
        max_running_jobs_per_user=1,
        scripted_delay_seconds=3.0,
        # The run is looked for among the host's processes: bubblewrap's, not a container's.
        sandbox_backend="bubblewrap",
        planner_model="scripted:demo",
        builder_model="scripted:demo",
        tester_model="scripted:demo",
        reviewer_model="scripted:demo",
        model_timeout_seconds=60.0,
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


def test_cancelling_a_running_job_abandons_its_step_and_lets_the_next_one_run(
    slow_stack: RunningStack,
) -> None:
    stack = slow_stack
    running = submit(stack, "running")
    waiting = submit(stack, "waiting")
    queued = submit(stack, "queued")
    stack.wait_for(running, has("ModelCallStarted", "plan"))
    assert "JobAdmitted" not in types(stack.events(waiting))
    cancelled = post(stack, f"/api/jobs/{running}/cancel", {"reason": "changed my mind"})
    assert cancelled.status_code == 200, cancelled.text
    assert post(stack, f"/api/jobs/{queued}/cancel").status_code == 200
    # Longer than the step would have taken: nothing of it is recorded after the cancellation
    # but the closing of the call it was making.
    time.sleep(4)
    events = stack.events(running)
    at = types(events).index("JobCancelled")
    assert types(events[:at]) == [
        "JobSubmitted",
        "JobAdmitted",
        "StepStarted",
        "ModelCallStarted",
    ]
    assert types(events[at + 1 :]) == ["ModelCallFinished"]
    closed = events[-1]["data"]
    assert closed["outcome"] == "interrupted"
    assert "cancelled" in closed["error"]
    job = stack.job(running)
    assert (job["status"], job["finished_reason"]) == ("cancelled", "changed my mind")
    assert job["model_calls"]["open"] == 0
    # The place freed went to the next in the queue, after the cancellation; the one cancelled
    # while it waited never ran.
    admitted = first(stack.wait_for(waiting, has("JobAdmitted"), timeout=10), "JobAdmitted")
    assert admitted["position"] > events[at]["position"]
    assert types(stack.events(queued)) == ["JobSubmitted", "JobCancelled"]
    assert post(stack, f"/api/jobs/{waiting}/cancel").status_code == 200
    stack.wait_for(waiting)


def test_cancelling_a_running_job_closes_its_model_calls_stream(
    slow_stack: RunningStack, fake: FakeProvider
) -> None:
    stack = slow_stack
    fake.reset()
    plan = json.dumps(demo_document("planner"))
    # A reply streamed slowly: forty pieces, a quarter of a second apart.
    fake.set_responder(lambda provider, model, body: Reply(text=plan, deltas=40, delta_delay=0.25))
    job_id = submit(stack, "streaming", routes={"planner": ["openai:gpt-4.1"]})
    stack.wait_for(job_id, has("ModelCallStarted", "plan"))
    wait_until(
        lambda: fake.requests("openai") and len(fake.requests("openai")[0].delta_sent_at) >= 2
    )
    cancelled = post(stack, f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    stopped_at = time.perf_counter()
    time.sleep(3)
    (request,) = fake.requests("openai")
    # The client hung up: the stream stopped within a moment of the cancellation, far from its
    # end.
    assert len(request.delta_sent_at) < 20
    assert request.delta_sent_at[-1] < stopped_at + 1.0
    events = stack.events(job_id)
    assert not any(e["type"] in ("StepFinished", "StepFailed") for e in events)
    assert events[-1]["type"] == "ModelCallFinished"
    assert events[-1]["data"]["outcome"] == "interrupted"


def test_cancelling_a_job_while_its_tests_run_kills_the_sandbox_run(
    slow_stack: RunningStack, fake: FakeProvider
) -> None:
    stack = slow_stack
    fake.reset()
    tests = demo_document("tester")
    tests["files"] = [{"path": "test_slow.py", "content": SLOW_TEST}]
    tests["command"] = ["python3", "-m", "unittest", "-v"]
    reply = json.dumps(tests)
    fake.set_responder(lambda provider, model, body: Reply(text=reply))
    job_id = submit(stack, "slow tests", routes={"tester": ["openai:gpt-4.1"]})
    stack.wait_for(job_id, has("StepStarted", "run_tests"), timeout=60)
    sandbox = stack.stack.pid("sandbox")
    assert sandbox is not None

    def the_run() -> list[psutil.Process]:
        found = []
        for process in psutil.Process(sandbox).children(recursive=True):
            try:
                if job_id in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    processes = wait_until(the_run, what="the sandbox run")
    assert any("bwrap" in " ".join(p.cmdline()) for p in processes)
    assert post(stack, f"/api/jobs/{job_id}/cancel").status_code == 200

    def alive(process: psutil.Process) -> bool:
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False  # it ended between the two questions

    wait_until(
        lambda: not any(alive(p) for p in processes),
        timeout=10,
        what="the end of the sandbox run",
    )
    assert the_run() == []
    workspace = stack.stack.settings.workspaces_dir / job_id / "1-run_tests"
    wait_until(lambda: not workspace.exists(), timeout=5, what="the workspace's removal")
    time.sleep(1)
    events = stack.events(job_id)
    assert events[-1]["type"] == "JobCancelled"
    assert not any(
        e["type"] in ("StepFinished", "StepFailed") and e["data"]["step"] == "run_tests"
        for e in events
    )
