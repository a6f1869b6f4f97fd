"""Normalization of one Galio account object into a :class:`Snapshot`.

The raw object is kept whole; its values are parsed (``shared.models.parse_number``) when a check
or a view first reads them, so a value that does not parse (``Snapshot.invalid``: raw key ->
reason) leaves every other figure intact. The key tables of ``shared.feed`` classify the raw keys
into the snapshot's typed views when a check first asks for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.feed import Layouts
from shared.models import Snapshot


def venue_of(account: str) -> str:
    """``BINANCE-AAZ01-UM`` -> ``BINANCE``."""
    return account.split("-", 1)[0].upper()


def normalize_account(account: str, obj: Mapping[str, Any], observed_at: float, seq: int = 0) -> Snapshot:
    """Normalize one account object (assumed to be a JSON object) into a Snapshot (source ``galio``,
    the model's default)."""
    return Snapshot(
        account=account,
        venue=venue_of(account),
        seq=seq,
        observed_at=observed_at,
        raw=dict(obj),
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

    def __call__(self, account: str, obj: Mapping[str, Any], observed_at: float, seq: int = 0) -> Snapshot:
        if not self.trusted:
            return normalize_account(account, obj, observed_at, seq).sharing(self.layouts)
        snap = Snapshot.model_construct(
            account=account,
            venue=venue_of(account),
            seq=seq,
            observed_at=float(observed_at),
            raw=dict(obj),
        )
        return snap.sharing(self.layouts)
