"""Immutable records that cross process boundaries (as JSON): snapshots and alerts."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.feed import FEED_ASSET_FIELDS, KeyLayout, Layouts

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
    kind = type(value)
    if kind is float or kind is str:  # the common cases first; float() strips what strip() does
        try:
            number = float(value)
        except ValueError:
            return _parse_other(value)
        return (number, None) if math.isfinite(number) else (None, "not finite")
    if kind is int:
        return (float(value), None) if abs(value) < _FLOAT_MAX else (None, "too large")
    return _parse_other(value)


_FLOAT_MAX = 2**1024
"""Integers from here on have no float (``float()`` raises OverflowError)."""


def _parse_other(value: Any) -> tuple[float | None, str | None]:
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


ASSET_FIELDS: tuple[str, ...] = FEED_ASSET_FIELDS
"""The per-asset fields of the feed (``<ASSET><field>``, Binance futures account fields)."""


class Position(BaseModel):
    """One position of an account, from ``<SYMBOL>``, ``<SYMBOL>Avg-Price`` and
    ``<SYMBOL>Force-Liquid-Price``. A figure is None when absent or invalid."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    symbol: str
    size: float | None = None
    avg_price: float | None = None
    liquidation_price: float | None = None


class FeedViews(NamedTuple):
    """The typed views of one account object, derived from its raw keys by the tables of
    :mod:`shared.feed` (in raw key order). A position figure is None when absent or invalid; the
    other views hold only figures that parsed."""

    positions: dict[str, Position]
    assets: dict[str, dict[str, float]]
    totals: dict[str, float]
    symbol_margins: dict[str, dict[str, float]]


def feed_views(layout: KeyLayout, values: Mapping[str, float]) -> FeedViews:
    """The views of an account object with these raw keys and parsed values."""
    positions: dict[str, dict[str, float | None]] = {}
    assets: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    margins: dict[str, dict[str, float]] = {}
    for key, (kind, subject, field) in zip(layout.keys, layout.classified, strict=True):
        number = values.get(key)
        if kind == "position" or kind == "position_field":
            positions.setdefault(subject, {})[field] = number
        elif number is None:
            continue
        elif kind == "total":
            totals[field] = number
        elif kind == "asset":
            assets.setdefault(subject, {})[field] = number
        else:
            margins.setdefault(subject, {})[field] = number
    built = {s: Position(symbol=s, **f) for s, f in positions.items()}
    return FeedViews(built, assets, totals, margins)


DERIVED_VIEWS = frozenset({"positions", "assets", "totals", "symbol_margins", "values", "invalid"})
"""Views that were serialized fields before they were derived; dropped when validating an older
snapshot's JSON (``mx:latest`` written by an older ingestor)."""
CACHED = ("layout", "parsed", "feed_views")
"""The cached properties of a Snapshot."""


