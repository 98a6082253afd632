"""Configuration for every VDO process: environment variables prefixed ``VDO_`` and ``.env``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A setting that cannot be used as it is; the message names it."""


class Settings(BaseSettings):
    """One settings object, built once at start and passed in; nothing reads the environment
    anywhere else."""

    model_config = SettingsConfigDict(
        env_prefix="VDO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(default=Path(".vdo"), description="data directory (embedded servers, blobs)")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Authentication of the API: "on" (every request but the health check needs a token), or
    # "off" (every request acts as a local admin; the gateway then listens on loopback only).
    auth: Literal["on", "off"] = "on"
    # The first admin's token, instead of one generated at the first start (at least 32
    # characters nobody can guess); stored digested like any other. Never passed on to the
    # services the stack starts.
    admin_token: SecretStr | None = None
    nats_url: str | None = Field(
        default=None,
        description="external NATS (nats://host:4222, or several of a cluster's, comma-separated);"
        " unset = embedded",
    )
    database_url: str | None = Field(
        default=None, description="external PostgreSQL (postgresql://...); unset = embedded"
    )
    # TLS to NATS, when its servers require it (`tls { ... }` in their configuration): the CA
    # that signed their certificates (unset: the system's CAs), and this client's certificate
    # and key, for servers that verify clients (`verify: true`). PEM files.
    nats_ca_path: Path | None = None
    nats_cert_path: Path | None = None
    nats_key_path: Path | None = None
    # Copies of the event stream (and its consumers) a NATS cluster keeps: 3 on a three-node
    # cluster, so losing a node loses nothing; 1 on a single server.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # At start, how long a service waits for NATS and PostgreSQL to answer before giving up
    # (they may still be starting: containers, a cluster coming up).
    startup_timeout_seconds: float = Field(default=120.0, gt=0)
    # At SIGTERM, how long a service finishes the work in hand; what is still running then is
    # handed back to the bus at once, for another replica to take up.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # A file whose modification time the service renews every few seconds while it runs
    # (`vdo_kernel.heartbeat`), for a liveness probe; unset: none.
    heartbeat_path: Path | None = None
    # JetStream redelivers a message not acknowledged within this many seconds; long work
    # sends `in_progress` at a third of it so it is not handed to another replica meanwhile.
    ack_wait_seconds: float = Field(default=30.0, gt=0.5)
    consumer_concurrency: int = Field(default=8, ge=1, le=256)
    default_max_attempts: int = Field(default=3, ge=1, le=10)
    default_budget_usd: float = Field(default=1.0, gt=0)
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    log_level: str = "INFO"
    log_format: str = Field(default="auto", description="auto | json | console")
    # Seconds the scripted model "thinks" per step; 0 makes the pipeline as fast as it can go.
    scripted_delay_seconds: float = Field(default=0.0, ge=0)
    step_timeout_seconds: float = Field(default=600.0, gt=0)

    # ---- the queue (the scheduler) -------------------------------------------------------
    # Jobs running at once, in all and per user (the submitter); the others wait in the queue,
    # the highest priority first, first come first served within a priority.
    max_running_jobs: int = Field(default=4, ge=1, le=10_000)
    max_running_jobs_per_user: int = Field(default=1, ge=1, le=10_000)
    # The scheduler wakes on each commit to the store (LISTEN/NOTIFY); when it hears none for
    # this long it looks regardless and checks its connection: a safety interval, not a poll.
    scheduler_poll_seconds: float = Field(default=60.0, gt=0)
    # Phase services hear of a cancellation on the bus; this often they also ask the store about
    # the jobs they are working on (a message lost meanwhile is then a delay, no more).
    cancel_check_seconds: float = Field(default=5.0, gt=0)

    # ---- AI models (the four AI phases) --------------------------------------------------
    # Each phase's model as provider:model; keys and base URLs come from the providers' own
    # variables (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, ..._BASE_URL). A phase whose
    # provider has no key runs on the built-in scripted model, and says so.
    planner_model: str = "anthropic:claude-sonnet-4-6"
    builder_model: str = "anthropic:claude-sonnet-4-6"
    tester_model: str = "openai:gpt-4.1"
    reviewer_model: str = "google:gemini-2.5-pro"
    # Comma-separated provider:model routes tried in order when the main one keeps failing.
    planner_fallbacks: str = ""
    builder_fallbacks: str = ""
    tester_fallbacks: str = ""
    reviewer_fallbacks: str = ""
    model_max_output_tokens: int = Field(default=16_000, ge=256, le=200_000)
    # A try of a model call ends when the provider sends nothing at all (not a byte, not a
    # keep-alive) for this long, counted from the request: it stalled, and is retried.
    model_idle_timeout_seconds: float = Field(default=120.0, gt=0)
    # And at the latest after model_timeout_seconds plus the time its output limit takes at
    # model_min_tokens_per_second (120 s + 16,000 tokens at 10 tokens/s = 1,720 s): a long reply
    # that keeps streaming is never cut short for its length.
    model_timeout_seconds: float = Field(default=120.0, gt=0)
    model_min_tokens_per_second: float = Field(default=10.0, gt=0)
    # Tries of one route (429, 5xx, timeouts, a cut stream) before the next fallback.
    model_retries: int = Field(default=3, ge=1, le=10)
    model_backoff_seconds: float = Field(default=1.0, ge=0)
    model_backoff_max_seconds: float = Field(default=30.0, ge=0)
    # USD per million tokens, as JSON: {"provider:model": {"input": 3, "output": 15,
    # "cached_input": 0.3, "cache_write": 3.75}}; merged over the built-in table.
    model_prices: str = ""
    daily_budget_usd: float = Field(default=50.0, gt=0)
    # Limits on what a model may write into a workspace.
    max_generated_files: int = Field(default=200, ge=1)
    max_generated_file_bytes: int = Field(default=1_000_000, ge=1)
    max_generated_total_bytes: int = Field(default=10_000_000, ge=1)

    # The key that encrypts the secret store (provider keys entered in the dashboard, and other
    # credentials): a file of its own, made at the first use. Every process that reads or
    # writes stored secrets (the gateway and the AI services) needs the same file.
    secret_key_path: Path | None = Field(
        default=None, description="the secret store's key file; unset = <home>/secret-store.key"
    )

    # ---- sandbox ------------------------------------------------------------------------
    sandbox_backend: str = Field(default="auto", pattern="^(auto|docker|bubblewrap)$")
    sandbox_concurrency: int = Field(default=4, ge=1, le=64)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_memory_mib: int = Field(default=512, ge=16)
    sandbox_pids: int = Field(default=128, ge=8)
    sandbox_workspace_mib: int = Field(default=200, ge=1)
    sandbox_tmpfs_mib: int = Field(default=64, ge=1)
    sandbox_wall_seconds: float = Field(default=300.0, gt=0)
    sandbox_output_mib: float = Field(default=10.0, gt=0)
    # The Docker image per runtime (built locally by `vdo sandbox build-image`).
    sandbox_image_python: str = "vdo-sandbox-python:latest"
    # Where resolved dependency wheels are cached (default: <home>/wheels).
    wheel_cache_dir: Path | None = None

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("admin_token", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        # Set empty means unset (the stack sets it so for its services).
        return None if value == "" else value

    @property
    def secret_key_file(self) -> Path:
        return self.secret_key_path or self.home / "secret-store.key"

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def wheels_dir(self) -> Path:
        return self.wheel_cache_dir or self.home / "wheels"

    def nats_tls(self) -> ssl.SSLContext | None:
        """The TLS context NATS connections use, from the three settings above; None when none
        is set (a server that requires TLS is then verified against the system's CAs). A
        missing or unreadable file is a SettingsError that names its setting."""
        if not (self.nats_ca_path or self.nats_cert_path or self.nats_key_path):
            return None
        if bool(self.nats_cert_path) != bool(self.nats_key_path):
            raise SettingsError(
                "VDO_NATS_CERT_PATH and VDO_NATS_KEY_PATH go together: set both, or neither"
            )
        try:
            context = ssl.create_default_context(cafile=self.nats_ca_path)
        except (OSError, ssl.SSLError) as error:
            raise SettingsError(
                f"VDO_NATS_CA_PATH: cannot use {self.nats_ca_path}: {error}"
            ) from None
        if self.nats_cert_path and self.nats_key_path:
            try:
                context.load_cert_chain(self.nats_cert_path, self.nats_key_path)
            except (OSError, ssl.SSLError) as error:
                raise SettingsError(
                    f"VDO_NATS_CERT_PATH / VDO_NATS_KEY_PATH: cannot use "
                    f"{self.nats_cert_path} and {self.nats_key_path}: {error}"
                ) from None
        return context

    def require_urls(self) -> tuple[str, str]:
        """The bus and store URLs a service needs; a clear error when the stack did not set them."""
        if not self.nats_url or not self.database_url:
            raise RuntimeError(
                "VDO_NATS_URL and VDO_DATABASE_URL must be set for a service; "
                "start the whole stack with `vdo up` (or `make run`)"
            )
        return self.nats_url, self.database_url
