"""The call bracket of one step, on a real event store: what is paid for is recorded, a redone
step never pays twice for a reply it already has, and a budget stops a call before it is sent."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.fakeprovider import Answer, Bill, FakeProvider, Fault, Reply

from vdo_kernel.blobs import BlobStore
from vdo_kernel.domain import Job, Step
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepContext, StepFailure
from vdo_kernel.store import JobStore
from vdo_models.calls import DAILY_CAP_LOCK, BudgetExceededError, StepCalls
from vdo_models.interface import Message, ModelRequest, Route, Usage
from vdo_models.pricing import Pricing
from vdo_models.session import Models

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}
ROUTE = Route("openai", "gpt-4.1")


def planning_job(store: JobStore, budget: float = 1.0) -> Job:
    job = Job.submit(title="calls", description="a command-line word-count tool", budget_usd=budget)
    job.admit(by="scheduler", causation_id="test")
    due = job.is_due(Step.PLAN)
    assert due is not None
    job.start_step(due, worker="test", causation_id="1")
    store.save(job)
    return store.get(job.id)


def step_calls(
    store: JobStore,
    job: Job,
    models: Models,
    blobs: BlobStore,
    settings: Settings,
    route: Route = ROUTE,
) -> StepCalls:
    due = job.is_due(Step.PLAN)
    assert due is not None
    ctx = StepContext(job=job, due=due, blobs=blobs, settings=settings, store=store, cause="1")
    return StepCalls(
        ctx,
        phase="planner",
        routes=[route],
        router=models.router,
        pricing=models.pricing,
        daily=models.daily,
    )


def request() -> ModelRequest:
    return ModelRequest(
        phase="planner",
        system="Answer with JSON.",
        messages=(Message("user", "What is six times seven?"),),
        max_output_tokens=1000,
        json_schema=SCHEMA,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, model_backoff_seconds=0.0, model_timeout_seconds=5.0)


@pytest.fixture
def blobs(settings: Settings) -> BlobStore:
    return BlobStore(settings.blobs_dir)


@pytest.fixture
async def models(settings: Settings, env: dict[str, str]) -> AsyncIterator[Models]:
    models = Models(settings, environ=env)
    yield models
    await models.close()


def finished_calls(store: JobStore, job: Job) -> list[dict[str, object]]:
    return [e.data for e in store.job_events(job.id) if e.type == "ModelCallFinished"]


async def test_a_redone_step_reuses_the_recorded_reply_instead_of_paying_again(
    store: JobStore, fake: FakeProvider, models: Models, blobs: BlobStore, settings: Settings
) -> None:
    fake.push("openai", Reply(text='{"answer": 42}', input_tokens=20, output_tokens=5))
    job = planning_job(store)
    first = await step_calls(store, job, models, blobs, settings).ask(request(), SCHEMA)
    assert first == {"answer": 42}
    assert len(fake.requests("openai")) == 1
    [call] = finished_calls(store, job)
    assert call["outcome"] == "ok"
    assert call["input_tokens"] == 20
    assert call["output_tokens"] == 5
    assert call["cost_usd"] == pytest.approx((20 * 2 + 5 * 8) / 1e6)

    # The worker died before the step's result was recorded: the step is done again.
    again = await step_calls(store, store.get(job.id), models, blobs, settings).ask(
        request(), SCHEMA
    )
    assert again == first
    assert len(fake.requests("openai")) == 1  # not paid twice
    assert len(finished_calls(store, job)) == 1


async def test_a_call_interrupted_mid_flight_is_recorded_and_retried_under_a_new_try(
    store: JobStore, fake: FakeProvider, models: Models, blobs: BlobStore, settings: Settings
) -> None:
    job = planning_job(store)
    due = job.is_due(Step.PLAN)
    assert due is not None
    # A worker recorded the start of a call and died before its reply came back.
    job.start_model_call(
        due,
        call=1,
        try_number=1,
        provider="openai",
        model="gpt-4.1",
        reserved_usd=0.01,
        causation_id="1",
    )
    store.save(job)
    fake.push("openai", Reply(text='{"answer": 7}'))
    result = await step_calls(store, store.get(job.id), models, blobs, settings).ask(
        request(), SCHEMA
    )
    assert result == {"answer": 7}
    calls = finished_calls(store, job)
    assert [(c["try_number"], c["outcome"]) for c in calls] == [(1, "interrupted"), (2, "ok")]
    assert calls[0]["cost_usd"] == pytest.approx(0.01)  # counted at its worst case
    assert "interrupted" in str(calls[0]["error"])
    assert store.get(job.id).open_calls == {}


async def test_a_call_that_could_exceed_the_budget_is_not_made(
    store: JobStore, fake: FakeProvider, models: Models, blobs: BlobStore, settings: Settings
) -> None:
    job = planning_job(store, budget=0.001)  # 1000 output tokens at $8/M is $0.008
    with pytest.raises(BudgetExceededError, match=r"budget exceeded: .*\$0\.0080"):
        await step_calls(store, job, models, blobs, settings).ask(request(), SCHEMA)
    assert fake.requests() == []
    assert [e.type for e in store.job_events(job.id)] == [
        "JobSubmitted",
        "JobAdmitted",
        "StepStarted",
    ]


async def test_the_daily_cap_covers_every_job(
    store: JobStore, fake: FakeProvider, env: dict[str, str], blobs: BlobStore, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, daily_budget_usd=0.012, model_backoff_seconds=0.0)
    models = Models(settings, environ=env)
    # Each call costs $0.0048 (600 output tokens at $8/M); its worst case is over $0.008.
    fake.set_responder(
        lambda provider, model, body: Reply(text='{"answer": 1}', input_tokens=1, output_tokens=600)
    )
    try:
        first = planning_job(store)
        await step_calls(store, first, models, blobs, settings).ask(request(), SCHEMA)
        spent = float(str(finished_calls(store, first)[0]["cost_usd"]))
        assert spent > 0
        # What is left of the day's cap is less than another call's worst case.
        second = planning_job(store)
        with pytest.raises(BudgetExceededError, match="daily budget exceeded"):
            await step_calls(store, second, models, blobs, settings).ask(request(), SCHEMA)
        assert len(fake.requests()) == 1
    finally:
        await models.close()


async def test_the_daily_cap_holds_when_calls_of_several_services_start_at_once(
    store: JobStore,
    database_url: str,
    fake: FakeProvider,
    env: dict[str, str],
    blobs: BlobStore,
    tmp_path: Path,
) -> None:
    """Three services (each its own store, its own tally of the day) start a call for three
    jobs at the same moment, with room under the daily cap for one call's worst case only: one
    call is made, the others are refused, and the cap is not overshot."""
    settings = Settings(home=tmp_path, daily_budget_usd=0.012, model_backoff_seconds=0.0)
    # Each call's worst case is over $0.008, and a reply takes a while to stream: the first
    # call is still open, holding its worst case, when the others are checked.
    fake.set_responder(
        lambda provider, model, body: Reply(
            text='{"answer": 1}', input_tokens=1, output_tokens=600, deltas=10, delta_delay=0.1
        )
    )
    stores = [store, JobStore(database_url), JobStore(database_url)]
    services = [Models(settings, environ=env) for _ in stores]
    try:
        jobs = [planning_job(store) for _ in stores]

        async def ask(n: int) -> str:
            calls = step_calls(stores[n], stores[n].get(jobs[n].id), services[n], blobs, settings)
            try:
                await calls.ask(request(), SCHEMA)
            except BudgetExceededError as refused:
                return str(refused)
            return "made"

        outcomes = await asyncio.gather(*(ask(n) for n in range(len(stores))))
        assert outcomes.count("made") == 1, outcomes
        refused = [o for o in outcomes if o != "made"]
        assert all("held by calls under way" in o for o in refused), refused
        assert len(fake.requests()) == 1
        spent = sum(float(str(c["cost_usd"])) for job in jobs for c in finished_calls(store, job))
        assert 0 < spent <= settings.daily_budget_usd
    finally:
        for service in services:
            await service.close()
        for other in stores[1:]:
            other.close()


async def test_a_call_starts_only_while_it_holds_the_daily_cap_lock(
    store: JobStore, fake: FakeProvider, models: Models, blobs: BlobStore, settings: Settings
) -> None:
    """The check against the cap and the start it allows are one step across processes: while
    another holder (any process) has the lock, no call starts."""
    fake.push("openai", Reply(text='{"answer": 42}'))
    job = planning_job(store)
    held, release = threading.Event(), threading.Event()

    def other_holder() -> None:
        with store.exclusive(DAILY_CAP_LOCK):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=other_holder)
    holder.start()
    try:
        assert held.wait(10)
        asking = asyncio.create_task(
            step_calls(store, job, models, blobs, settings).ask(request(), SCHEMA)
        )
        await asyncio.sleep(1.0)
        assert not asking.done()
        assert fake.requests() == []
        assert not [e for e in store.job_events(job.id) if e.type == "ModelCallStarted"]
    finally:
        release.set()
        holder.join(10)
    await asyncio.wait_for(asking, 30)
    assert len(fake.requests()) == 1


async def test_the_reply_is_streamed_to_the_live_log_and_no_key_is_recorded(
    store: JobStore,
    fake: FakeProvider,
    models: Models,
    blobs: BlobStore,
    settings: Settings,
    key: str,
) -> None:
    fake.push("openai", Reply(text='{"answer": 12345}', deltas=5))
    job = planning_job(store)
    calls = step_calls(store, job, models, blobs, settings)
    lines: list[tuple[str, str]] = []

    class Recorder:
        def emit(self, job_id: object, *, step: str, attempt: int, stream: str, text: str) -> None:
            lines.append((stream, text))

    calls.ctx.live = Recorder()  # type: ignore[assignment]
    await calls.ask(request(), SCHEMA)
    pieces = [text for stream, text in lines if stream == "model" and "calling" not in text]
    assert len(pieces) > 1
    assert "".join(pieces) == '{"answer": 12345}'
    history = json.dumps([e.to_json() for e in store.job_events(job.id)])
    assert key not in history
    assert all(
        key.encode() not in path.read_bytes() for path in blobs.root.rglob("*") if path.is_file()
    )


ROUTES = {
    "anthropic": Route("anthropic", "claude-sonnet-4-6"),
    "openai": Route("openai", "gpt-4.1"),
    "google": Route("google", "gemini-2.5-pro"),
}
CUT = '{"answer": ' + "4" * 400


def billed_cost(pricing: Pricing, route: Route, bill: Bill) -> float:
    """What the fake provider would bill for a request, at the deployment's prices."""
    return pricing.cost(route, Usage(bill.input, bill.output, bill.cached, bill.cache_write))


