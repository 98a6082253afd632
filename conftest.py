"""Shared test fixtures: real PostgreSQL and NATS, started embedded on free ports.

Each test gets its own database on the session's PostgreSQL server, so tests never see each
other's events; NATS streams are per test too (a fresh server per test module is cheap).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from tests.harness import RunningStack, start_stack

from vdo_cli.embedded import EmbeddedNats, EmbeddedPostgres
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_sandbox.backend import SandboxUnavailableError
from vdo_sandbox.docker_backend import connect
from vdo_sandbox.image import ImageBuildError, build_image, image_exists


def pytest_configure(config: pytest.Config) -> None:
    """Each test session gets a temporary directory of its own, outside pytest's shared
    per-user one: starting a session resets that one's permissions, which would lock the
    embedded PostgreSQL of a session already running (it runs as its own user) out of its data
    directory."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="vdo-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), durable=False)
    server.start()
    yield server
    server.stop()


def create_database(server: EmbeddedPostgres) -> str:
    """A fresh, empty database on the test server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def drop_database(server: EmbeddedPostgres, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_database(postgres_server: EmbeddedPostgres) -> Iterator[Callable[[], str]]:
    """Fresh, empty databases on demand (a second deployment to restore or migrate into)."""
    made: list[str] = []

    def make() -> str:
        made.append(create_database(postgres_server))
        return made[-1]

    yield make
    for url in made:
        drop_database(postgres_server, url)


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    """A fresh, empty database for one test."""
    return make_database()


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    """The event store on the test's own database."""
    job_store = JobStore(database_url)
    yield job_store
    job_store.close()


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
    url = create_database(postgres_server)
    running = start_stack(tmp_path_factory.mktemp("stack"), url)
    yield running
    running.stack.stop()
    drop_database(postgres_server, url)


# ---- the Docker engine and the sandbox image (both sandbox backends are tested) ----------

SANDBOX_IMAGE: str = Settings.model_fields["sandbox_image_python"].default
SETUP_HINT = "install docker.io and start dockerd (.ci/run does this)"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local Docker engine (closed at the end of the session)."""
    try:
        client = connect(timeout=120)
    except SandboxUnavailableError as error:
        pytest.fail(f"{error}; {SETUP_HINT}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_image(docker_client: Any) -> str:
    """The sandbox image's tag; built (a few minutes, once) when the engine lacks it."""
    if not image_exists(docker_client, SANDBOX_IMAGE):
        try:
            build_image(SANDBOX_IMAGE)
        except ImageBuildError as error:
            pytest.fail(f"could not build {SANDBOX_IMAGE}: {error}", pytrace=False)
    return SANDBOX_IMAGE
