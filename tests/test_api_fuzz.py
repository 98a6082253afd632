"""The gateway's whole API fuzzed from its own OpenAPI schema (schemathesis): whatever a client
sends, no answer is a server error, and a request the gateway refuses changes nothing in the
store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from conftest import create_database, drop_database
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN

from vdo_cli.embedded import EmbeddedNats, free_port
from vdo_gateway.app import create_app
from vdo_kernel.bus import connect
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore
from vdo_projector.service import answer_verify_requests

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Gateway:
    def __init__(self, url: str, store: JobStore) -> None:
        self.url = url
        self.store = store


@contextlib.contextmanager
def verify_answered(nats_url: str, database_url: str) -> Iterator[None]:
    """The projector's answer to verify requests (`POST /api/admin/verify`), in a thread of its
    own: without it that endpoint answers 503, as it should with no projector running."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        nc = await connect(nats_url, name="fuzz-projector")
        try:
            await answer_verify_requests(nc, database_url)
            ready.set()
            await stop.wait()
        finally:
            await nc.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="verify")
    thread.start()
    try:
        assert ready.wait(30), "the verify answer did not start"
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, postgres_server: Any) -> Iterator[Gateway]:
    """The gateway alone (no phase services: only requests change the store), served on a real
    port over real PostgreSQL and NATS."""
    home = tmp_path_factory.mktemp("fuzz")
    nats = EmbeddedNats(home / "nats")
    nats.start()
    database_url = create_database(postgres_server)
    store = JobStore(database_url)
    config = Settings(
        database_url=database_url,
        nats_url=f"nats://127.0.0.1:{nats.port}",
        home=home / "gw",
        admin_token=SecretStr(ADMIN_TOKEN),
    )
    # Thousands of requests in a minute: the per-token rate limit is not what is tested here.
    previous = os.environ.get("VDO_RATE_LIMIT_PER_MINUTE")
    os.environ["VDO_RATE_LIMIT_PER_MINUTE"] = "0"
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, name="gateway")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the gateway did not start"
            assert time.monotonic() < deadline, "the gateway did not start in time"
            time.sleep(0.05)
        with verify_answered(nats.url, database_url):
            yield Gateway(f"http://127.0.0.1:{port}", store)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.close()
        nats.stop()
        drop_database(postgres_server, database_url)
        if previous is None:
            os.environ.pop("VDO_RATE_LIMIT_PER_MINUTE", None)
        else:
            os.environ["VDO_RATE_LIMIT_PER_MINUTE"] = previous


def test_no_request_gets_a_server_error_and_a_refused_one_changes_nothing(
    gateway: Gateway,
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 20, "the schema should describe the whole API"
    tried: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            before = gateway.store.max_position()
            response = case.call(
                base_url=gateway.url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, (
                f"{where}: {response.status_code} {response.text[:500]}"
            )
            if response.status_code >= 400:
                content_type = (response.headers.get("content-type") or [""])[0]
                assert content_type.startswith("application/json"), (
                    f"{where}: {response.text[:200]}"
                )
                assert "detail" in response.json(), where
                if case.method.upper() in WRITES:
                    assert gateway.store.max_position() == before, (
                        f"a refused {where} changed the store"
                    )

        check()
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert len(tried) == len(operations)
