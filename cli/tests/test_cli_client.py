"""Where the CLI finds the gateway and the database: options, the running stack's file,
settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vdo_cli.client import (
    STACK_FILE,
    ClientError,
    database_url,
    gateway_address,
    parse_routes,
    read_stack_file,
    redact_url,
)
from vdo_kernel.settings import Settings


def settings(home: Path, **values: object) -> Settings:
    return Settings.model_validate({"home": home, **values})


def write_stack_file(home: Path, **urls: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / STACK_FILE).write_text(json.dumps(urls), encoding="utf-8")


def test_without_a_stack_file_there_is_none(tmp_path: Path) -> None:
    assert read_stack_file(tmp_path) is None


def test_a_stack_file_gives_the_running_stack_addresses(tmp_path: Path) -> None:
    write_stack_file(
        tmp_path,
        nats_url="nats://127.0.0.1:4333",
        database_url="postgresql://postgres@127.0.0.1:5999/vdo",
        gateway_url="http://127.0.0.1:8123/",
    )

    stack = read_stack_file(tmp_path)

    assert stack is not None
    assert stack.nats_url == "nats://127.0.0.1:4333"
    assert gateway_address(None, settings(tmp_path)).url == "http://127.0.0.1:8123"
    assert gateway_address(None, settings(tmp_path)).source == str(tmp_path / STACK_FILE)
    assert database_url(settings(tmp_path)) == "postgresql://postgres@127.0.0.1:5999/vdo"


def test_an_unreadable_stack_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / STACK_FILE).write_text("{half a", encoding="utf-8")

    with pytest.raises(ClientError, match=STACK_FILE):
        read_stack_file(tmp_path)


def test_an_explicit_gateway_url_wins_over_the_stack_file(tmp_path: Path) -> None:
    write_stack_file(tmp_path, gateway_url="http://127.0.0.1:8123")

    address = gateway_address("http://gateway.example:9000/", settings(tmp_path))

    assert address.url == "http://gateway.example:9000"


def test_without_a_stack_the_gateway_is_at_the_configured_host_and_port(tmp_path: Path) -> None:
    assert gateway_address(None, settings(tmp_path, port=8600)).url == "http://127.0.0.1:8600"
    # A server listening on every interface is reached on loopback.
    wildcard = settings(tmp_path, host="0.0.0.0", port=8600)
    assert gateway_address(None, wildcard).url == "http://127.0.0.1:8600"
    assert gateway_address(None, settings(tmp_path, host="::", port=1)).url == "http://[::1]:1"


def test_the_configured_database_wins_over_the_stack_file(tmp_path: Path) -> None:
    write_stack_file(tmp_path, database_url="postgresql://postgres@127.0.0.1:5999/vdo")
    configured = settings(tmp_path, database_url="postgresql://db.example/vdo")

    assert database_url(configured) == "postgresql://db.example/vdo"


def test_no_database_anywhere_says_to_start_the_stack(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="vdo up"):
        database_url(settings(tmp_path))


def test_a_password_in_a_url_is_never_shown() -> None:
    assert redact_url("postgresql://vdo:s3cret@db:5432/vdo") == "postgresql://vdo:***@db:5432/vdo"
    assert redact_url("postgresql://postgres@db/vdo") == "postgresql://postgres@db/vdo"


def test_model_options_become_routes_by_phase() -> None:
    routes = parse_routes(
        [
            "planner=anthropic:claude-sonnet-4-5,openai:gpt-4.1",
            " Reviewer = gemini:gemini-2.5-pro ",
            "builder=openai:org/model:tag",
        ]
    )

    assert routes == {
        "planner": ["anthropic:claude-sonnet-4-5", "openai:gpt-4.1"],
        # The gateway checks providers (and takes gemini as google).
        "reviewer": ["gemini:gemini-2.5-pro"],
        "builder": ["openai:org/model:tag"],
    }
    assert parse_routes([]) == {}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["anthropic:claude-sonnet-4-5"], "is not PHASE=provider:model"),
        (["=openai:gpt-4.1"], "is not PHASE=provider:model"),
        (["sandbox=openai:gpt-4.1"], "'sandbox' is not a phase with a model: planner, builder"),
        (["planner=gpt-4.1"], "planner: 'gpt-4.1' is not provider:model"),
        (["planner="], "planner: '' is not provider:model"),
        (["planner=openai:gpt-4.1,"], "planner: '' is not provider:model"),
        (["tester=openai:"], "tester: 'openai:' is not provider:model"),
        (["planner=a:b", "planner=c:d"], "planner is given twice"),
    ],
)
def test_model_options_that_cannot_be_routes_are_named(values: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_routes(values)
