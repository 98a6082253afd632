"""The gateway's own settings, beside the kernel's: what only the gateway reads (``VDO_`` too)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024 * 1024 * 1024


class GatewaySettings(BaseSettings):
    """Read once at start and passed in, like the kernel's `Settings`."""

    model_config = SettingsConfigDict(
        env_prefix="VDO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # A bundle holds a whole deployment's history and blobs, so the uploads that carry one
    # (restore, import) get their own limit instead of the API's small request limit.
    max_bundle_bytes: int = Field(
        default=2 * GIB, ge=1024, description="largest bundle accepted by restore and import"
    )
    # Requests a token may make a minute (a bucket of this many, refilled evenly over the
    # minute, per token); 0 turns the limit off.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    # Origins (scheme://host[:port]) whose pages may call the API from a browser, comma
    # separated. Empty: only the gateway's own origin (the dashboard it serves).
    cors_origins: str = ""

    # Where the built dashboard is (its index.html and assets/); unset: the repository's
    # web/dist, where `make run` builds it.
    dashboard_dir: Path | None = None

    @property
    def cors_origin_list(self) -> list[str]:
        return [
            origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()
        ]

    # Live updates (`/api/ws`): the server sends a heartbeat this often, and drops a client it
    # has heard nothing from (answers to heartbeats included) for the timeout.
    ws_heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600)
    ws_heartbeat_timeout_seconds: float = Field(default=45.0, gt=0, le=3 * 3600)
    # Messages waiting for one client; a client that lets more pile up is told to resync.
    ws_queue_limit: int = Field(default=1000, ge=8, le=1_000_000)
    # A frame the client has not taken within this long means it is gone: it is dropped.
    ws_send_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # How often live updates look in the store for events the bus did not bring (a relay
    # that crashed between commit and publish, a NATS outage); the bus brings the rest at once.
    ws_poll_seconds: float = Field(default=1.0, gt=0, le=3600)