class Snapshot(BaseModel):
    """One account as one frame carried it. ``raw`` keeps the object exactly as received (key
    order included: the delta check depends on it), and is all a snapshot holds besides its
    identity and time: the rest is derived from it when first asked for, and not serialized.
    :meth:`number` parses one key; ``values`` holds every raw key whose value parsed to a finite
    number, ``invalid`` every key whose value was junk with the reason; the typed views
    (positions, assets, totals, symbol_margins) come from ``raw`` and ``values`` by the tables in
    :mod:`shared.feed`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    venue: str
    source: str = "galio"
    seq: int = 0
    observed_at: float
    raw: dict[str, JsonScalar | list[Any] | dict[str, Any]]

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        if isinstance(data, dict) and not DERIVED_VIEWS.isdisjoint(data):
            return {k: v for k, v in data.items() if k not in DERIVED_VIEWS}
        return data

    @cached_property
    def layout(self) -> KeyLayout:
        """The raw keys, classified once: this snapshot's own, or one shared by :meth:`sharing`."""
        return KeyLayout(tuple(self.raw))

    def sharing(self, layouts: Layouts) -> Self:
        """This snapshot, its layout taken from ``layouts`` (a cache the caller owns), so that
        snapshots with the same raw keys classify them once."""
        self.__dict__["layout"] = layouts.of(tuple(self.raw))
        return self

    @cached_property
    def parsed(self) -> tuple[dict[str, float], dict[str, str]]:
        """``(values, invalid)`` of the raw object (:func:`parse_values`), computed once."""
        return parse_values(self.raw)

    @property
    def values(self) -> dict[str, float]:
        return self.parsed[0]

    @property
    def invalid(self) -> dict[str, str]:
        return self.parsed[1]

    @cached_property
    def feed_views(self) -> FeedViews:
        """Every typed view, computed once per snapshot."""
        return feed_views(self.layout, self.values)

    @property
    def positions(self) -> dict[str, Position]:
        return self.feed_views.positions

    @property
    def assets(self) -> dict[str, dict[str, float]]:
        return self.feed_views.assets

    @property
    def totals(self) -> dict[str, float]:
        return self.feed_views.totals

    @property
    def symbol_margins(self) -> dict[str, dict[str, float]]:
        return self.feed_views.symbol_margins

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As pydantic's, but what is derived from the raw object is not carried over to a copy
        with another one."""
        copied = super().model_copy(update=update, deep=deep)
        if update and "raw" in update:
            for name in CACHED:
                copied.__dict__.pop(name, None)
        return copied

    def number(self, key: str) -> float | None:
        """The parsed value of a raw key (only that one is parsed), None when absent; raises
        InvalidValue when junk (on line 208: the golden recordings' check_error texts name it)."""
        value = self.raw.get(key)
        if type(value) is float and value - value == 0.0:  # finite: the common case
            return value
        number, reason = parse_number(value)
        if reason is not None:
            raise InvalidValue(self.account, key, reason)
        return number

    def number_or(self, key: str, default: float) -> float:
        """Like :meth:`number`, with a default for an absent key."""
        value = self.number(key)
        return default if value is None else value


def parse_values(raw: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """``(values, invalid)`` of an account object: every key whose value parses, and every key
    whose value is junk with the reason (absent values are in neither)."""
    values: dict[str, float] = {}
    invalid: dict[str, str] = {}
    for key, value in raw.items():
        if type(value) is float and math.isfinite(value):  # the common case, as parse_number decides
            values[key] = value
            continue
        number, reason = parse_number(value)
        if reason is not None:
            invalid[key] = reason
        elif number is not None:
            values[key] = number
    return values, invalid


AlertState = Literal["firing", "resolved"]
Severity = Literal["info", "warning", "critical"]


def alert_id(*parts: object) -> str:
    """A deterministic alert id: the same event always gets the same id, so a job that runs twice
    emits an alert the alerter recognises as already delivered."""
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()  # a name may hold one
    return digest[:24]


def fingerprint(instance: str, account: str, key: str) -> str:
    """The identity of an alert, not of one event: the same instance, account and key (the
    alert's keys joined by ``,``) always give the same fingerprint, so a firing alert, its
    cooldown repeats and its resolution share it, in every process and across restarts. 16 hex
    characters of a SHA-256 of the parts."""
    text = f"{instance}\x1f{account}\x1f{key}"
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:16]


BUILTIN_LABELS = ("check", "instance", "account", "venue", "severity", "key")
"""The labels MonitorX sets on alerts itself (``engine.alerts.make_alert``); a configuration
cannot set them."""


class Alert(BaseModel):
    """One notification on the alerts stream. ``observed_at`` is the evaluation time (the
    snapshot's observed time, or the tick time of time-driven checks); ``emitted_at`` is when the
    worker wrote it. The alerter adds ``delivered_at`` in its records.

    ``id`` names the event (one delivery); ``fingerprint`` names the alert across its events
    (:func:`fingerprint`); ``labels`` are everything routing, silences and inhibition match on
    (built by ``engine.alerts.make_alert``). An alert written without a fingerprint (by older
    code) gets the one of its instance, account and keys."""

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
    fingerprint: str = ""
    """:func:`fingerprint` of (instance, account, keys); filled in when written empty or absent."""

    @model_validator(mode="before")
    @classmethod
    def _fill_fingerprint(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("fingerprint"):
            return data
        instance, account, keys = data.get("instance"), data.get("account"), data.get("keys", ())
        if not (isinstance(instance, str) and isinstance(account, str) and isinstance(keys, list | tuple)):
            return data  # not an alert: validation says why
        if not all(isinstance(k, str) for k in keys):
            return data
        return {**data, "fingerprint": fingerprint(instance, account, ",".join(keys))}
