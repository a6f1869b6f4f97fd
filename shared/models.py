"""Immutable records that cross process boundaries (as JSON): snapshots and alerts."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JsonScalar = str | int | float | bool | None


class InvalidValue(ValueError):
    """A check asked for a figure whose raw value did not parse."""

    def __init__(self, account: str, key: str, reason: str) -> None:
        super().__init__(f"{account}: key {key!r} is invalid ({reason})")
        self.account = account
        self.key = key
        self.reason = reason


def parse_number(value: Any) -> tuple[float | None, str | None]:
    """Parse one raw feed value: ``(number, None)``, ``(None, None)`` when absent, or
    ``(None, reason)`` when it is junk. Numbers and numeric strings parse; null and the empty
    string are absent; booleans, non-finite numbers and everything else are junk."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, "boolean"
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"not a number: {value[:40]!r}"
    else:
        return None, f"unexpected {type(value).__name__}"
    if not math.isfinite(number):
        return None, "not finite"
    return number, None


ASSET_FIELDS: tuple[str, ...] = (
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


class Position(BaseModel):
    """One position of an account, from ``<SYMBOL>``, ``<SYMBOL>Avg-Price`` and
    ``<SYMBOL>Force-Liquid-Price``. A figure is None when absent or invalid."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    symbol: str
    size: float | None = None
    avg_price: float | None = None
    liquidation_price: float | None = None


class Snapshot(BaseModel):
    """The complete state of one account as one frame carried it, normalized at the edge.

    ``raw`` keeps the account object exactly as received (key order included: the delta check
    depends on it). ``values`` holds every raw key whose value parsed to a finite number,
    ``invalid`` every key whose value was junk with the reason. The typed views (positions,
    assets, totals, symbol_margins) are derived from the tables in :mod:`ingestor.normalize`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    venue: str
    source: str = "galio"
    seq: int = 0
    observed_at: float
    raw: dict[str, JsonScalar | list[Any] | dict[str, Any]]
    values: dict[str, float] = Field(default_factory=dict)
    invalid: dict[str, str] = Field(default_factory=dict)
    positions: dict[str, Position] = Field(default_factory=dict)
    assets: dict[str, dict[str, float]] = Field(default_factory=dict)
    totals: dict[str, float] = Field(default_factory=dict)
    symbol_margins: dict[str, dict[str, float]] = Field(default_factory=dict)

    def number(self, key: str) -> float | None:
        """The parsed value of a raw key, None when absent; raises InvalidValue when junk."""
        if key in self.invalid:
            raise InvalidValue(self.account, key, self.invalid[key])
        return self.values.get(key)

    def number_or(self, key: str, default: float) -> float:
        """Like :meth:`number`, with a default for an absent key."""
        value = self.number(key)
        return default if value is None else value


AlertState = Literal["firing", "resolved"]
Severity = Literal["info", "warning", "critical"]


def alert_id(*parts: object) -> str:
    """A deterministic alert id: the same event always gets the same id, so a job that runs twice
    emits an alert the alerter recognises as already delivered."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return digest[:24]


class Alert(BaseModel):
    """One notification on the alerts stream. ``observed_at`` is the evaluation time (the
    snapshot's observed time, or the tick time of time-driven checks); ``emitted_at`` is when the
    worker wrote it. The alerter adds ``delivered_at`` in its records."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    check: str
    instance: str
    account: str
    state: AlertState
    severity: Severity = "warning"
    keys: tuple[str, ...] = ()
    title: str
    text: str
    observed_at: float
    emitted_at: float
    labels: dict[str, str] = Field(default_factory=dict)
