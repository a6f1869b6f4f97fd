"""Figures are formatted with Python's format() on floats (binary rounding), never Decimals."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import pytest

from engine.checks import fmt
from ingestor.normalize import normalize_account


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (fmt.num(0.125, 2), "0.12"),  # 0.125 exact in binary: the tie goes to even (half-up: 0.13)
        (fmt.num(2.675, 2), "2.67"),  # 2.675 is 2.67499999999999982236... in binary (half-up: 2.68)
        (fmt.usd(1234.565), "$1,234.57"),  # 1234.565 is 1234.56500000000005456...: rounds up
        (fmt.usd(0.125, commas=False), "$0.12"),
        (fmt.pct(0.00125), "0.12%"),  # 0.00125 x 100 = 0.125 (half-up: 0.13%)
        (fmt.pct(0.705, 0), "70%"),  # 0.705 x 100 = 70.49999999999999 (half-up on 0.705: 71%)
        (fmt.num(1.5, 0), "2"),
        (fmt.num(2.5, 0), "2"),  # tie to even (half-up: 3)
    ],
)
def test_binary_float_rounding(shown: str, expected: str) -> None:
    assert shown == expected


@pytest.mark.parametrize(
    ("value", "places", "half_up"), [(0.125, "0.01", "0.13"), (2.675, "0.01", "2.68"), (2.5, "1", "3")]
)
def test_decimal_half_up_would_differ(value: float, places: str, half_up: str) -> None:
    assert str(Decimal(str(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP)) == half_up
    assert fmt.num(value, len(places.partition(".")[2])) != half_up


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "N/A"), (math.nan, "invalid"), (-5.0, "$-5.00"), (1234567.891, "$1,234,567.89")],
)
def test_maybe(value: float | None, expected: str) -> None:
    assert fmt.maybe(value, fmt.usd) == expected


@pytest.mark.parametrize(
    ("value", "share", "expected"),
    [
        (7500.0, 0.75, "$7,500.00 (75.00%)"),
        (5.0, None, "$5.00 (N/A)"),
        (math.nan, 0.5, "invalid"),
        (None, 1.0, "N/A"),
    ],
)
def test_usd_share(value: float | None, share: float | None, expected: str) -> None:
    assert fmt.usd_share(value, share) == expected


def test_ratio_and_given() -> None:
    assert (fmt.ratio(math.inf), fmt.ratio(2.5), fmt.pct(math.inf)) == ("inf", "2.50", "inf%")
    assert (fmt.given(2.0), fmt.given(2), fmt.given(0.6), fmt.given(10000, commas=True)) == (
        "2.0",
        "2",
        "0.6",
        "10,000",
    )


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (59.4, "59s"),
        (60, "1m 00s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (90000, "1d 01h"),
        (-3, "0s"),
    ],
)
def test_duration(seconds: float, expected: str) -> None:
    assert fmt.duration(seconds) == expected


def test_times_and_lenient() -> None:
    assert fmt.hhmm(1714564800.0) == "12:00 UTC"  # 2024-05-01 12:00:00 UTC
    assert (
        fmt.staleness(1714564800.0 - 61, 1714564800.0, 60)
        == " (data from 2024-05-01 11:58:59 UTC, 1m 01s old)"
    )
    assert fmt.staleness(1714564800.0 - 60, 1714564800.0, 60) == ""
    snap = normalize_account("A", {"x": "1.5", "y": "bad", "z": None}, 0.0)
    assert fmt.lenient(snap, "x") == 1.5 and math.isnan(fmt.lenient(snap, "y") or 0.0)
    assert fmt.lenient(snap, "z") is None and fmt.lenient(snap, "absent") is None