async def test_failed_tries_are_counted_at_what_the_provider_bills_or_their_worst_case(
    provider: str,
    store: JobStore,
    fake: FakeProvider,
    env: dict[str, str],
    blobs: BlobStore,
    tmp_path: Path,
) -> None:
    """A 429 is not billed; a stream cut after the provider reported its usage is counted at
    that usage with the output the streamed text holds (Anthropic and Gemini report as they
    go; OpenAI only at the end, so there it is the worst case); a stall before anything was
    reported is counted at its worst case."""
    settings = Settings(
        home=tmp_path, model_backoff_seconds=0.0, model_idle_timeout_seconds=0.5, model_retries=4
    )
    models = Models(settings, environ=env)
    route = ROUTES[provider]
    fake.push(
        provider,
        Fault.rate_limited(),
        Fault.stream_cut(text=CUT, after_deltas=3),
        Reply(text='{"answer": 1}', pause=3.0),
        Reply(text='{"answer": 42}', input_tokens=30, output_tokens=6),
    )
    job = planning_job(store)
    try:
        answer = await step_calls(store, job, models, blobs, settings, route).ask(request(), SCHEMA)
    finally:
        await models.close()

    assert answer == {"answer": 42}
    events = store.job_events(job.id)
    reserved = [e.data["reserved_usd"] for e in events if e.type == "ModelCallStarted"]
    limited, cut, stalled, ok = finished_calls(store, job)
    bills = [r.billed for r in fake.requests(provider)]
    pricing = models.pricing

    assert (limited["cost_usd"], limited["cost_basis"]) == (0.0, "reported")
    assert "not billed: the provider answered 429 before any reply" in str(limited["error"])
    assert bills[0] == Bill()

    streamed = int(str(cut["output_tokens"]))
    if provider == "openai":
        assert (cut["cost_usd"], cut["cost_basis"]) == (reserved[1], "worst_case")
        assert "the provider reported no usage before it failed" in str(cut["error"])
    else:
        assert cut["cost_basis"] == "estimated"
        assert cut["input_tokens"] == bills[1].input  # as reported
        assert streamed >= bills[1].output  # estimated high from the text that arrived
        assert cut["cost_usd"] == pytest.approx(
            pricing.cost(route, Usage(bills[1].input, streamed))
        )
        sent = len(fake.requests(provider)[1].text_sent)
        assert 0 < sent < len(CUT)
        assert streamed == math.ceil(sent / 3.5)
        assert f"{streamed} output tokens estimated from the {sent} characters streamed" in str(
            cut["error"]
        )
    assert float(str(cut["cost_usd"])) >= billed_cost(pricing, route, bills[1]) > 0

    assert (stalled["cost_usd"], stalled["cost_basis"]) == (reserved[2], "worst_case")
    assert "stalled" in str(stalled["error"])
    assert f"counted at its worst case ${reserved[2]:.4f}" in str(stalled["error"])
    assert float(str(stalled["cost_usd"])) >= billed_cost(pricing, route, bills[2]) > 0

    assert (ok["cost_basis"], ok["input_tokens"], ok["output_tokens"]) == ("reported", 30, 6)
    assert ok["cost_usd"] == pytest.approx(billed_cost(pricing, route, bills[3]))
    spent = store.get(job.id).spent_usd
    assert spent == pytest.approx(
        sum(float(str(c["cost_usd"])) for c in finished_calls(store, job))
    )


