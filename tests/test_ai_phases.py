"""The AI phases on the real stack, each phase's model reached through its provider's official
SDK at a local fake provider that speaks the three wire protocols (streaming included)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import create_database, drop_database
from psycopg import sql
from tests.fakeprovider import FakeProvider, Fault, Reply
from tests.harness import RunningStack, clean_environment, start_stack

from vdo_models.interface import Message, ModelRequest, Route, Usage
from vdo_models.pricing import Pricing
from vdo_models.scripted import ScriptedModelClient

KEY = "sk-test-9f8e7d6c5b4a-never-stored"
WORD_COUNT_REPAIR = "a command-line word-count tool, repair loop"
WORD_COUNT_REVIEW = "a command-line word-count tool, review loop"
PHASE_MARKERS = {
    "planner": "planning phase of VDO",
    "builder": "building phase of VDO",
    "tester": "testing phase of VDO",
    "reviewer": "review phase of VDO",
}


def demo_reply(task: str, phase: str, attempt: int) -> str:
    """What the built-in demo would answer: a real, working project, here served by the fake
    provider as if a real model had written it."""
    request = ModelRequest(
        phase=phase,
        system="",
        messages=(Message("user", "feedback: see above" if attempt > 1 else "go"),),
        task=task,
        attempt=attempt,
    )
    reply = asyncio.run(ScriptedModelClient().complete("demo", request))
    return reply.text


def phase_of(body: Any) -> str:
    text = json.dumps(body)
    return next(phase for phase, marker in PHASE_MARKERS.items() if marker in text)


def attempt_of(body: Any) -> int:
    found = re.search(r"This is attempt (\d+) of", json.dumps(body))
    return int(found.group(1)) if found else 1


def demo_responder(task: str) -> Callable[[str, str, Any], Reply]:
    # Made before the server needs them: the responder runs on the server's event loop.
    replies = {
        (phase, attempt): demo_reply(task, phase, attempt)
        for phase in PHASE_MARKERS
        for attempt in (1, 2, 3)
    }

    def respond(provider: str, model: str, body: Any) -> Reply:
        return Reply(text=replies[(phase_of(body), attempt_of(body))], deltas=5)

    return respond


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(scope="module")
def ai_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any, fake: FakeProvider
) -> Iterator[RunningStack]:
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp("ai"),
        url,
        environ=clean_environment(**fake.env(KEY)),
        planner_model="anthropic:claude-sonnet-4-6",
        builder_model="openai:gpt-4.1",
        tester_model="google:gemini-2.5-flash",
        reviewer_model="openai:gpt-4.1-mini",
        model_backoff_seconds=0.05,
        model_backoff_max_seconds=2.0,
        model_timeout_seconds=3.0,
        # A provider silent for 3 seconds has stalled.
        model_idle_timeout_seconds=3.0,
        model_retries=4,
        model_max_output_tokens=4000,
        # The fake counts a reply's tokens from its length: the 50 MB reply below alone "costs"
        # more than the default daily cap.
        daily_budget_usd=100_000.0,
    )
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeProvider) -> None:
    fake.reset()
    fake.require_key("anthropic", KEY)
    fake.require_key("openai", KEY)
    fake.require_key("google", KEY)


def calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "ModelCallFinished"]


def requests_for(fake: FakeProvider, phase: str) -> list[Any]:
    return [r for r in fake.requests() if phase_of(r.body) == phase]


def test_each_phase_on_its_own_provider_completes(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    job_id = ai_stack.submit("wc", "a command-line word-count tool")
    events = ai_stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobCompleted", ai_stack.job(job_id)
    used = {(c["step"], c["provider"], c["model"]) for c in calls(events)}
    assert used == {
        ("plan", "anthropic", "claude-sonnet-4-6"),
        ("build", "openai", "gpt-4.1"),
        ("write_tests", "google", "gemini-2.5-flash"),
        ("review", "openai", "gpt-4.1-mini"),
    }
    assert all(c["outcome"] == "ok" and c["cost_usd"] > 0 for c in calls(events))
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in calls(events))
    # Each provider was reached through its own SDK, streaming, with the key from the
    # environment.
    by_provider = {r.provider for r in fake.requests()}
    assert by_provider == {"anthropic", "openai", "google"}
    run = next(
        e["data"]
        for e in events
        if e["type"] == "StepFinished" and e["data"]["step"] == "run_tests"
    )
    assert run["outcome"] == "passed"


def test_a_failing_first_build_is_fixed_on_attempt_two_with_the_failure_output(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder(WORD_COUNT_REPAIR))
    job_id = ai_stack.submit("wc repair", WORD_COUNT_REPAIR)
    events = ai_stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobCompleted", events[-1]["data"]
    runs = [
        e["data"]
        for e in events
        if e["type"] == "StepFinished" and e["data"]["step"] == "run_tests"
    ]
    assert [r["outcome"] for r in runs] == ["failed", "passed"]
    second_build = requests_for(fake, "builder")[-1]
    prompt = json.dumps(second_build.body)
    # The builder's second request carries its previous files and the failing tests' output.
    assert "Attempt 1 was sent back" in prompt
    assert "wordcount.py" in prompt
    assert any(line in prompt for line in ("FAIL", "AssertionError", "failed"))
    detail = ai_stack.job(job_id)
    assert detail["attempt"] == 2


def test_a_reviewers_requested_change_is_applied_on_the_next_attempt(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder(WORD_COUNT_REVIEW))
    job_id = ai_stack.submit("wc review", WORD_COUNT_REVIEW)
    events = ai_stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobCompleted"
    reviews = [
        e["data"] for e in events if e["type"] == "StepFinished" and e["data"]["step"] == "review"
    ]
    assert [r["outcome"] for r in reviews] == ["changes_requested", "approved"]
    comment = reviews[0]["details"]["comments"][0]["comment"]
    second_build = json.dumps(requests_for(fake, "builder")[-1].body)
    assert comment in second_build.replace("\\n", "\n").replace('\\"', '"')
    builds = [
        e["data"]["artifacts"]["files"]
        for e in events
        if e["type"] == "StepFinished" and e["data"]["step"] == "build"
    ]
    assert len(builds) == 2
    assert builds[0] != builds[1]


def test_a_budget_too_small_for_the_next_call_stops_the_job_before_it(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    # The tester's model is expensive: its worst case (4000 output tokens at $75 per million)
    # is more than what the cheap planning and building leave of $0.25.
    job_id = ai_stack.submit(
        "wc budget",
        "a command-line word-count tool",
        budget_usd=0.25,
        routes={"tester": ["anthropic:claude-opus-4"]},
    )
    events = ai_stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobFailed"
    assert "budget exceeded" in events[-1]["data"]["reason"]
    assert "$" in events[-1]["data"]["reason"]
    assert requests_for(fake, "tester") == []  # the call was never made
    assert not [c for c in calls(events) if c["step"] == "write_tests"]


def test_faults_are_retried_or_fall_back_and_each_shows_in_the_history(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    # Planner (anthropic): a 429 with Retry-After, then a 500, then a stream cut mid-reply.
    fake.push(
        "anthropic",
        Fault.rate_limited(retry_after=0.2),
        Fault.server_error(500),
        Fault.stream_cut(text='{"summary": "half', after_deltas=2),
    )
    # Builder (openai): timeouts until its four tries run out, then the fallback route answers.
    fake.push("openai", *[Fault.timeout(6) for _ in range(4)])
    job_id = ai_stack.submit(
        "wc faults",
        "a command-line word-count tool",
        routes={
            "planner": ["anthropic:claude-sonnet-4-6"],
            "builder": ["openai:gpt-4.1", "google:gemini-2.5-flash"],
        },
    )
    events = ai_stack.wait_for(job_id, timeout=180)
    assert events[-1]["type"] == "JobCompleted", events[-1]["data"]
    planner = [c for c in calls(events) if c["step"] == "plan"]
    assert [c["outcome"] for c in planner] == ["error", "error", "error", "ok"]
    assert "429" in planner[0]["error"]
    assert "rate_limited" in planner[0]["error"]
    assert "500" in planner[1]["error"]
    assert "stream" in planner[2]["error"]
    assert [c["try_number"] for c in planner] == [1, 2, 3, 4]
    builder = [c for c in calls(events) if c["step"] == "build"]
    assert [(c["provider"], c["outcome"]) for c in builder] == [
        *[("openai", "error")] * 4,
        ("google", "ok"),
    ]
    assert all("timeout" in c["error"] for c in builder[:4])


def test_failed_tries_are_counted_at_no_less_than_the_provider_bills(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    """The planner's stream is cut after Anthropic reported its usage, then stalls before
    anything is reported, then answers: each try is recorded at what it cost (the cut one at
    the reported input and the output its text holds, the stalled one at its worst case), and
    the job's recorded spending is no less than what the provider would bill for every
    request of the job."""
    fake.set_responder(demo_responder("a command-line word-count tool"))
    fake.push(
        "anthropic",
        Fault.stream_cut(text='{"summary": "' + "a plan cut short " * 30, after_deltas=3),
        Reply(text="{}", pause=10.0),  # nothing at all for longer than the idle timeout
    )
    job_id = ai_stack.submit("wc billed", "a command-line word-count tool")
    events = ai_stack.wait_for(job_id, timeout=180)
    assert events[-1]["type"] == "JobCompleted", events[-1]["data"]

    pricing = Pricing()

    def billed(request: Any) -> float:
        bill = request.billed
        usage = Usage(bill.input, bill.output, bill.cached, bill.cache_write)
        return pricing.cost(Route(request.provider, request.model), usage)

    planner = [c for c in calls(events) if c["step"] == "plan"]
    reserved = [
        e["data"]["reserved_usd"]
        for e in events
        if e["type"] == "ModelCallStarted" and e["data"]["step"] == "plan"
    ]
    bills = [billed(r) for r in requests_for(fake, "planner")]
    assert [(c["outcome"], c["cost_basis"]) for c in planner] == [
        ("error", "estimated"),
        ("error", "worst_case"),
        ("ok", "reported"),
    ]
    cut, stalled, answered = planner
    assert cut["input_tokens"] == requests_for(fake, "planner")[0].billed.input
    assert bills[0] > 0
    assert cut["cost_usd"] >= bills[0]
    assert "as the provider reported" in cut["error"]
    assert "stalled" in stalled["error"]
    assert stalled["cost_usd"] == reserved[1] >= bills[1] > 0
    assert answered["cost_usd"] == pytest.approx(bills[2])

    recorded = sum(c["cost_usd"] for c in calls(events))
    fake_billed = sum(billed(r) for r in fake.requests())
    print(
        f"\nplanner tries recorded at {[round(c['cost_usd'], 6) for c in planner]} USD, "
        f"billed by the fake at {[round(b, 6) for b in bills]} USD; the job: recorded "
        f"${recorded:.6f}, fake-billed ${fake_billed:.6f}"
    )
    assert recorded >= fake_billed
    # What the stall may have cost is all the difference.
    assert recorded - fake_billed <= reserved[1] + cut["cost_usd"] - bills[0] + 1e-9
    assert ai_stack.job(job_id)["cost_usd"] == pytest.approx(recorded)


def test_a_call_that_costs_far_more_than_its_worst_case_fails_the_job_naming_it(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    # Anthropic reports five million output tokens for the plan ($75 at $15 per million).
    plan = demo_reply("a command-line word-count tool", "planner", 1)
    fake.push("anthropic", Reply(text=plan, input_tokens=0, output_tokens=5_000_000))
    job_id = ai_stack.submit("wc overrun", "a command-line word-count tool", budget_usd=0.5)
    events = ai_stack.wait_for(job_id, timeout=60)
    assert events[-1]["type"] == "JobFailed"
    assert events[-1]["data"]["reason"] == (
        "planning failed: budget exceeded: the planner's call to anthropic:claude-sonnet-4-6 "
        "(try 1) cost $75.0000, taking the job's spending to $75.0000 of its $0.50 budget "
        "($74.5000 over)"
    )
    assert [c["step"] for c in calls(events)] == ["plan"]  # nothing after it
    assert requests_for(fake, "builder") == []


def test_malformed_json_gets_one_repair_retry_then_fails_clearly(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    fake.push("anthropic", Reply(text="{not json at all"), Reply(text='{"summary": 3}'))
    job_id = ai_stack.submit("wc broken", "a command-line word-count tool")
    events = ai_stack.wait_for(job_id, timeout=60)
    assert events[-1]["type"] == "JobFailed"
    reason = events[-1]["data"]["reason"]
    assert "planning failed" in reason
    assert "not valid" in reason
    assert [c["call"] for c in calls(events)] == [1, 2]  # the reply, then one repair
    repair = json.dumps(fake.requests("anthropic")[-1].body)
    assert "could not be used" in repair


def test_a_refusal_is_not_retried(ai_stack: RunningStack, fake: FakeProvider) -> None:
    fake.push("anthropic", Fault.refusal("I can't help with that."))
    job_id = ai_stack.submit("wc refused", "a command-line word-count tool")
    events = ai_stack.wait_for(job_id, timeout=60)
    assert events[-1]["type"] == "JobFailed"
    assert "refus" in events[-1]["data"]["reason"]
    assert [c["outcome"] for c in calls(events)] == ["refused"]
    assert len(fake.requests("anthropic")) == 1


HOSTILE = {
    "a path out of the workspace": {"files": [{"path": "../../etc/passwd", "content": "x"}]},
    "an absolute path": {"files": [{"path": "/etc/cron.d/evil", "content": "x"}]},
    "10,000 files": {"files": [{"path": f"f{i}.py", "content": ""} for i in range(10_000)]},
    "a 50 MB file": {"files": [{"path": "big.py", "content": "#" * 50_000_000}]},
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_reply_is_refused_and_nothing_is_written(
    ai_stack: RunningStack, fake: FakeProvider, case: str
) -> None:
    responder = demo_responder("a command-line word-count tool")

    def hostile(provider: str, model: str, body: Any) -> Reply:
        if phase_of(body) == "builder":
            # Billed as a provider would: at most the output limit, whatever the length.
            text = json.dumps({**HOSTILE[case], "notes": "x"})
            return Reply(text=text, deltas=2, output_tokens=4000)
        return responder(provider, model, body)

    fake.set_responder(hostile)
    blobs = ai_stack.stack.settings.blobs_dir
    before = {p for p in blobs.rglob("*") if p.is_file()}
    job_id = ai_stack.submit(f"wc hostile {case}", "a command-line word-count tool", max_attempts=1)
    events = ai_stack.wait_for(job_id, timeout=120)
    assert events[-1]["type"] == "JobFailed"
    assert "refused the builder's files, nothing was written" in events[-1]["data"]["reason"]
    assert not any(e["type"] == "StepFinished" and e["data"]["step"] == "build" for e in events)
    assert not Path("/etc/cron.d/evil").exists()
    written = {p.parent.name + p.name for p in blobs.rglob("*") if p.is_file()} - {
        p.parent.name + p.name for p in before
    }
    # What was kept is what the history names (the plan, each model's reply as the call's
    # record), and nothing else: no file of the refused reply was stored.
    named = {e["data"]["reply"] for e in events if e["type"] == "ModelCallFinished"} | {
        digest
        for e in events
        if e["type"] == "StepFinished"
        for digest in e["data"]["artifacts"].values()
    }
    assert written
    assert written <= named, written - named


def test_no_trace_of_the_keys_in_the_store_blobs_or_logs(
    ai_stack: RunningStack, fake: FakeProvider
) -> None:
    fake.set_responder(demo_responder("a command-line word-count tool"))
    ai_stack.wait_for(ai_stack.submit("wc keys", "a command-line word-count tool"), timeout=120)
    assert any(KEY in json.dumps(r.headers) for r in fake.requests())  # it was really used
    store_text = _database_text(ai_stack.database_url)
    assert "ModelCallFinished" in store_text
    assert KEY not in store_text
    for path in ai_stack.stack.home.rglob("*"):
        if path.is_file() and path.stat().st_size < 100_000_000:
            assert KEY.encode() not in path.read_bytes(), path
    assert not any(KEY in line for line in ai_stack.log)


def _database_text(url: str) -> str:
    """Every row of every table in the database, as text (event states decoded)."""
    parts: list[str] = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            name = sql.Identifier(schema, table)
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(name)).fetchall()
            parts += [str(r[0]) for r in rows]
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s AND data_type = 'bytea'",
                (schema, table),
            ).fetchall()
            for (column,) in columns:
                query = sql.SQL("SELECT convert_from({}, 'UTF8') FROM {}").format(
                    sql.Identifier(column), name
                )
                parts += [str(r[0]) for r in conn.execute(query).fetchall()]
    return "\n".join(parts)


def test_the_api_shows_which_providers_each_phase_has_but_never_a_key(
    ai_stack: RunningStack,
) -> None:
    with ai_stack.api() as api:
        response = api.get("/api/admin/providers")
    assert response.status_code == 200, response.text
    assert KEY not in response.text
    body = response.json()
    providers = {p["name"]: p for p in body["providers"]}
    assert set(providers) == {"anthropic", "openai", "google"}
    assert providers["anthropic"]["configured"]
    assert providers["anthropic"]["key_source"] == "ANTHROPIC_API_KEY"
    assert providers["anthropic"]["base_url"].startswith("http://127.0.0.1:")
    assert sorted(providers["openai"]["phases"]) == ["builder", "planner", "reviewer", "tester"]
    routes = {p["phase"]: p["routes"] for p in body["phases"]}
    assert routes["planner"][0] == "anthropic:claude-sonnet-4-6"
    assert routes["tester"][0] == "google:gemini-2.5-flash"
    assert not body["scripted"]
    assert all(p["reported_at"] for p in body["phases"])
    # A member may not see the deployment's configuration.
    with ai_stack.api() as api:
        api.post("/api/users", json={"name": "mia", "role": "member"})
        token = api.post("/api/tokens", json={"user": "mia"}).json()["token"]
    with ai_stack.api(token) as api:
        assert api.get("/api/admin/providers").status_code == 403
