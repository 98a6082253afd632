"""The first hour with a real provider, on the real stack, the providers' official SDKs talking
to a local server that speaks their wire protocols:

- one provider's key in the environment runs a whole (non-demo) job, every phase on it, and the
  demo templates still cost nothing;
- with no key, a non-demo job is refused with where a key goes; a key entered through the API
  (as the Settings page does) serves the next job with no restart, is tried on request, is
  removed again, and never shows up in an API answer, a log, the database, the data directory
  or a backup.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import create_database, drop_database
from tests.fakeprovider import FakeProvider, Reply
from tests.harness import RunningStack, clean_environment, start_stack
from tests.test_ai_phases import _database_text, demo_responder

KEY = "sk-provider-setup-5a4b3c2d1e0f-never-shown"
WORD_COUNT = "a command-line word-count tool"
DEMO = demo_responder(WORD_COUNT)


def responder(provider: str, model: str, body: Any) -> Reply:
    """The demo project for the pipeline's phases; "OK" for anything else (a key's test)."""
    try:
        return DEMO(provider, model, body)
    except StopIteration:
        return Reply(text="OK")


def calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "ModelCallFinished"]


def status(events: list[dict[str, Any]]) -> str:
    return str(next(e["type"] for e in reversed(events) if e["type"].startswith("Job")))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        server.set_responder(responder)
        yield server


def stack_with(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any, environ: dict[str, str]
) -> tuple[RunningStack, str]:
    url = create_database(postgres_server)
    running = start_stack(
        tmp_path_factory.mktemp("providers"),
        url,
        environ=environ,
        model_backoff_seconds=0.05,
        model_timeout_seconds=30.0,
        model_max_output_tokens=4000,
    )
    return running, url


@pytest.fixture(scope="module")
def anthropic_only(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any, fake: FakeProvider
) -> Iterator[RunningStack]:
    env = {k: v for k, v in fake.env(KEY).items() if k.startswith("ANTHROPIC_")}
    running, url = stack_with(tmp_path_factory, postgres_server, clean_environment(**env))
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


@pytest.fixture(scope="module")
def no_key(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[RunningStack]:
    running, url = stack_with(tmp_path_factory, postgres_server, clean_environment())
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


def test_one_key_runs_a_whole_job_with_every_phase_on_that_provider(
    anthropic_only: RunningStack, fake: FakeProvider
) -> None:
    fake.reset()
    fake.set_responder(responder)
    with anthropic_only.api() as api:
        defaults = api.get("/api/providers").json()
    by_phase = {p["phase"]: p for p in defaults["phases"]}
    assert by_phase["tester"]["routes"] == ["anthropic:claude-sonnet-4-6"]
    assert by_phase["tester"]["source"] == "fallback"
    assert "OPENAI_API_KEY" in by_phase["tester"]["why"]
    assert by_phase["reviewer"]["routes"] == ["anthropic:claude-haiku-4-5"]
    assert defaults["providers"] == ["anthropic"]
    assert not defaults["scripted"]
    started = time.monotonic()
    job = anthropic_only.submit("wc", WORD_COUNT)
    events = anthropic_only.wait_for(job, timeout=180)
    took = time.monotonic() - started
    assert status(events) == "JobCompleted", [(e["type"], e["data"]) for e in events[-4:]]
    made = calls(events)
    assert {c["provider"] for c in made} == {"anthropic"}
    assert {c["model"] for c in made} == {"claude-sonnet-4-6", "claude-haiku-4-5"}
    assert {r.provider for r in fake.requests()} == {"anthropic"}
    print(f"\none key only: a non-demo job completed in {took:.1f}s, {len(made)} model calls")
    # The start-up line said which providers and routes were in force.
    said = "\n".join(anthropic_only.log)
    assert "model providers: anthropic from ANTHROPIC_API_KEY" in said
    assert "tester: anthropic:claude-sonnet-4-6 (the default openai:gpt-4.1 needs" in said


def test_a_demo_template_runs_on_the_scripted_model_even_with_a_key(
    anthropic_only: RunningStack, fake: FakeProvider
) -> None:
    fake.reset()
    with anthropic_only.api() as api:
        response = api.post("/api/jobs", json={"template": "word-count"})
    assert response.status_code == 201, response.text
    events = anthropic_only.wait_for(response.json()["id"], timeout=120)
    assert status(events) == "JobCompleted"
    made = calls(events)
    assert made
    assert {c["provider"] for c in made} == {"scripted"}
    assert sum(c["cost_usd"] for c in made) == 0
    assert fake.requests() == []


def test_a_key_entered_in_settings_serves_the_next_job_and_is_never_shown(
    no_key: RunningStack, fake: FakeProvider
) -> None:
    fake.reset()
    fake.set_responder(responder)
    fake.require_key("openai", KEY)
    answers: list[str] = []

    def answered(response: Any) -> Any:
        answers.append(response.text)
        return response

    # Without a key: a non-demo job is refused, and the refusal says where a key goes.
    refused = no_key.wait_for(no_key.submit("todo", "a markdown to HTML converter"), timeout=60)
    assert status(refused) == "JobFailed"
    reason = refused[-1]["data"]["reason"]
    assert "no model configured" in reason
    assert "Settings → Model providers" in reason
    with no_key.api() as api:
        assert answered(api.get("/api/providers")).json()["scripted"]
        before = answered(api.get("/api/admin/providers")).json()["reported_at"] or ""
        # Bad input changes nothing, and never echoes the key back.
        for body in (
            {"api_key": f"{KEY} extra"},
            {"api_key": ""},
            {"api_key": KEY, "base_url": "file:///etc/passwd"},
            {"api_key": KEY, "unknown": 1},
            {},
        ):
            bad = api.put("/api/admin/providers/openai", json=body)
            assert bad.status_code == 422, bad.text
            assert KEY not in bad.text
        assert api.put("/api/admin/providers/mistral", json={"api_key": KEY}).status_code == 404
        assert not api.get("/api/admin/providers").json()["providers"][1]["stored_key"]
        # The key, entered as the Settings page does.
        saved = api.put(
            "/api/admin/providers/openai",
            json={"api_key": KEY, "base_url": f"{fake.url}/v1"},
        )
        assert saved.status_code == 200, saved.text
        answers.append(saved.text)
        assert saved.json()["stored_key"] == "…hown"
        # The AI services take it at once and report again.
        deadline = time.monotonic() + 30
        while True:
            view = answered(api.get("/api/admin/providers")).json()
            if view["reported_at"] > before and all(
                p["reported_at"] > before and p["routes"][0].startswith("openai:")
                for p in view["phases"]
            ):
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        openai = next(p for p in view["providers"] if p["name"] == "openai")
        assert openai["key_source"] == "settings"
        assert openai["stored_base_url"] == f"{fake.url}/v1"
        tried = answered(api.post("/api/admin/providers/openai/test"))
        assert tried.status_code == 200, tried.text
        assert tried.json()["ok"], tried.json()
        assert tried.json()["model"]
    # The next job uses it, no restart.
    job = no_key.submit("wc", WORD_COUNT)
    events = no_key.wait_for(job, timeout=180)
    assert status(events) == "JobCompleted", events[-1]
    assert {c["provider"] for c in calls(events)} == {"openai"}
    assert any(KEY in json.dumps(r.headers) for r in fake.requests("openai"))
    with no_key.api() as api:
        for path in (f"/api/jobs/{job}", f"/api/jobs/{job}/calls", f"/api/jobs/{job}/events"):
            answered(api.get(path))
        backup = api.get("/api/admin/backup")
        assert backup.status_code == 200
        # Removed, the key serves no more: the next non-demo job is refused again.
        assert api.delete("/api/admin/providers/openai").status_code == 204
        deadline = time.monotonic() + 30
        while not api.get("/api/providers").json()["scripted"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert all(KEY not in text for text in answers)
    # Nowhere at rest: not the database (its secret is ciphertext), the data directory, the
    # logs or the backup, whose manifest says credentials are not included.
    assert KEY not in _database_text(no_key.database_url)
    for kept in no_key.stack.home.rglob("*"):
        if kept.is_file() and kept.stat().st_size < 100_000_000:
            assert KEY.encode() not in kept.read_bytes(), kept
    assert not any(KEY in line for line in no_key.log)
    with tarfile.open(fileobj=io.BytesIO(backup.content), mode="r:*") as bundle:
        members = {m.name: bundle.extractfile(m) for m in bundle.getmembers() if m.isfile()}
        contents = {name: f.read() for name, f in members.items() if f is not None}
    assert all(KEY.encode() not in data for data in contents.values())
    manifest = json.loads(contents["manifest.json"])
    assert "credentials" in manifest["not_included"]
    again = no_key.wait_for(no_key.submit("md", "a markdown to HTML converter"), timeout=60)
    assert status(again) == "JobFailed"
