"""Which models a phase takes and why: one key runs every phase, a choice someone made is kept
(and fails clearly without its key), the demo templates stay on the scripted model, and a key
in the environment wins over one entered in Settings."""

from __future__ import annotations

import pytest

from vdo_kernel.domain import AI_PHASES
from vdo_kernel.secrets import provider_base_url, provider_key
from vdo_kernel.settings import Settings
from vdo_kernel.steps import StepFailure
from vdo_models.interface import Route
from vdo_models.session import (
    PROVIDER_MODELS,
    Models,
    effective_environment,
    provider_sources,
    resolve_routes,
    routing_summary,
)

KEY = "sk-test-0123456789abcdef"


@pytest.mark.parametrize("provider", ["anthropic", "openai", "google"])
def test_one_providers_key_runs_every_phase_on_that_provider(provider: str) -> None:
    settings = Settings()
    for phase in AI_PHASES:
        routing = resolve_routes(phase, {}, settings, {provider})
        assert [r.provider for r in routing.routes] == [provider], phase
        default = Route.parse(str(getattr(settings, f"{phase}_model")))
        if default.provider == provider:
            assert routing.source == "default"
        else:
            assert routing.source == "fallback"
            assert routing.routes[0].model == PROVIDER_MODELS[provider][phase]
            assert str(default) in routing.why
            assert f"{provider} is configured" in routing.why


def test_the_reviewer_falls_back_to_a_cheaper_model_where_the_provider_has_one() -> None:
    routing = resolve_routes("reviewer", {}, Settings(), {"anthropic"})
    assert routing.routes == (Route("anthropic", "claude-haiku-4-5"),)
    assert resolve_routes("builder", {}, Settings(), {"anthropic"}).routes == (
        Route("anthropic", "claude-sonnet-4-6"),
    )


def test_a_model_set_for_a_phase_is_kept_and_fails_clearly_without_its_key() -> None:
    settings = Settings(tester_model="openai:gpt-4.1")
    with pytest.raises(StepFailure) as refused:
        resolve_routes("tester", {}, settings, {"anthropic"})
    message = str(refused.value)
    assert "VDO_TESTER_MODEL" in message
    assert "Settings → Model providers" in message
    assert "OPENAI_API_KEY" in message
    assert "restart" in message
    assert "anthropic" in message  # what is configured


def test_a_jobs_own_choice_is_kept_and_fails_clearly_without_its_key() -> None:
    with pytest.raises(StepFailure, match="this job's choice"):
        resolve_routes("planner", {"planner": ["google:gemini-2.5-pro"]}, Settings(), {"openai"})


def test_fallbacks_that_have_a_key_serve_before_another_providers_default() -> None:
    settings = Settings(tester_fallbacks="google:gemini-2.5-flash")
    routing = resolve_routes("tester", {}, settings, {"google", "anthropic"})
    assert routing.routes == (Route("google", "gemini-2.5-flash"),)
    assert "openai:gpt-4.1" in routing.why  # left out for want of a key


def test_the_demo_templates_scripted_routes_stay_scripted_with_a_key() -> None:
    routing = resolve_routes("builder", {"builder": ["scripted:demo"]}, Settings(), {"anthropic"})
    assert routing.routes == (Route("scripted", "demo"),)
    assert "scripted" in routing.why


def test_with_no_key_every_phase_is_scripted_and_says_where_keys_go() -> None:
    routing = resolve_routes("planner", {}, Settings(), set())
    assert routing.source == "scripted"
    (line,) = routing_summary(Settings(), {}, {})
    assert "Settings → Model providers" in line
    assert "ANTHROPIC_API_KEY" in line


def test_a_key_entered_in_settings_is_used_and_the_environments_wins() -> None:
    stored = {
        provider_key("anthropic"): KEY,
        provider_base_url("anthropic"): "http://127.0.0.1:9/anthropic",
        provider_key("openai"): "sk-stored-openai-000000",
    }
    env = {"OPENAI_API_KEY": "sk-env-openai-111111"}
    merged = effective_environment(env, stored)
    assert merged["ANTHROPIC_API_KEY"] == KEY
    assert merged["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/anthropic"
    assert merged["OPENAI_API_KEY"] == "sk-env-openai-111111"
    sources = {s.name: s for s in provider_sources(env, stored)}
    assert sources["anthropic"].key_source == "settings"
    assert sources["openai"].key_source == "OPENAI_API_KEY"
    assert sources["openai"].stored_key_ignored
    assert sources["google"].key_source is None


def test_a_services_report_names_sources_and_why_but_never_a_key() -> None:
    models = Models(Settings(), environ={"ANTHROPIC_API_KEY": KEY})
    report = models.report("tester")
    assert report["routes"] == ["anthropic:claude-sonnet-4-6"]
    assert report["source"] == "fallback"
    assert KEY not in repr(report)
    providers = {p["name"]: p for p in report["providers"]}
    assert providers["anthropic"]["key_source"] == "ANTHROPIC_API_KEY"
    assert not providers["openai"]["configured"]
