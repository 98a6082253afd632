"""One `ModelClient` per provider, over its official SDK, configured by the SDK's own variables.

Keys and base URLs: ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``, ``OPENAI_API_KEY``/
``OPENAI_BASE_URL`` (any OpenAI-compatible server), ``GOOGLE_API_KEY`` or ``GEMINI_API_KEY``/
``GOOGLE_GEMINI_BASE_URL``. They are read from the mapping given (default: the process
environment), never logged, and never part of an error message or a repr.

An adapter module imports its SDK, so each is imported only when its provider is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from vdo_kernel.secrets import display_url as display_url  # re-exported for the adapters
from vdo_models.interface import ModelClient, ProviderError

# Per provider, the variables that hold its key, in the SDK's order of precedence.
KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "google": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
}
BASE_URL_VARIABLES: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_BASE_URL",),
    "openai": ("OPENAI_BASE_URL",),
    "google": ("GOOGLE_GEMINI_BASE_URL",),
}
DEFAULT_TIMEOUT_SECONDS = 600.0


def configured_providers(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The providers that have a key in `env` (the names only)."""
    return tuple(
        provider
        for provider, names in KEY_VARIABLES.items()
        if any(env.get(name, "").strip() for name in names)
    )


def make_client(
    provider: str, env: Mapping[str, str] = os.environ, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> ModelClient:
    """A client for `provider` configured from `env`; ProviderError (kind "auth") without a key.

    `timeout` bounds connecting and each HTTP read inside the SDK. A streamed completion raises
    it, for its own request, above the request's idle timeout: what ends a quiet stream is the
    idle timeout (`providers.streaming`), never the SDK first.
    """
    if provider == "anthropic":
        from vdo_models.providers.anthropic import AnthropicClient

        return AnthropicClient.from_env(env, timeout=timeout)
    if provider == "openai":
        from vdo_models.providers.openai import OpenAIClient

        return OpenAIClient.from_env(env, timeout=timeout)
    if provider == "google":
        from vdo_models.providers.google import GoogleClient

        return GoogleClient.from_env(env, timeout=timeout)
    raise ProviderError(
        f"no SDK adapter for provider {provider!r} (known: {', '.join(KEY_VARIABLES)})",
        retryable=False,
        kind="invalid_request",
    )


def make_clients(
    env: Mapping[str, str] = os.environ, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, ModelClient]:
    """A client for every provider that has a key."""
    return {p: make_client(p, env, timeout=timeout) for p in configured_providers(env)}


def describe_models(provider: str, base_url: str, names: list[str]) -> str:
    """What `check()` reports: who answered and a few of the models it lists."""
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return f"{provider} at {display_url(base_url)}: {len(names)} models ({shown})"
