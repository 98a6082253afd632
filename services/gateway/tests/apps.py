"""What the gateway's tests share: the app on a real PostgreSQL and JetStream, clients acting as
users of each role, and jobs run through their steps straight in the store (with real blobs), so
a test says exactly what history it reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import UUID

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from tests.harness import ADMIN_TOKEN

from vdo_gateway.app import create_app
from vdo_gateway.settings import GatewaySettings
from vdo_kernel.accounts import Role, Token, User, new_token
from vdo_kernel.blobs import BlobStore
from vdo_kernel.domain import Job, Outcome
from vdo_kernel.settings import Settings
from vdo_kernel.store import JobStore


@asynccontextmanager
async def running_app(
    settings: Settings, gateway_settings: GatewaySettings | None = None
) -> AsyncIterator[FastAPI]:
    """The gateway app with its resources open (its first admin made with ADMIN_TOKEN)."""
    app = create_app(
        settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}), gateway_settings
    )
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
    """A client of the app, acting with the token (the first admin's by default)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    )


def add_user(store: JobStore, name: str, role: Role) -> str:
    """A user of that role and a token of theirs (returned), straight in the store."""
    user = User.add(name=name, role=role, by="admin")
    token = new_token()
    store.save(user, Token.create(token, user=user, name="tests", by="admin"))
    return token


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Attempt:
    """What one attempt writes, and how its verdicts go."""

    files: dict[str, bytes]
    tests: dict[str, bytes]
    output: str = "Ran 2 tests\nOK\n"
    tests_pass: bool = True
    reply: str = "the builder's reply"


@dataclass
class RanJob:
    id: UUID
    # Each attempt's manifests' digests, by artifact name.
    manifests: list[dict[str, str]] = field(default_factory=list)


def run_job(
    store: JobStore,
    blobs: BlobStore,
    attempts: list[Attempt],
    *,
    submitted_by: str = "admin",
    title: str = "word count",
) -> RanJob:
    """A job submitted, admitted and taken through every step, attempt after attempt, as the
    services would (blobs and all): a rejected attempt's tests fail, the last one's pass, then
    the review approves and the sandbox run is up. With no attempts, it stops after its plan."""
    job = Job.submit(
        title=title,
        description="a command-line word-count tool",
        submitted_by=submitted_by,
        max_attempts=max(len(attempts), 1),
    )
    store.save(job)
    job = store.get(job.id)
    job.admit(by="scheduler", causation_id="test")
    store.save(job)
    ran = RanJob(id=job.id)
    plan = blobs.put_text(json.dumps({"steps": ["write it", "test it"]}))
    _step(store, blobs, job.id, Outcome.OK, "planned", {"plan": plan})
    if not attempts:
        return ran
    for number, attempt in enumerate(attempts, 1):
        files = _manifest(blobs, attempt.files)
        tests = _manifest(blobs, attempt.tests)
        ran.manifests.append({"files": files, "tests": tests})
        wrote = f"wrote {len(attempt.files)} files"
        _step(store, blobs, job.id, Outcome.OK, wrote, {"files": files}, reply=attempt.reply)
        _step(store, blobs, job.id, Outcome.OK, "wrote the tests", {"tests": tests})
        output = blobs.put_text(attempt.output)
        verdict = Outcome.PASSED if attempt.tests_pass else Outcome.FAILED
        said = f"tests {verdict.value} (attempt {number})"
        _step(store, blobs, job.id, verdict, said, {"output": output})
    _step(store, blobs, job.id, Outcome.APPROVED, "looks good", {})
    ready = blobs.put_text("listening\nready\n")
    _step(store, blobs, job.id, Outcome.UP, "it runs", {"output": ready})
    return ran


def _manifest(blobs: BlobStore, files: dict[str, bytes]) -> str:
    manifest = {path: blobs.put(content) for path, content in sorted(files.items())}
    return blobs.put(json.dumps(manifest, sort_keys=True).encode())


def _step(
    store: JobStore,
    blobs: BlobStore,
    job_id: UUID,
    outcome: Outcome,
    summary: str,
    artifacts: dict[str, str],
    *,
    reply: str | None = None,
) -> None:
    job = store.get(job_id)
    due = job.due()
    assert due is not None, f"nothing is due for job {job_id}"
    job.start_step(due, worker="test-worker", causation_id="test")
    if reply is not None:
        key = job.start_model_call(
            due,
            call=1,
            try_number=1,
            provider="scripted",
            model="demo",
            reserved_usd=0.01,
            causation_id="test",
        )
        job.finish_model_call(
            key,
            outcome="ok",
            input_tokens=10,
            output_tokens=20,
            cost_usd=0.001,
            latency_ms=12.0,
            reply=blobs.put_text(reply),
            causation_id="test",
        )
    job.finish_step(due, outcome=outcome, summary=summary, causation_id="test", artifacts=artifacts)
    store.save(job)
