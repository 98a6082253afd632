"""Reading replies as JSON documents and saying precisely what is wrong with them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vdo_models.phases import PLAN, REVIEW
from vdo_models.structured import find_json_object, parse_document, schema_problems

GOOD_PLAN: dict[str, Any] = {
    "summary": "A word-count tool.",
    "runtime": "python3",
    "files": ["wc.py", "test_wc.py"],
    "dependencies": [],
    "steps": ["write wc.py", "write the tests"],
    "test_strategy": "pytest",
    "run_command": ["python3", "wc.py", "--help"],
    "ready_check": {"kind": "command", "command": ["python3", "wc.py", "--help"]},
}


def plan(**changes: Any) -> dict[str, Any]:
    return {**GOOD_PLAN, **changes}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD_PLAN),
        f"```json\n{json.dumps(GOOD_PLAN, indent=2)}\n```",
        f"```\n{json.dumps(GOOD_PLAN)}\n```\n",
        f"Here is the plan:\n\n{json.dumps(GOOD_PLAN)}\n\nLet me know if {{anything}} changes.",
        f"Sure! ```json\n{json.dumps(GOOD_PLAN)}\n``` Hope that helps.",
    ],
)
def test_a_valid_document_is_found_wherever_the_reply_puts_it(text: str) -> None:
    assert parse_document(text, PLAN) == (GOOD_PLAN, None)


def test_prose_with_braces_before_the_object_is_skipped() -> None:
    text = 'I used {braces} in prose first. {"verdict": "approve", "summary": "ok", "comments": []}'
    assert find_json_object(text) == {"verdict": "approve", "summary": "ok", "comments": []}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"summary": "x", "files": [', "the reply is not valid JSON: Expecting value"),
        ("```json\n{'single': 'quotes'}\n```", "the reply is not valid JSON: Expecting property"),
        ("[1, 2, 3]", "the reply is JSON but an array, not an object"),
        ("I cannot do that.", "the reply contains no JSON object"),
        ("", "the reply contains no JSON object"),
    ],
)
def test_what_is_not_a_json_object_is_said(text: str, error: str) -> None:
    document, reason = parse_document(text, PLAN)
    assert document is None
    assert reason is not None
    assert reason.startswith(error)


def test_schema_problems_name_the_place_and_the_problem() -> None:
    document = plan(runtime="node", files=[], extra=1)
    del document["steps"]
    problems = schema_problems(document, PLAN)
    assert problems == [
        "$: 'steps' is a required property",
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.files: [] should be non-empty",
        "$.runtime: 'node' is not one of ['python3']",
    ]


def test_a_discriminated_shape_reports_the_problems_of_the_shape_meant() -> None:
    document = plan(ready_check={"kind": "port", "port": 80})
    _, reason = parse_document(json.dumps(document), PLAN)
    assert reason == "$.ready_check.port: 80 is less than the minimum of 1024"

    document = plan(ready_check={"kind": "command", "command": []})
    _, reason = parse_document(json.dumps(document), PLAN)
    assert reason == "$.ready_check.command: [] should be non-empty"


def test_an_unknown_discriminator_lists_the_allowed_values() -> None:
    document = plan(ready_check={"kind": "http", "url": "/"})
    _, reason = parse_document(json.dumps(document), PLAN)
    assert reason == (
        '$.ready_check.kind: must be one of "port", "command", "stays_up", "output" '
        "(it matches none of the 4 allowed shapes)"
    )


def test_long_values_are_shortened_in_messages() -> None:
    document = plan(summary="x" * 5000)
    [problem] = schema_problems(document, PLAN)
    assert problem.startswith('$.summary: "xxxx')
    assert problem.endswith("is too long")
    assert len(problem) < 120


def test_paths_into_arrays_and_odd_keys() -> None:
    review = {
        "verdict": "approve",
        "summary": "ok",
        "comments": [{"path": "a.py", "comment": "fine"}, {"path": "b.py", "comment": ""}],
    }
    assert schema_problems(review, REVIEW) == ["$.comments[1].comment: '' should be non-empty"]
    schema = {"type": "object", "properties": {"a-b": {"type": "integer"}}}
    assert schema_problems({"a-b": "1"}, schema) == ["$[\"a-b\"]: '1' is not of type 'integer'"]


def test_many_problems_are_capped() -> None:
    problems = schema_problems({}, PLAN, limit=3)
    assert problems[:3] == [
        "$: 'summary' is a required property",
        "$: 'runtime' is a required property",
        "$: 'files' is a required property",
    ]
    assert problems[3] == "and 5 more problems"
