"""A whole running stack for tests: every service as its own process, supervised, on real
NATS and PostgreSQL, driven through the gateway's HTTP API as a user would (as its first admin:
with the token VDO_ADMIN_TOKEN gives, unless a test asks for a generated one)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from vdo_cli.embedded import free_port
from vdo_cli.stack import ALL_SERVICES, Stack
from vdo_kernel.bootstrap import read_token_file
from vdo_kernel.settings import Settings

# A job the built-in scripted model does for real (it refuses what is not one of its demos).
WORD_COUNT = "a command-line word-count tool"
# The first admin's token of every stack the tests start (unless one asks for a generated one):
# the same everywhere, so a stack restored from another's backup answers to it too.
ADMIN_TOKEN = "vdo_test-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass
class RunningStack:
    stack: Stack
    log: list[str] = field(default_factory=list)
    # The admin token to act with when the stack was given none and keeps none (a deployment
    # restored from another's backup answers to that one's tokens).
    admin_token: str | None = None

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def nats_url(self) -> str:
        return self.stack.nats_url

    @property
    def token(self) -> str:
        """The first admin's token: VDO_ADMIN_TOKEN's, or the one the first start kept."""
        given = self.stack.settings.admin_token
        token = given.get_secret_value() if given else read_token_file(self.stack.home)
        token = token or self.admin_token
        assert token, f"no admin token for the stack in {self.stack.home}"
        return token

    def api(self, token: str | None = None) -> httpx.Client:
        """A client of the gateway, as the first admin (or with another token)."""
        return httpx.Client(
            base_url=self.gateway_url,
            timeout=10,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )

    def submit(self, title: str = "demo", description: str = WORD_COUNT, **extra: Any) -> str:
        with self.api() as api:
            response = api.post(
                "/api/jobs", json={"title": title, "description": description, **extra}
            )
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        with self.api() as api:
            response = api.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.api() as api:
            response = api.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        body = response.json()
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items

    def wait_for(
        self,
        job_id: str,
        predicate: Callable[[list[dict[str, Any]]], bool] | None = None,
        timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Wait until the job's history satisfies `predicate` (default: the job ended)."""
        predicate = predicate or (lambda events: any(e["type"] in TERMINAL_EVENTS for e in events))
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = self.events(job_id)
            if predicate(events):
                return events
            time.sleep(0.1)
        tail = "\n".join(self.log[-60:])
        raise AssertionError(
            f"job {job_id} did not get there in {timeout}s; its history: "
            f"{[(e['type'], e['data'].get('step')) for e in events]}\nstack log tail:\n{tail}"
        )


TERMINAL_EVENTS = {"JobCompleted", "JobFailed", "JobCancelled"}
QUEUE_ROOM = 64


PROVIDER_VARIABLES = ("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any model provider's key or address (so a stack under
    test runs on the scripted model unless a test points it at the fake provider), plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PROVIDER_VARIABLES)}
    env.update(extra)
    return env


def start_stack(
    home: Path,
    database_url: str | None,
    *,
    environ: dict[str, str] | None = None,
    replicas: dict[str, int] | None = None,
    **settings: Any,
) -> RunningStack:
    log: list[str] = []
    config = Settings(
        home=home,
        port=free_port(),
        database_url=database_url,
        ack_wait_seconds=settings.pop("ack_wait_seconds", 3.0),
        log_format="json",
        admin_token=settings.pop("admin_token", ADMIN_TOKEN),
        # Room for every job a test submits at once (they are all the first admin's), unless a
        # test of the queue sets its own limits.
        max_running_jobs=settings.pop("max_running_jobs", QUEUE_ROOM),
        max_running_jobs_per_user=settings.pop("max_running_jobs_per_user", QUEUE_ROOM),
        **settings,
    )
    stack = Stack(
        config,
        services=ALL_SERVICES,
        durable=False,
        echo=log.append,
        environ=clean_environment() if environ is None else environ,
        replicas=replicas,
    )
    running = RunningStack(stack=stack, log=log)
    try:
        stack.start(timeout=60)
    except Exception:
        stack.stop()
        raise AssertionError("stack did not start:\n" + "\n".join(log[-80:])) from None
    return running
