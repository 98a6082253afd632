"""The price table: costs, worst cases, lookups and overrides."""

from __future__ import annotations

import pytest

from vdo_kernel.settings import Settings
from vdo_models.interface import Route, Usage
from vdo_models.pricing import UNKNOWN_MODEL, Price, Pricing, estimate_tokens, parse_overrides

SONNET = Route("anthropic", "claude-sonnet-4-6")


def test_cost_prices_each_kind_of_token() -> None:
    usage = Usage(
        input_tokens=1_000,
        output_tokens=2_000,
        cached_input_tokens=10_000,
        cache_write_tokens=4_000,
    )
    # 1k x $3 + 2k x $15 + 10k x $0.30 + 4k x $3.75, per million
    assert Pricing().cost(SONNET, usage) == pytest.approx(0.003 + 0.03 + 0.003 + 0.015)


def test_worst_case_assumes_every_prompt_token_at_the_dearer_rate_and_all_output() -> None:
    pricing = Pricing()
    assert pricing.worst_case(SONNET, 10_000, 16_000) == pytest.approx(
        (10_000 * 3.75 + 16_000 * 15) / 1e6
    )
    gpt = Route("openai", "gpt-4.1")
    assert pricing.worst_case(gpt, 10_000, 1_000) == pytest.approx((10_000 * 2 + 1_000 * 8) / 1e6)


def test_a_dated_model_is_priced_as_its_family_and_an_unknown_one_high() -> None:
    pricing = Pricing()
    assert pricing.price(Route("anthropic", "claude-sonnet-4-5-20250929")) == pricing.price(
        Route("anthropic", "claude-sonnet-4-5")
    )
    assert pricing.price(Route("openai", "gpt-4.1-mini")).input == 0.4  # not gpt-4.1's
    assert pricing.price(Route("google", "models/gemini-2.5-flash")).output == 2.5
    assert pricing.price(Route("openai", "my-local-llama")) == UNKNOWN_MODEL
    assert pricing.price(Route("scripted", "demo")).output == 0
    # the default is at least as dear as anything listed: budgets err on the safe side
    assert all(
        UNKNOWN_MODEL.input >= p.input and UNKNOWN_MODEL.output >= p.output
        for p in pricing.prices.values()
    )


def test_overrides_merge_over_the_built_in_table() -> None:
    pricing = Pricing.from_settings(
        Settings(
            model_prices=(
                '{"anthropic:claude-sonnet-4-6": {"output": 20},'
                ' "openai:my-local-llama": {"input": 0, "output": 0},'
                ' "default": {"input": 1, "output": 2}}'
            )
        )
    )
    assert pricing.price(SONNET) == Price(input=3, output=20, cached_input=0.3, cache_write=3.75)
    assert pricing.cost(Route("openai", "my-local-llama"), Usage(10**6, 10**6)) == 0
    assert pricing.price(Route("openai", "unheard-of")) == Price(1, 2, 1.5, 18.75)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"openai:x": 3}', "must be an object with"),
        ('{"openai:x": {"input": 1, "speed": 2}}', "must be an object with"),
        ('{"openai:x": {"input": -1, "output": 1}}', "must be a number >= 0"),
        ('{"openai:x": {"input": 1}}', "needs at least input and output"),
    ],
)
def test_bad_overrides_are_refused_clearly(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_overrides(text)


def test_no_overrides() -> None:
    assert parse_overrides("") == {}
    assert parse_overrides("  ") == {}


def test_token_estimate_errs_high() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("a" * 35) == 10
    assert estimate_tokens("a" * 36) == 11
    assert Pricing().estimate_tokens("a" * 7) == 2