async def test_a_call_that_costs_far_more_than_its_worst_case_fails_the_step_there(
    store: JobStore, fake: FakeProvider, models: Models, blobs: BlobStore, settings: Settings
) -> None:
    # The provider reports five million output tokens for a call allowed a thousand.
    fake.push("anthropic", Reply(text='{"answer": 42}', input_tokens=0, output_tokens=5_000_000))
    job = planning_job(store, budget=0.5)
    calls = step_calls(store, job, models, blobs, settings, ROUTES["anthropic"])
    with pytest.raises(BudgetExceededError) as caught:
        await calls.ask(request(), SCHEMA)
    assert str(caught.value) == (
        "budget exceeded: the planner's call to anthropic:claude-sonnet-4-6 (try 1) cost "
        "$75.0000, taking the job's spending to $75.0000 of its $0.50 budget ($74.5000 over)"
    )
    [call] = finished_calls(store, job)
    assert (call["outcome"], call["cost_usd"]) == ("ok", 75.0)  # recorded as it was
    assert len(fake.requests("anthropic")) == 1


class Lines:
    """A live log that keeps what the step wrote."""

    def __init__(self) -> None:
        self.text = ""

    def emit(self, job_id: object, *, step: str, attempt: int, stream: str, text: str) -> None:
        self.text += text


