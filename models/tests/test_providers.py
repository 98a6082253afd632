"""The SDK adapters against the fake provider: streaming, usage, request shape, and failures."""

from __future__ import annotations

import time
import traceback
from dataclasses import replace
from typing import Any

import pytest
from tests.fakeprovider import FakeProvider, Fault, Reply

from vdo_models.interface import Message, ModelClient, ModelRequest, ProviderError
from vdo_models.phases import PLAN
from vdo_models.providers import configured_providers, make_client, make_clients
from vdo_models.providers.google import gemini_schema
from vdo_models.structured import parse_document

MODEL = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1", "google": "gemini-2.5-pro"}


def request(json_schema: dict[str, Any] | None = None, *messages: Message) -> ModelRequest:
    return ModelRequest(
        phase="planner",
        system="You plan programs.",
        messages=messages or (Message("user", "Plan a word-count tool."),),
        max_output_tokens=1000,
        json_schema=json_schema,
    )


def key_header(provider: str, headers: dict[str, str]) -> str:
    if provider == "google":
        return headers["x-goog-api-key"]
    return headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")


class Received:
    """An `on_text` sink that notes when each piece arrived."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.at: list[float] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        self.at.append(time.perf_counter())


async def test_a_reply_is_streamed_piece_by_piece(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    text = "The plan has three steps: read, count, print."
    fake.push(provider, Reply(text=text, deltas=5, delta_delay=0.15))
    received = Received()

    reply = await client.complete(MODEL[provider], request(), received)

    assert reply.text == text
    assert len(received.pieces) == 5
    assert "".join(received.pieces) == text
    [sent] = fake.requests(provider)
    assert sent.stream
    # Each piece reached on_text after the server wrote it and before the next was written.
    for i, arrived in enumerate(received.at):
        assert arrived >= sent.delta_sent_at[i]
        if i + 1 < len(sent.delta_sent_at):
            assert arrived < sent.delta_sent_at[i + 1]
    assert received.at[-1] - received.at[0] >= 0.4


async def test_usage_is_the_providers_own_count(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    writes = 300 if provider == "anthropic" else 0
    fake.push(
        provider,
        Reply(
            text="ok",
            input_tokens=1200,
            output_tokens=80,
            cached_tokens=900,
            cache_write_tokens=writes,
        ),
    )

    reply = await client.complete(MODEL[provider], request())

    assert reply.usage.input_tokens == 1200
    assert reply.usage.output_tokens == 80
    assert reply.usage.cached_input_tokens == 900
    assert reply.usage.cache_write_tokens == writes
    assert reply.model == MODEL[provider]
    assert reply.stop_reason in ("end_turn", "stop", "STOP")


async def test_the_key_system_prompt_and_messages_are_sent(
    provider: str, client: ModelClient, fake: FakeProvider, key: str
) -> None:
    messages = (
        Message("user", "The plan so far.", cache=True),
        Message("assistant", "Noted."),
        Message("user", "Now the steps."),
    )
    await client.complete(MODEL[provider], request(None, *messages))

    [sent] = fake.requests(provider)
    assert key_header(provider, sent.headers) == key
    body = sent.body
    if provider == "anthropic":
        assert body["system"] == [
            {"type": "text", "text": "You plan programs.", "cache_control": {"type": "ephemeral"}}
        ]
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        marked = ["cache_control" in m["content"][0] for m in body["messages"]]
        assert marked == [True, False, False]
        assert body["max_tokens"] == 1000
    elif provider == "openai":
        assert body["messages"][0] == {"role": "system", "content": "You plan programs."}
        assert [m["content"] for m in body["messages"][1:]] == [m.content for m in messages]
        assert body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 1000  # not api.openai.com: the widely known parameter
    else:
        assert body["systemInstruction"]["parts"] == [{"text": "You plan programs."}]
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["generationConfig"]["maxOutputTokens"] == 1000


async def test_anthropic_marks_at_most_three_messages_for_caching(
    env: dict[str, str], fake: FakeProvider
) -> None:
    client = make_client("anthropic", env)
    messages = tuple(Message("user", f"context {i}", cache=True) for i in range(5))
    try:
        await client.complete("claude-sonnet-4-6", request(None, *messages))
    finally:
        await client.close()
    [sent] = fake.requests("anthropic")
    marked = ["cache_control" in m["content"][0] for m in sent.body["messages"]]
    # Four breakpoints at most per request: the system prompt and the last three marked.
    assert marked == [False, False, True, True, True]


async def test_json_output_is_asked_for(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    await client.complete(MODEL[provider], request(PLAN))

    [sent] = fake.requests(provider)
    body = sent.body
    if provider == "anthropic":
        schema = body["output_config"]["format"]["schema"]
        assert body["output_config"]["format"]["type"] == "json_schema"
        assert schema["required"] == PLAN["required"]
    elif provider == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == PLAN
        assert body["response_format"]["json_schema"]["strict"] is False
    else:
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseJsonSchema"] == gemini_schema(PLAN)


async def test_a_json_option_the_provider_rejects_is_dropped_and_remembered(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Fault.http(400, "response format not supported"))

    await client.complete(MODEL[provider], request(PLAN))
    await client.complete(MODEL[provider], request(PLAN))

    rejected, retried, later = (r.body for r in fake.requests(provider))
    if provider == "anthropic":
        assert "output_config" in rejected
        assert "output_config" not in retried
        assert "output_config" not in later
    elif provider == "openai":
        assert rejected["response_format"]["type"] == "json_schema"
        assert retried["response_format"] == {"type": "json_object"}
        assert later["response_format"] == {"type": "json_object"}
    else:
        assert "responseJsonSchema" in rejected["generationConfig"]
        for body in (retried, later):
            assert body["generationConfig"]["responseMimeType"] == "application/json"
            assert "responseJsonSchema" not in body["generationConfig"]


async def test_a_400_that_is_not_about_json_is_raised_after_the_weaker_tries(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, *[Fault.http(400, "prompt is too long")] * 3)

    with pytest.raises(ProviderError) as caught:
        await client.complete(MODEL[provider], request(PLAN))

    assert caught.value.kind == "invalid_request"
    assert caught.value.status == 400
    assert not caught.value.retryable


def test_gemini_schema_keeps_what_gemini_accepts() -> None:
    converted = gemini_schema(PLAN)
    assert converted is not None
    assert converted["properties"]["summary"] == {"type": "string"}  # lengths dropped
    kinds = [b["properties"]["kind"] for b in converted["properties"]["ready_check"]["oneOf"]]
    assert kinds == [
        {"enum": ["port"]},
        {"enum": ["command"]},
        {"enum": ["stays_up"]},
        {"enum": ["output"]},
    ]
    assert converted["additionalProperties"] is False
    assert gemini_schema({"allOf": [{"type": "object"}]}) is None
    assert gemini_schema({"type": "object", "properties": {"x": {"not": {}}}}) is None
    assert gemini_schema({"enum": [True, False]}) is None


async def test_gemini_gets_json_without_a_schema_it_cannot_take(
    env: dict[str, str], fake: FakeProvider
) -> None:
    client = make_client("google", env)
    try:
        await client.complete("gemini-2.5-pro", request({"allOf": [{"type": "object"}]}))
    finally:
        await client.close()
    config = fake.requests("google")[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in config


async def test_malformed_json_is_returned_as_text_for_the_caller_to_reject(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Reply(text='{"summary": "count words", "files": ['))

    reply = await client.complete(MODEL[provider], request(PLAN))

    assert reply.text == '{"summary": "count words", "files": ['
    document, error = parse_document(reply.text, PLAN)
    assert document is None
    assert error is not None
    assert error.startswith("the reply is not valid JSON")


FAULTS = [
    pytest.param(Fault.rate_limited(retry_after=2.5), "rate_limited", True, 429, id="429"),
    pytest.param(Fault.server_error(500), "server_error", True, 500, id="500"),
    pytest.param(Fault.server_error(503), "server_error", True, 503, id="503"),
    pytest.param(Fault.overloaded(), "server_error", True, None, id="overloaded"),
    pytest.param(Fault.stream_cut(after_deltas=2), "stream_cut", True, None, id="stream_cut"),
    pytest.param(Fault.stream_error(529), "server_error", True, None, id="stream_error"),
    pytest.param(Fault.stream_error(429), "rate_limited", True, 429, id="stream_error_429"),
    pytest.param(Fault.refusal(), "refused", False, None, id="refusal"),
    pytest.param(Fault.http(404, "no such model"), "invalid_request", False, 404, id="404"),
    pytest.param(Fault.http(401, "bad key"), "auth", False, 401, id="401"),
    pytest.param(Fault.http(403, "forbidden"), "auth", False, 403, id="403"),
]


@pytest.mark.parametrize(("fault", "kind", "retryable", "status"), FAULTS)
async def test_each_fault_becomes_the_right_provider_error(
    provider: str,
    client: ModelClient,
    fake: FakeProvider,
    key: str,
    fault: Fault,
    kind: str,
    retryable: bool,
    status: int | None,
) -> None:
    fake.push(provider, fault)
    received = Received()

    with pytest.raises(ProviderError) as caught:
        await client.complete(MODEL[provider], request(), received)

    error = caught.value
    assert (error.kind, error.retryable) == (kind, retryable)
    if status is not None:
        assert error.status == status
    if fault.kind == "status" and fault.status == 529:
        assert error.status == (529 if provider == "anthropic" else 503)
    if fault.retry_after is not None:
        assert error.retry_after == pytest.approx(fault.retry_after)
    if fault.kind in ("stream_cut", "stream_error"):
        assert len(received.pieces) == 2  # what arrived before the cut was streamed
    assert key not in str(error)


async def test_a_provider_silent_for_the_idle_timeout_is_a_retryable_timeout(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Fault.timeout(seconds=5))
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await client.complete(MODEL[provider], replace(request(), idle_timeout_seconds=0.3))
    assert (caught.value.kind, caught.value.retryable) == ("timeout", True)
    assert "stalled: waited 0.3s and no reply began" in str(caught.value)
    assert time.monotonic() - started < 3


async def test_the_sdks_own_timeout_never_ends_a_stream_before_the_idle_timeout(
    provider: str, env: dict[str, str], fake: FakeProvider
) -> None:
    """A client made with a short HTTP timeout still waits out a quiet spell shorter than the
    request's idle timeout."""
    fake.push(provider, Reply(text='{"ok": true}', pause=1.0, pause_after=1))
    client = make_client(provider, env, timeout=0.3)
    try:
        reply = await client.complete(MODEL[provider], replace(request(), idle_timeout_seconds=2))
    finally:
        await client.close()
    assert reply.text == '{"ok": true}'


