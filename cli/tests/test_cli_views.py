"""How `vdo show` and `vdo jobs` lay out a job's cost, its models and its model calls, and how a
step made by the built-in scripted model is labelled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console, RenderableType

from vdo_cli.views import calls_table, job_detail, jobs_table

JOB: dict[str, Any] = {
    "id": "9b2e8a4e-0000-4000-8000-000000000000",
    "title": "todo api",
    "status": "running",
    "phase": "testing",
    "step": "run_tests",
    "attempt": 1,
    "max_attempts": 3,
    "budget_usd": 2.5,
    "cost_usd": 0.1125,
    "routes": {"planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"]},
    "model_calls": {"count": 3, "open": 1, "failed": 1, "cost_usd": 0.1125},
    "created_at": "2026-01-01T10:00:00Z",
    "steps": [
        {
            "step": "plan",
            "phase": "planning",
            "attempt": 1,
            "outcome": "ok",
            "summary": "three endpoints",
            "details": {"model": "openai:gpt-4.1"},
        },
        {
            "step": "build",
            "phase": "building",
            "attempt": 1,
            "outcome": "ok",
            "summary": "wrote 2 files",
            "details": {"model": "scripted (built-in; no AI model configured)"},
        },
        {
            "step": "run_tests",
            "phase": "testing",
            "attempt": 1,
            "outcome": "failed",
            "summary": "1 test failed",
            "details": {"passed": 4, "failed": 1, "errors": 0, "total": 5},
        },
    ],
}
CALLS: list[dict[str, Any]] = [
    {
        "step": "plan",
        "phase": "planning",
        "attempt": 1,
        "call": 1,
        "try_number": 1,
        "route": "anthropic:claude-sonnet-4-5",
        "outcome": "error",
        "error": "429 rate limited",
        "started_at": "2026-01-01T10:00:01Z",
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "latency_ms": 90.0,
    },
    {
        "step": "plan",
        "phase": "planning",
        "attempt": 1,
        "call": 1,
        "try_number": 2,
        "route": "openai:gpt-4.1",
        "outcome": "ok",
        "error": "",
        "note": "fallback",
        "started_at": "2026-01-01T10:00:02Z",
        "input_tokens": 15000,
        "output_tokens": 400,
        "cached_tokens": 12000,
        "cost_usd": 0.0125,
        "latency_ms": 2300.0,
    },
    {
        "step": "build",
        "phase": "building",
        "attempt": 1,
        "call": 1,
        "try_number": 1,
        "provider": "scripted",
        "model": "demo",
        "outcome": None,
        "started_at": "2026-01-01T10:00:05Z",
        "input_tokens": None,
        "output_tokens": None,
        "cached_tokens": None,
        "cost_usd": None,
        "latency_ms": None,
    },
]


def text(renderable: RenderableType) -> list[str]:
    console = Console(width=200, record=True, force_terminal=True)
    console.print(renderable)
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


def row(lines: list[str], *starts: str) -> str:
    return next(line for line in lines if line.startswith(" ".join(starts)))


def test_show_gives_the_cost_the_models_and_every_model_call() -> None:
    lines = text(job_detail(JOB, CALLS))

    assert row(lines, "cost") == "cost $0.1125 of $2.50 budget (3 model call(s), 1 failed, 1 open)"
    assert row(lines, "models") == (
        "models planner: anthropic:claude-sonnet-4-5, then openai:gpt-4.1"
    )
    assert row(lines, "1 planning plan ok") == "1 planning plan ok openai:gpt-4.1 three endpoints"
    assert row(lines, "1 building build") == "1 building build ok [scripted model] wrote 2 files"
    assert row(lines, "1 testing run_tests") == (
        "1 testing run_tests failed [4 passed, 1 failed, 0 errors of 5] 1 test failed"
    )
    assert "model calls" in lines
    assert row(lines, "planning/plan 1 1 1") == (
        "planning/plan 1 1 1 anthropic:claude-sonnet-4-5 error 0 0 0 $0.00 90 ms 429 rate limited"
    )
    assert row(lines, "planning/plan 1 1 2") == (
        "planning/plan 1 1 2 openai:gpt-4.1 ok 15,000 400 12,000 $0.0125 2.3 s fallback"
    )
    assert row(lines, "building/build 1 1 1") == (
        "building/build 1 1 1 scripted:demo [scripted model] running - - - - -"
    )


def test_a_job_without_model_calls_says_it_uses_the_default_models() -> None:
    job = {**JOB, "routes": {}, "cost_usd": 0, "model_calls": {"count": 0}, "steps": []}

    lines = text(job_detail(job))

    assert row(lines, "cost") == "cost $0.00 of $2.50 budget (0 model call(s))"
    assert row(lines, "models") == "models the deployment's defaults"
    assert "model calls" not in lines


def test_an_older_gateway_without_costs_still_shows_the_job() -> None:
    job = {k: v for k, v in JOB.items() if k not in ("cost_usd", "routes", "model_calls")}

    lines = text(job_detail(job))

    assert row(lines, "cost") == "cost - of $2.50 budget"
    assert not any(line.startswith("models") for line in lines)


def test_the_job_list_has_each_jobs_cost() -> None:
    now = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)

    lines = text(jobs_table([JOB, {**JOB, "id": "other", "cost_usd": None}], 2, now))

    assert row(lines, JOB["id"]).endswith("testing 1/3 $0.1125 5m")
    assert row(lines, "other").endswith("testing 1/3 - 5m")


def test_an_empty_calls_table_has_its_columns() -> None:
    lines = text(calls_table([]))

    assert any(
        "phase/step attempt call try model outcome in out cached cost took" in line
        for line in lines
    )
