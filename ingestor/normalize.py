"""Table-driven normalization of one Galio account object into a :class:`Snapshot`.

Every value is parsed (``shared.models.parse_number``) and the raw object is kept whole; a value
that does not parse is recorded in ``Snapshot.invalid`` (raw key -> reason) and leaves every other
figure intact. The key tables (``shared.feed``, re-exported here) classify the raw keys into the
snapshot's typed views when a check first asks for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import Any

from shared.feed import (
    ASSET_FIELDS,
    KNOWN_ASSETS,
    POSITION_SUFFIXES,
    SYMBOL_MARGIN_FIELDS,
    TOTALS_PREFIX,
    Kind,
    Layouts,
    classify,
)
from shared.models import JsonScalar, Snapshot, parse_number

__all__ = [
    "ASSET_FIELDS",
    "KNOWN_ASSETS",
    "POSITION_SUFFIXES",
    "SYMBOL_MARGIN_FIELDS",
    "TOTALS_PREFIX",
    "Kind",
    "Normalizer",
    "classify",
    "normalize_account",
    "parse_values",
    "venue_of",
]


def venue_of(account: str) -> str:
    """``BINANCE-AAZ01-UM`` -> ``BINANCE``."""
    return account.split("-", 1)[0].upper()


def parse_values(obj: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """``(values, invalid)`` of an account object: every key whose value parses, and every key
    whose value is junk with the reason (absent values are in neither)."""
    values: dict[str, float] = {}
    invalid: dict[str, str] = {}
    for key, raw in obj.items():
        if type(raw) is float and isfinite(raw):  # the common case, decided as parse_number does
            values[key] = raw
            continue
        number, reason = parse_number(raw)
        if reason is not None:
            invalid[key] = reason
        elif number is not None:
            values[key] = number
    return values, invalid


def normalize_account(
    account: str, obj: Mapping[str, Any], observed_at: float, seq: int = 0, source: str = "galio"
) -> Snapshot:
    """Normalize one account object (assumed to be a JSON object) into a Snapshot."""
    values, invalid = parse_values(obj)
    return Snapshot(
        account=account,
        venue=venue_of(account),
        source=source,
        seq=seq,
        observed_at=observed_at,
        raw=_raw(obj),
        values=values,
        invalid=invalid,
    )


class Normalizer:
    """:func:`normalize_account` for a stream of account objects decoded from JSON (the backtest
    creates one): snapshots with the same raw keys share one :class:`shared.feed.KeyLayout`, so
    their keys are classified (and the delta pairs grouped) once. ``trusted``: every object is
    a JSON object as decoded (string keys; strings, numbers, booleans, nulls, lists, objects), so
    pydantic's validation would return it unchanged and is skipped."""

    def __init__(self, trusted: bool = False) -> None:
        self.trusted = trusted
        self.layouts = Layouts()

    def __call__(
        self, account: str, obj: Mapping[str, Any], observed_at: float, seq: int = 0, source: str = "galio"
    ) -> Snapshot:
        if not self.trusted:
            return normalize_account(account, obj, observed_at, seq, source).sharing(self.layouts)
        values, invalid = parse_values(obj)
        snap = Snapshot.model_construct(
            account=account,
            venue=venue_of(account),
            source=source,
            seq=seq,
            observed_at=float(observed_at),
            raw=_raw(obj),
            values=values,
            invalid=invalid,
        )
        return snap.sharing(self.layouts)


def _raw(obj: Mapping[str, Any]) -> dict[str, JsonScalar | list[Any] | dict[str, Any]]:
    return dict(obj)