async def test_openai_content_filter_is_a_refusal(env: dict[str, str], fake: FakeProvider) -> None:
    fake.push("openai", Reply(text="", stop_reason="content_filter"))
    client = make_client("openai", env)
    try:
        with pytest.raises(ProviderError) as caught:
            await client.complete("gpt-4.1", request())
    finally:
        await client.close()
    assert (caught.value.kind, caught.value.retryable) == ("refused", False)


async def test_a_wrong_key_is_refused_and_never_shown(
    provider: str, env: dict[str, str], fake: FakeProvider, key: str
) -> None:
    # A provider that echoes the key it got in its error message (some mask it, not all).
    fake.push(provider, Fault.http(401, f"Incorrect API key provided: {key}"))
    client = make_client(provider, env)
    try:
        with pytest.raises(ProviderError) as echoed:
            await client.complete(MODEL[provider], request())
        fake.require_key(provider, "sk-the-right-one")
        with pytest.raises(ProviderError) as refused:
            await client.complete(MODEL[provider], request())
        with pytest.raises(ProviderError) as checked:
            await client.check()
    finally:
        await client.close()

    for caught in (echoed, refused, checked):
        error = caught.value
        assert (error.kind, error.retryable, error.status) == ("auth", False, 401)
        shown = "".join(traceback.format_exception(error)) + repr(error) + str(error.args)
        assert key not in shown
    assert "[redacted]" in str(echoed.value)
    assert key not in repr(client)
    assert [r.status for r in fake.requests(provider)] == [401, 401, 401]


