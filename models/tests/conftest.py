"""Fixtures for the model clients: the fake provider server, and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from tests.fakeprovider import FakeProvider

from vdo_models.interface import ModelClient
from vdo_models.providers import make_client

KEY = "sk-test-0123456789abcdef"
PROVIDERS = ("anthropic", "openai", "google")


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProvider) -> Iterator[FakeProvider]:
    """The fake provider, with nothing scripted and nothing recorded."""
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def key() -> str:
    """The API key every client is given (tests check it never shows)."""
    return KEY


@pytest.fixture
def env(fake: FakeProvider, key: str) -> dict[str, str]:
    return fake.env(key)


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(provider: str, env: dict[str, str]) -> AsyncIterator[ModelClient]:
    client = make_client(provider, env, timeout=10)
    yield client
    await client.close()
