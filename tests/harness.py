"""A whole running stack for tests: every service as its own process, supervised, on real
NATS and PostgreSQL, driven through the gateway's HTTP API as a user would."""

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
from vdo_kernel.settings import Settings

# A job the built-in scripted model does for real (it refuses what is not one of its demos).
WORD_COUNT = "a command-line word-count tool"


@dataclass
class RunningStack:
    stack: Stack
    log: list[str] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def nats_url(self) -> str:
        return self.stack.nats_url

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, timeout=10)

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
    **settings: Any,
) -> RunningStack:
    log: list[str] = []
    config = Settings(
        home=home,
        port=free_port(),
        database_url=database_url,
        ack_wait_seconds=settings.pop("ack_wait_seconds", 3.0),
        log_format="json",
        **settings,
    )
    stack = Stack(
        config,
        services=ALL_SERVICES,
        durable=False,
        echo=log.append,
        environ=clean_environment() if environ is None else environ,
    )
    running = RunningStack(stack=stack, log=log)
    try:
        stack.start(timeout=60)
    except Exception:
        stack.stop()
        raise AssertionError("stack did not start:\n" + "\n".join(log[-80:])) from None
    return running