async def test_a_reply_cut_at_the_output_limit_is_not_parsed_but_asked_again_shorter(
    provider: str,
    store: JobStore,
    fake: FakeProvider,
    models: Models,
    blobs: BlobStore,
    settings: Settings,
) -> None:
    # The cut reply holds a whole object that matches the schema: it is not taken for the answer.
    fake.push(
        provider,
        Reply(text='{"answer": 7} and then {"answer": 4', truncated=True),
        Reply(text='{"answer": 42}'),
    )
    calls = step_calls(store, planning_job(store), models, blobs, settings, ROUTES[provider])
    live = Lines()
    calls.ctx.live = live  # type: ignore[assignment]

    assert await calls.ask(request(), SCHEMA) == {"answer": 42}

    repair = json.dumps(fake.requests(provider)[-1].body)
    assert "it hit the output limit of 1000 tokens and was cut off before its end" in repair
    assert "no prose outside the JSON, shorter comments and docstrings" in repair
    assert "only the files that are needed" in repair
    assert "could not be used: the reply is not valid JSON" not in repair
    assert (
        "reply rejected: the reply hit the output limit of 1000 tokens; asking once more for a "
        "complete, shorter answer"
    ) in live.text


async def test_a_repaired_reply_cut_at_the_output_limit_again_fails_the_step_saying_so(
    provider: str,
    store: JobStore,
    fake: FakeProvider,
    models: Models,
    blobs: BlobStore,
    settings: Settings,
) -> None:
    fake.push(
        provider,
        Reply(text='{"answer": 4', truncated=True),
        Reply(text='{"answer": 4', truncated=True),
    )
    calls = step_calls(store, planning_job(store), models, blobs, settings, ROUTES[provider])
    with pytest.raises(StepFailure) as caught:
        await calls.ask(request(), SCHEMA)
    assert str(caught.value) == (
        "the planner model's reply hit the output limit of 1000 tokens again, after it was "
        "asked for a shorter one"
    )
    assert len(fake.requests(provider)) == 2


