"""What a model call costs: a built-in price table, overridable by settings, in USD.

Prices are USD per million tokens, as the providers list them for standard (not batch or
priority) use and prompts within their base context tier. A model not in the table is priced at
`UNKNOWN_MODEL`, deliberately as high as the dearest model listed, so that budgets err on the
safe side; set ``VDO_MODEL_PRICES`` for a model you use that is not listed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vdo_kernel.settings import Settings
from vdo_models.interface import ProviderError, Route, Usage

_MILLION = 1_000_000
# A cheap stand-in for a tokenizer: English prose and code run at 3.5-4.5 characters a token,
# so dividing by 3.5 errs towards more tokens (a higher worst case), never fewer.
CHARS_PER_TOKEN = 3.5


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float  # prompt tokens read from the cache
    cache_write: float  # prompt tokens written to the cache (Anthropic)


def _price(input: float, output: float, cached: float, write: float | None = None) -> Price:
    return Price(input, output, cached, input if write is None else write)


BUILT_IN: dict[str, Price] = {
    # Anthropic: cache reads at 0.1x input, 5-minute cache writes at 1.25x.
    "anthropic:claude-opus-4-8": _price(5, 25, 0.5, 6.25),
    "anthropic:claude-opus-4-6": _price(5, 25, 0.5, 6.25),
    "anthropic:claude-opus-4-5": _price(5, 25, 0.5, 6.25),
    "anthropic:claude-opus-4-1": _price(15, 75, 1.5, 18.75),
    "anthropic:claude-opus-4": _price(15, 75, 1.5, 18.75),
    "anthropic:claude-sonnet-4-6": _price(3, 15, 0.3, 3.75),
    "anthropic:claude-sonnet-4-5": _price(3, 15, 0.3, 3.75),
    "anthropic:claude-sonnet-4": _price(3, 15, 0.3, 3.75),
    "anthropic:claude-haiku-4-5": _price(1, 5, 0.1, 1.25),
    "anthropic:claude-3-5-haiku": _price(0.8, 4, 0.08, 1),
    # OpenAI: cached input is discounted automatically; there is no write charge.
    "openai:gpt-5.1": _price(1.25, 10, 0.125),
    "openai:gpt-5": _price(1.25, 10, 0.125),
    "openai:gpt-5-mini": _price(0.25, 2, 0.025),
    "openai:gpt-5-nano": _price(0.05, 0.4, 0.005),
    "openai:gpt-4.1": _price(2, 8, 0.5),
    "openai:gpt-4.1-mini": _price(0.4, 1.6, 0.1),
    "openai:gpt-4.1-nano": _price(0.1, 0.4, 0.025),
    "openai:gpt-4o": _price(2.5, 10, 1.25),
    "openai:gpt-4o-mini": _price(0.15, 0.6, 0.075),
    "openai:o3": _price(2, 8, 0.5),
    "openai:o4-mini": _price(1.1, 4.4, 0.275),
    # Google: prompts up to 200k tokens (the Pro models cost more above that).
    "google:gemini-3.1-pro": _price(2, 12, 0.2),
    "google:gemini-3-pro": _price(2, 12, 0.2),
    "google:gemini-3-flash": _price(0.5, 3, 0.05),
    "google:gemini-2.5-pro": _price(1.25, 10, 0.31),
    "google:gemini-2.5-flash": _price(0.3, 2.5, 0.075),
    "google:gemini-2.5-flash-lite": _price(0.1, 0.4, 0.025),
    "google:gemini-2.0-flash": _price(0.1, 0.4, 0.025),
}
UNKNOWN_MODEL = _price(15, 75, 1.5, 18.75)
FREE = _price(0, 0, 0, 0)  # the built-in scripted model


def estimate_tokens(text: str) -> int:
    """Tokens in `text`, estimated high: characters / 3.5, rounded up."""
    return tokens_in_chars(len(text))


def tokens_in_chars(chars: int) -> int:
    """Tokens in so many characters of text, estimated high (see `estimate_tokens`)."""
    return math.ceil(chars / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Charge:
    """What a try is counted at: its cost, the tokens it is counted for, and on what basis
    (``reported``: the provider's own figures; ``estimated``: some of them estimated from the
    text that arrived; ``worst_case``: nothing reported, so the most it could have cost)."""

    usd: float
    usage: Usage
    basis: str
    note: str = ""  # how a failed try was counted, said with its error


class Pricing:
    """The price table in use: built-in prices under any overrides from settings."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.prices = {**BUILT_IN, **(overrides or {})}
        self.default = self.prices.pop("default", UNKNOWN_MODEL)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        return cls(parse_overrides(settings.model_prices))

    def price(self, route: Route) -> Price:
        """The route's price: its exact entry, else the longest listed prefix of its model name
        (``claude-sonnet-4-5-20250929`` is priced as ``claude-sonnet-4-5``), else the default."""
        if route.provider == "scripted":
            return FREE
        model = route.model.removeprefix("models/")
        key = f"{route.provider}:{model}"
        if key in self.prices:
            return self.prices[key]
        prefixes = [k for k in self.prices if key.startswith(k + "-")]
        return self.prices[max(prefixes, key=len)] if prefixes else self.default

    def cost(self, route: Route, usage: Usage) -> float:
        """USD for a call with this usage."""
        p = self.price(route)
        return (
            usage.input_tokens * p.input
            + usage.output_tokens * p.output
            + usage.cached_input_tokens * p.cached_input
            + usage.cache_write_tokens * p.cache_write
        ) / _MILLION

    def failed_try(self, route: Route, error: ProviderError, worst_case_usd: float) -> Charge:
        """What a try that failed is counted at. An answer with an error status before any
        reply began (429, 401, a 5xx status), or a provider never reached, is not billed. A
        failure after the request was taken (a cut or stalled stream, a timeout, an error
        event mid-reply) is billed by the provider for what it did: it is counted at the usage
        the provider reported, with at least the output tokens the streamed text holds, and,
        when nothing was reported, at its worst case."""
        if not error.accepted and (error.status is not None or error.kind == "unreachable"):
            said = f"answered {error.status}" if error.status else "was not reached"
            return Charge(
                0.0, Usage(), "reported", f"not billed: the provider {said} before any reply"
            )
        reported = error.usage
        if reported is None:
            return Charge(
                worst_case_usd,
                Usage(),
                "worst_case",
                f"counted at its worst case ${worst_case_usd:.4f}: the provider reported no "
                "usage before it failed",
            )
        streamed = tokens_in_chars(error.streamed_chars)
        if streamed > reported.output_tokens:
            usage = Usage(
                reported.input_tokens,
                streamed,
                reported.cached_input_tokens,
                reported.cache_write_tokens,
            )
            cost = self.cost(route, usage)
            return Charge(
                cost,
                usage,
                "estimated",
                f"counted at ${cost:.4f}: {usage.input_tokens} input tokens as the provider "
                f"reported, {streamed} output tokens estimated from the "
                f"{error.streamed_chars} characters streamed",
            )
        cost = self.cost(route, reported)
        return Charge(
            cost,
            reported,
            "reported",
            f"counted at ${cost:.4f}, the usage the provider reported before it failed",
        )

    def worst_case(self, route: Route, prompt_tokens: int, max_output_tokens: int) -> float:
        """The most a call can cost: every prompt token at the dearer of the input and
        cache-write prices, and every allowed output token."""
        p = self.price(route)
        return (
            prompt_tokens * max(p.input, p.cache_write) + max_output_tokens * p.output
        ) / _MILLION

    @staticmethod
    def estimate_tokens(text: str) -> int:
        return estimate_tokens(text)


