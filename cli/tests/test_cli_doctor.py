"""`vdo doctor` against the fake model provider: what is configured, what answers, and never a
key in what it prints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakeprovider import FakeProvider
from tests.harness import PROVIDER_VARIABLES
from typer.testing import CliRunner

from vdo_cli.main import app

KEY = "sk-doctor-5a4b3c2d1e0f-secret"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


def doctor(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[int, str]:
    import os

    base = {k: "" for k in os.environ if k.startswith(PROVIDER_VARIABLES)}
    result = CliRunner().invoke(
        app,
        ["doctor", *args],
        env={**base, **env, "VDO_HOME": str(tmp_path), "VDO_SANDBOX_BACKEND": "bubblewrap"},
    )
    return result.exit_code, result.output


def report(env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    code, output = doctor(env, tmp_path, "--json")
    assert code in (0, 1), output
    parsed: dict[str, Any] = json.loads(output)
    return parsed


def test_every_configured_provider_is_reached_and_no_key_is_printed(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = fake.env(KEY)
    for provider in ("anthropic", "openai", "google"):
        fake.require_key(provider, KEY)
    found = report(env, tmp_path)
    assert [(p["provider"], p["configured"], p["reachable"]) for p in found["providers"]] == [
        ("anthropic", True, True),
        ("openai", True, True),
        ("google", True, True),
    ]
    assert {p["key_variable"] for p in found["providers"]} <= {
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
    }
    assert found["scripted_model"] is False
    assert found["phases"]["planner"].startswith("anthropic:")
    assert found["phases"]["tester"].startswith("openai:")
    assert found["phases"]["reviewer"].startswith("google:")
    _code, text = doctor(env, tmp_path)
    assert "yes" in text
    assert KEY not in text
    assert KEY not in json.dumps(found)
    assert {r.provider for r in fake.requests()} == {"anthropic", "openai", "google"}


def test_a_rejected_key_shows_as_unreachable_with_the_reason_but_not_the_key(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.require_key("openai", "another-key-entirely-000")
    env = {k: v for k, v in fake.env(KEY).items() if k.startswith("OPENAI_")}
    code, output = doctor(env, tmp_path, "--json")
    assert code == 1
    found = json.loads(output)
    openai = next(p for p in found["providers"] if p["provider"] == "openai")
    assert openai["reachable"] is False
    assert "401" in openai["detail"] or "auth" in openai["detail"].lower()
    assert KEY not in output
    others = [p for p in found["providers"] if p["provider"] != "openai"]
    assert all(p["configured"] is False and p["reachable"] is None for p in others)
    # The planner's default route is Anthropic, which has no key: the phase takes OpenAI's
    # model for planning, and says why.
    assert found["phases"]["planner"] == "openai:gpt-4.1"
    assert "ANTHROPIC_API_KEY" in found["phases_why"]["planner"]


def test_with_no_provider_every_phase_is_on_the_scripted_model(tmp_path: Path) -> None:
    found = report({}, tmp_path)
    assert found["scripted_model"] is True
    assert all(p["configured"] is False for p in found["providers"])
    assert set(found["phases"].values()) == {"scripted:demo"}
    _, text = doctor({}, tmp_path)
    assert "scripted model" in text
