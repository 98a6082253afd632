"""The fake provider itself: keys, error formats, the control API, and running standalone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.fakeprovider import FakeProvider, Fault, Reply

from vdo_models.interface import Message, ModelRequest
from vdo_models.providers import make_client

ROOT = Path(__file__).resolve().parents[2]

COMPLETIONS = {
    "anthropic": ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": []}),
    "openai": ("/v1/chat/completions", {"model": "m", "messages": []}),
    "google": ("/v1beta/models/m:generateContent", {"contents": []}),
}


@pytest.mark.parametrize("provider", ["anthropic", "openai", "google"])
def test_a_request_without_a_key_gets_401_in_the_providers_format(
    fake: FakeProvider, provider: str
) -> None:
    path, body = COMPLETIONS[provider]
    response = httpx.post(fake.url + path, json=body)
    assert response.status_code == 401
    error = response.json()
    if provider == "anthropic":
        assert error["type"] == "error"
        assert error["error"]["type"] == "authentication_error"
    elif provider == "openai":
        assert error["error"]["code"] == "invalid_api_key"
    else:
        assert error["error"]["status"] == "UNAUTHENTICATED"
    [recorded] = fake.requests(provider)
    assert recorded.status == 401


def test_each_providers_key_header_is_accepted(fake: FakeProvider) -> None:
    headers = {
        "anthropic": {"x-api-key": "k", "anthropic-version": "2023-06-01"},
        "openai": {"authorization": "Bearer k"},
        "google": {"x-goog-api-key": "k"},
    }
    for provider, (path, body) in COMPLETIONS.items():
        response = httpx.post(fake.url + path, json=body, headers=headers[provider])
        assert response.status_code == 200, provider
    assert httpx.post(fake.url + COMPLETIONS["google"][0] + "?key=k", json={}).status_code == 200
    assert httpx.get(fake.url + "/v1/models", headers=headers["anthropic"]).json()["data"]
    assert httpx.get(fake.url + "/v1/models", headers=headers["openai"]).json()["object"] == "list"
    assert httpx.get(fake.url + "/v1beta/models?key=k").json()["models"]


def test_the_queue_is_per_provider_and_in_order_then_the_responder(fake: FakeProvider) -> None:
    fake.push("openai", Reply(text="first"), Fault.http(418, "teapot"))
    fake.set_responder(lambda provider, model, body: Reply(text=f"{provider}/{model}"))
    headers = {"authorization": "Bearer k"}
    path, body = COMPLETIONS["openai"]

    texts = []
    for _ in range(3):
        response = httpx.post(fake.url + path, json=body, headers=headers)
        texts.append(response.status_code)
        if response.status_code == 200:
            texts.append(response.json()["choices"][0]["message"]["content"])
    assert texts == [200, "first", 418, 200, "openai/m"]
    assert fake.pending("openai") == 0


def test_the_control_api(fake: FakeProvider) -> None:
    control = fake.url + "/_control"
    script = {
        "provider": "anthropic",
        "items": [
            {"reply": {"text": "scripted", "output_tokens": 3}},
            {"fault": {"kind": "rate_limited", "retry_after": 4}},
        ],
    }
    assert httpx.post(control + "/script", json=script).json() == {"pending": 2}
    assert httpx.post(control + "/default", json={"reply": {"text": "default"}}).json()["ok"]
    bad = httpx.post(control + "/script", json={"provider": "nobody", "items": []})
    assert bad.status_code == 400
    assert "unknown provider" in bad.json()["error"]

    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    path, body = COMPLETIONS["anthropic"]
    first = httpx.post(fake.url + path, json=body, headers=headers)
    second = httpx.post(fake.url + path, json=body, headers=headers)
    third = httpx.post(fake.url + path, json=body, headers=headers)
    assert first.json()["content"][0]["text"] == "scripted"
    assert (second.status_code, second.headers["retry-after"]) == (429, "4")
    assert third.json()["content"][0]["text"] == "default"

    assert httpx.post(control + "/keys", json={"provider": "anthropic", "key": "other"}).json()
    assert httpx.post(fake.url + path, json=body, headers=headers).status_code == 401

    recorded = httpx.get(control + "/requests", params={"provider": "anthropic"}).json()
    assert [r["status"] for r in recorded] == [200, 429, 200, 401]
    assert recorded[0]["headers"]["x-api-key"] == "k"
    assert recorded[0]["body"] == body
    assert httpx.post(control + "/reset").json()["ok"]
    assert httpx.get(control + "/requests").json() == []


@pytest.fixture
def standalone() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeprovider", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line.startswith("fake provider listening on "), line
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


async def test_a_standalone_server_is_driven_through_its_control_api(
    standalone: str, key: str
) -> None:
    url = standalone
    script = {"provider": "google", "items": [{"reply": {"text": "from afar", "deltas": 3}}]}
    async with httpx.AsyncClient() as http:
        await http.get(url + "/_control/health")
        (await http.post(url + "/_control/script", json=script)).raise_for_status()
        client = make_client("google", {"GEMINI_API_KEY": key, "GOOGLE_GEMINI_BASE_URL": url})
        pieces: list[str] = []

        async def sink(piece: str) -> None:
            pieces.append(piece)

        try:
            request = ModelRequest(phase="reviewer", system="", messages=(Message("user", "hi"),))
            reply = await client.complete("gemini-2.5-pro", request, sink)
        finally:
            await client.close()
        recorded = (await http.get(url + "/_control/requests")).json()

    assert reply.text == "from afar"
    assert len(pieces) == 3
    assert recorded[0]["headers"]["x-goog-api-key"] == key
    assert recorded[0]["model"] == "gemini-2.5-pro"
