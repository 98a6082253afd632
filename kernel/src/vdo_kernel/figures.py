"""Figures as people read them (money, token counts, latency) and the label of the built-in
scripted model, the same wherever a job is shown: the CLI's views and a job's audit."""

from __future__ import annotations

from typing import Final

# How a step, a call or a route made by the built-in scripted model (no AI model configured)
# is labelled wherever it is shown.
SCRIPTED_LABEL: Final = "[scripted model]"


def is_scripted(model: object) -> bool:
    """Whether a model's name (provider:model, or a step's ``details.model``) is the built-in
    scripted model's."""
    return isinstance(model, str) and model.strip().lower().startswith("scripted")


def usd(value: float | None) -> str:
    """Money as people read it: cents from a dollar up; below, down to a hundredth of a cent
    (model calls often cost less than a cent)."""
    if value is None:
        return "-"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    whole, _, decimals = f"{value:.4f}".partition(".")
    decimals = decimals.rstrip("0").ljust(2, "0")
    return f"${whole}.{decimals}"


# How a model call's cost was arrived at, said when it is not the provider's own figures.
COST_BASIS_LABELS: Final = {"estimated": "estimated", "worst_case": "worst case"}


def cost_text(value: float | None, basis: object = "reported") -> str:
    """A model call's cost, marked when it is not what the provider reported: "$0.0123
    (estimated)", "$0.24 (worst case)"."""
    label = COST_BASIS_LABELS.get(basis) if isinstance(basis, str) else None
    return usd(value) + (f" ({label})" if label else "")


def tokens_text(value: object) -> str:
    number = whole_number(value)
    return f"{number:,}" if number is not None else "-"


def latency(value: object) -> str:
    """Milliseconds as milliseconds under a second, seconds above."""
    milliseconds = number(value)
    if milliseconds is None:
        return "-"
    return f"{milliseconds:.0f} ms" if milliseconds < 1000 else f"{milliseconds / 1000:.1f} s"


def whole_number(value: object) -> int | None:
    """An event's integer field, or None when it is missing or of another type."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: object) -> float | None:
    """An event's numeric field, or None when it is missing or of another type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