async def test_check_lists_the_models(
    provider: str, client: ModelClient, fake: FakeProvider, key: str
) -> None:
    detail = await client.check()
    assert detail.startswith(f"{provider} at http://127.0.0.1:")
    assert MODEL[provider] in detail
    assert key not in detail


async def test_an_unreachable_provider_is_a_retryable_error(provider: str, key: str) -> None:
    env = {
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "OPENAI_API_KEY": key,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "GEMINI_API_KEY": key,
        "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9",
    }
    client = make_client(provider, env)
    try:
        with pytest.raises(ProviderError) as caught:
            await client.complete(MODEL[provider], request())
    finally:
        await client.close()
    assert (caught.value.kind, caught.value.retryable) == ("unreachable", True)
    assert key not in str(caught.value)


def test_configured_providers_are_those_with_a_key() -> None:
    assert configured_providers({}) == ()
    assert configured_providers({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": " "}) == ("openai",)
    assert configured_providers({"GEMINI_API_KEY": "x"}) == ("google",)
    assert configured_providers({"GOOGLE_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}) == (
        "anthropic",
        "google",
    )


async def test_make_client_without_a_key_names_the_variable(provider: str, key: str) -> None:
    with pytest.raises(ProviderError) as caught:
        make_client(provider, {"SOMETHING_ELSE": key})
    assert caught.value.kind == "auth"
    assert "_API_KEY" in str(caught.value)
    assert key not in str(caught.value)
    assert await _closed(make_clients({})) == []


async def _closed(clients: dict[str, ModelClient]) -> list[str]:
    for client in clients.values():
        await client.close()
    return list(clients)


async def test_make_clients_builds_one_per_configured_provider(
    env: dict[str, str], key: str
) -> None:
    clients = make_clients(env)
    assert [c.provider for c in clients.values()] == ["anthropic", "openai", "google"]
    assert all(key not in repr(c) for c in clients.values())
    await _closed(clients)


def test_unknown_providers_have_no_adapter() -> None:
    with pytest.raises(ProviderError, match="no SDK adapter"):
        make_client("scripted", {})


STOP_AT_THE_LIMIT = {"anthropic": "max_tokens", "openai": "length", "google": "MAX_TOKENS"}


async def test_a_reply_cut_at_the_output_limit_is_marked_truncated(
    provider: str, client: ModelClient, fake: FakeProvider
) -> None:
    fake.push(provider, Reply(text='{"plan": "cut sh', truncated=True), Reply(text="{}"))
    cut = await client.complete(MODEL[provider], request())
    whole = await client.complete(MODEL[provider], request())
    assert (cut.truncated, cut.stop_reason, cut.text) == (
        True,
        STOP_AT_THE_LIMIT[provider],
        '{"plan": "cut sh',
    )
    assert not whole.truncated
