"""Configuration for every VDO process: environment variables prefixed ``VDO_`` and ``.env``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings object, built once at start and passed in; nothing reads the environment
    anywhere else."""

    model_config = SettingsConfigDict(
        env_prefix="VDO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(default=Path(".vdo"), description="data directory (embedded servers, blobs)")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    nats_url: str | None = Field(default=None, description="external NATS; unset = embedded")
    database_url: str | None = Field(
        default=None, description="external PostgreSQL (postgresql://...); unset = embedded"
    )
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
    step_timeout_seconds: float = Field(default=60.0, gt=0)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def blobs_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    def require_urls(self) -> tuple[str, str]:
        """The bus and store URLs a service needs; a clear error when the stack did not set them."""
        if not self.nats_url or not self.database_url:
            raise RuntimeError(
                "VDO_NATS_URL and VDO_DATABASE_URL must be set for a service; "
                "start the whole stack with `vdo up` (or `make run`)"
            )
        return self.nats_url, self.database_url
