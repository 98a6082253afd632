"""Shared test fixtures: real PostgreSQL and NATS, started embedded on free ports.

Each test gets its own database on the session's PostgreSQL server, so tests never see each
other's events; NATS streams are per test too (a fresh server per test module is cheap).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.harness import RunningStack, start_stack

from vdo_cli.embedded import EmbeddedNats, EmbeddedPostgres


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh JetStream server for one test (starts in well under a second)."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def make_stack(tmp_path: Path, database_url: str) -> Iterator[Callable[..., RunningStack]]:
    """A whole stack of one's own (for tests that kill or restart parts of it)."""
    started: list[RunningStack] = []

    def factory(**settings: Any) -> RunningStack:
        running = start_stack(tmp_path / f"home{len(started)}", database_url, **settings)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stack.stop()


@pytest.fixture(scope="module")
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: EmbeddedPostgres
) -> Iterator[RunningStack]:
    """One whole stack shared by a test module (for tests that only drive it)."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    running = start_stack(
        tmp_path_factory.mktemp("stack"),
        f"postgresql://postgres@127.0.0.1:{postgres_server.port}/{name}",
    )
    yield running
    running.stack.stop()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
