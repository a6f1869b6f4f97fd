"""Table-driven normalization of one Galio account object into a :class:`Snapshot`.

Galio keys are flat and not self-describing, so every key is classified by the tables below,
in order, and the raw object is kept whole. A value that does not parse is recorded in
``Snapshot.invalid`` (raw key -> reason) and leaves every other figure intact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from shared.models import ASSET_FIELDS as FEED_ASSET_FIELDS
from shared.models import JsonScalar, Position, Snapshot, parse_number

POSITION_SUFFIXES: Mapping[str, str] = {
    "Avg-Price": "avg_price",
    "Force-Liquid-Price": "liquidation_price",
}
"""``<SYMBOL><suffix>`` -> Position field."""

ASSET_FIELDS: tuple[str, ...] = (*FEED_ASSET_FIELDS, "crossWalletBalance", "crossUnPnl")
"""Binance futures per-asset fields, as suffixes of ``<ASSET><field>``."""

SYMBOL_MARGIN_FIELDS: tuple[str, ...] = ("initialMargin", "maintMargin", "crossUnPnl")
"""Per-symbol margin figures, as suffixes of ``<SYMBOL><field>``."""

KNOWN_ASSETS: frozenset[str] = frozenset(
    {"USDT", "USDC", "BNB", "BTC", "ETH", "FDUSD", "BUSD", "TUSD", "USDE", "BFUSD", "SOL", "XRP", "DOGE"}
)
"""Prefixes read as an asset (``USDTwalletBalance``); any other prefix of a shared field
(``BTC-USDTinitialMargin``, ``BTCUSDTmaintMargin``) is a symbol."""

TOTALS_PREFIX = "main"
"""``main<total>`` keys are account totals: ``maintotalWalletBalance`` -> ``totalWalletBalance``."""

Kind = Literal["total", "position_field", "asset", "symbol_margin", "position"]


def classify(key: str) -> tuple[Kind, str, str]:
    """``(kind, subject, field)`` of one raw key; the tables above decide, in order."""
    if key.startswith(TOTALS_PREFIX) and len(key) > len(TOTALS_PREFIX) and key[len(TOTALS_PREFIX)].islower():
        return "total", "", key[len(TOTALS_PREFIX) :]
    for suffix, field in POSITION_SUFFIXES.items():
        if key.endswith(suffix) and len(key) > len(suffix):
            return "position_field", key[: -len(suffix)], field
    for field in ASSET_FIELDS:
        if key.endswith(field) and len(key) > len(field):
            subject = key[: -len(field)]
            if subject in KNOWN_ASSETS:
                return "asset", subject, field
            if field in SYMBOL_MARGIN_FIELDS:
                return "symbol_margin", subject, field
    return "position", key, "size"


def venue_of(account: str) -> str:
    """``BINANCE-AAZ01-UM`` -> ``BINANCE``."""
    return account.split("-", 1)[0].upper()


def normalize_account(
    account: str, obj: Mapping[str, Any], observed_at: float, seq: int = 0, source: str = "galio"
) -> Snapshot:
    """Normalize one account object (assumed to be a JSON object) into a Snapshot."""
    values: dict[str, float] = {}
    invalid: dict[str, str] = {}
    positions: dict[str, dict[str, float | None]] = {}
    assets: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    margins: dict[str, dict[str, float]] = {}
    for key, raw in obj.items():
        number, reason = parse_number(raw)
        if reason is not None:
            invalid[key] = reason
        elif number is not None:
            values[key] = number
        kind, subject, field = classify(key)
        if kind == "position":
            positions.setdefault(subject, {})["size"] = number
        elif kind == "position_field":
            positions.setdefault(subject, {})[field] = number
        elif number is None:
            continue
        elif kind == "total":
            totals[field] = number
        elif kind == "asset":
            assets.setdefault(subject, {})[field] = number
        else:
            margins.setdefault(subject, {})[field] = number
    return Snapshot(
        account=account,
        venue=venue_of(account),
        source=source,
        seq=seq,
        observed_at=observed_at,
        raw=_raw(obj),
        values=values,
        invalid=invalid,
        positions={s: Position(symbol=s, **f) for s, f in positions.items()},
        assets=assets,
        totals=totals,
        symbol_margins=margins,
    )


def _raw(obj: Mapping[str, Any]) -> dict[str, JsonScalar | list[Any] | dict[str, Any]]:
    return dict(obj)