def parse_overrides(text: str) -> dict[str, Price]:
    """``VDO_MODEL_PRICES``: ``{"provider:model": {"input": 3, "output": 15, "cached_input":
    0.3, "cache_write": 3.75}}``; ``"default"`` prices unlisted models. A field left out keeps
    the built-in price for that model, or else the entry's input price (output is required
    for a model not built in)."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"VDO_MODEL_PRICES is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("VDO_MODEL_PRICES must be a JSON object of provider:model -> prices")
    names = {f.name for f in fields(Price)}
    prices: dict[str, Price] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or not set(entry) <= names:
            raise ValueError(
                f"VDO_MODEL_PRICES[{key!r}] must be an object with {', '.join(sorted(names))}"
            )
        prices[key] = _merge(key, entry)
    return prices


def _merge(key: str, entry: dict[str, Any]) -> Price:
    for name, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"VDO_MODEL_PRICES[{key!r}].{name} must be a number >= 0")
    base = BUILT_IN.get(key) or (UNKNOWN_MODEL if key == "default" else None)
    if base is None:
        if "input" not in entry or "output" not in entry:
            raise ValueError(f"VDO_MODEL_PRICES[{key!r}] needs at least input and output")
        base = _price(entry["input"], entry["output"], entry["input"])
    values = {f.name: float(entry.get(f.name, getattr(base, f.name))) for f in fields(Price)}
    return Price(**values)
