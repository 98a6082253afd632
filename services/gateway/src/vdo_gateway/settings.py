"""The gateway's own settings, beside the kernel's: what only the gateway reads (``VDO_`` too)."""

from __future__ import annotations

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
