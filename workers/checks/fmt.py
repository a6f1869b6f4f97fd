"""Number formats of the legacy messages (spec: "Figures in the messages"). Parity is judged on
these strings, so every check formats through here."""

from __future__ import annotations

import math


def usd(value: float, decimals: int = 2, commas: bool = True) -> str:
    """``$12,000.50``; ``commas=False`` gives ``$12000.50``. Negative: ``$-5.00`` as Python writes it."""
    return f"${value:,.{decimals}f}" if commas else f"${value:.{decimals}f}"


def num(value: float, decimals: int, commas: bool = False) -> str:
    return f"{value:,.{decimals}f}" if commas else f"{value:.{decimals}f}"


def pct(ratio: float, decimals: int = 2) -> str:
    """A ratio as a percentage: 0.75 -> ``75.00%``; an infinite ratio prints ``inf%``."""
    if math.isinf(ratio):
        return "inf%" if ratio > 0 else "-inf%"
    return f"{ratio * 100:.{decimals}f}%"


def given(value: float | int, commas: bool = False) -> str:
    """A configured figure as the configuration wrote it: ``3``, ``0.6``, ``10,000`` with commas."""
    return f"{value:,}" if commas else str(value)


def ratio(value: float, decimals: int = 2) -> str:
    """A plain ratio, ``1.25``; infinite prints ``inf``."""
    return "inf" if math.isinf(value) and value > 0 else f"{value:.{decimals}f}"
