"""The Galio feed's flat keys, classified by table (pure: no state, no I/O).

Galio keys are flat and not self-describing: every raw key of an account object is read as an
account total, a position figure, a per-asset field, a per-symbol margin figure or a position
size by the tables below, in order. :class:`shared.models.Snapshot` derives its typed views
(positions, assets, totals, symbol_margins) from them when they are first asked for.

A :class:`KeyLayout` holds one tuple of raw keys, classified once; whoever normalizes a stream of
account objects (the backtest) can share one layout between the snapshots with the same keys
through a :class:`Layouts` cache it owns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Literal, TypeVar, cast

FEED_ASSET_FIELDS: tuple[str, ...] = (
    "walletBalance",
    "initialMargin",
    "maintMargin",
    "unrealizedProfit",
    "marginBalance",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "availableBalance",
    "maxWithdrawAmount",
)
"""The per-asset fields of the feed (``<ASSET><field>``, Binance futures account fields)."""

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
Classified = tuple[Kind, str, str]


def classify(key: str) -> Classified:
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


T = TypeVar("T")
LAYOUTS_LIMIT = 1024
"""Distinct key tuples a :class:`Layouts` cache holds before it starts again."""


class KeyLayout:
    """One tuple of raw keys: its classification, computed once, and memos of any other function
    of the keys alone (:meth:`derived`). A memo is shared by every snapshot sharing the layout:
    callers must not mutate what it returns."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self._derived: dict[Callable[[tuple[str, ...]], Any], Any] = {}

    def __reduce__(self) -> tuple[type[KeyLayout], tuple[tuple[str, ...]]]:
        return KeyLayout, (self.keys,)  # memos (maybe of lambdas) are not pickled

    @cached_property
    def classified(self) -> tuple[Classified, ...]:
        """``classify`` of every key, in key order."""
        return tuple(classify(key) for key in self.keys)

    def derived(self, fn: Callable[[tuple[str, ...]], T]) -> T:
        """``fn(keys)``, computed once per layout."""
        if fn not in self._derived:
            self._derived[fn] = fn(self.keys)
        return cast(T, self._derived[fn])


class Layouts:
    """A cache of :class:`KeyLayout` by key tuple, owned by one normalizer."""

    def __init__(self, limit: int = LAYOUTS_LIMIT) -> None:
        self.limit = limit
        self._by_keys: dict[tuple[str, ...], KeyLayout] = {}

    def of(self, keys: tuple[str, ...]) -> KeyLayout:
        layout = self._by_keys.get(keys)
        if layout is None:
            if len(self._by_keys) >= self.limit:
                self._by_keys.clear()
            layout = self._by_keys[keys] = KeyLayout(keys)
        return layout