async def test_the_budget_holds_when_every_try_fails_after_a_long_stream(
    store: JobStore, fake: FakeProvider, env: dict[str, str], blobs: BlobStore, tmp_path: Path
) -> None:
    """Every try of every route streams for a while, then stalls or is cut, and is retried or
    falls back: each failed try is counted (none at $0), and what the job is recorded to have
    spent stays within its budget and one call's worst case."""
    settings = Settings(
        home=tmp_path, model_backoff_seconds=0.0, model_idle_timeout_seconds=0.3, model_retries=3
    )
    models = Models(settings, environ=env)
    text = '{"answer": "' + "a long reply that never ends " * 60
    stall = Reply(text=text, deltas=20, delta_delay=0.02, pause=5.0, pause_after=15)
    cut = Fault.stream_cut(text=text, after_deltas=15, delta_delay=0.02)
    answers: Iterator[Answer] = iter([stall, cut] * 10)
    fake.set_responder(lambda provider, model, body: next(answers))
    budget = 0.04
    job = planning_job(store, budget=budget)
    calls = step_calls(store, job, models, blobs, settings)
    calls.routes = list(ROUTES.values())
    try:
        with pytest.raises(BudgetExceededError, match="budget exceeded: the call to"):
            await calls.ask(request(), SCHEMA)
    finally:
        await models.close()

    events = store.job_events(job.id)
    reserved = [float(e.data["reserved_usd"]) for e in events if e.type == "ModelCallStarted"]
    tries = finished_calls(store, job)
    costs = [float(str(c["cost_usd"])) for c in tries]
    spent = sum(costs)
    print(
        f"\n{len(tries)} failed tries, recorded at {[round(c, 5) for c in costs]} USD: "
        f"${spent:.5f} of a ${budget:.2f} budget (one call's worst case: ${max(reserved):.5f})"
    )
    assert len(tries) >= 3
    assert {c["outcome"] for c in tries} == {"error"}
    assert all(cost > 0 for cost in costs)
    assert {c["cost_basis"] for c in tries} == {"estimated", "worst_case"}
    assert spent <= budget + max(reserved)
    assert store.get(job.id).spent_usd == pytest.approx(spent)
