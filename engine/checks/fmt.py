"""Number formats of the legacy messages (spec: "Figures in the messages"). Parity is judged on
these strings, so every check formats through here."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from shared.models import InvalidValue, Snapshot


def usd(value: float, commas: bool = True) -> str:
    """``$12,000.50``; ``commas=False`` gives ``$12000.50``. Negative: ``$-5.00`` as Python writes it."""
    return f"${value:,.2f}" if commas else f"${value:.2f}"


def num(value: float, decimals: int, commas: bool = False) -> str:
    return f"{value:,.{decimals}f}" if commas else f"{value:.{decimals}f}"


def pct(ratio: float, decimals: int = 2) -> str:
    """A ratio as a percentage: 0.75 -> ``75.00%``; an infinite ratio prints ``inf%`` (as format does)."""
    return f"{ratio * 100:.{decimals}f}%"


def given(value: float | int, commas: bool = False) -> str:
    """A configured figure as the configuration wrote it: ``3``, ``0.6``, ``10,000`` with commas."""
    return f"{value:,}" if commas else str(value)


def for_delay(delay: float | int | None) -> str:
    """`` for 60s`` (the delay as configured), or nothing when there is none."""
    return "" if delay is None else f" for {given(delay)}s"


def ratio(value: float) -> str:
    """A plain ratio, ``1.25``; infinite prints ``inf`` (as format does)."""
    return f"{value:.2f}"


# ---------------------------------------------------------------- figures that may be absent or junk

INVALID = "invalid"
"""Shown in place of a figure whose raw value did not parse (reports keep going)."""
MISSING = "N/A"
"""Shown in place of a figure that is absent, or a share of zero."""


def lenient(snap: Snapshot, key: str) -> float | None:
    """A figure read for display only: None when absent, NaN when junk (``maybe`` shows ``invalid``)."""
    try:
        return snap.number(key)
    except InvalidValue:
        return math.nan


def maybe(value: float | None, formatter: Callable[[float], str]) -> str:
    """Format a figure that may be absent (None -> ``N/A``) or unreadable (NaN -> ``invalid``)."""
    if value is None:
        return MISSING
    return INVALID if math.isnan(value) else formatter(value)


def hhmm(ts: float) -> str:
    """``12:00 UTC``: the time of a report slot."""
    return time.strftime("%H:%M UTC", time.gmtime(ts))


def utc(ts: float) -> str:
    """``2024-05-01 11:58:10``, in UTC: a time in the operators' commands and pages; the plain
    number for a time the calendar cannot show."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):
        return f"{ts:.0f} (unix)"


def clock(ts: float) -> str:
    """``2024-05-01 11:58:10 UTC``: when a figure was observed."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def duration(seconds: float) -> str:
    """A data age: ``45s``, ``5m 03s``, ``2h 05m``, ``3d 04h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def usd_share(value: float | None, share: float | None, decimals: int = 2) -> str:
    """``$7,500.00 (75.00%)``: an amount and its share. An unreadable or absent amount shows alone
    (``invalid``, ``N/A``); a share that is None shows ``(N/A)``."""
    shown = maybe(value, usd)
    if value is None or math.isnan(value):
        return shown
    return f"{shown} ({maybe(share, lambda r: pct(r, decimals))})"


def staleness(observed_at: float, at: float, limit: float) -> str:
    """`` (data from <clock>, <age> old)`` when the data is older than ``limit`` seconds at ``at``."""
    age = at - observed_at
    return f" (data from {clock(observed_at)}, {duration(age)} old)" if age > limit else ""
