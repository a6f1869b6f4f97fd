"""Scheduled full margin snapshot (legacy ``margin_full_snapshot``, spec section 6; the legacy
crashed when enabled, this one runs).

Per account: wallet and the four totals (initial, maintenance, position-initial margin, max
withdrawable; a missing total counts as 0) with their shares of wallet (``N/A`` when the wallet
is 0); per symbol the initial and maintenance margin and cross unrealised PnL; per asset (USDT,
USDC, BTC, when it has a walletBalance, initialMargin or marginBalance) the nine asset fields
(``N/A`` when missing); and the USDT/USDC split of their wallet balances (``N/A`` when both are 0).
A value that does not parse shows ``invalid`` and is named; the other accounts are unaffected.

:func:`build_each` gives one message per account; :func:`build` (the current contract) joins them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from engine.checks import fmt
from engine.checks.base import Message, Params, ReportSpec
from shared.config import DEFAULT_STALE_AFTER
from shared.models import ASSET_FIELDS, Snapshot

WALLET = "maintotalWalletBalance"
TOTALS = (
    ("maintotalInitialMargin", "Initial margin"),
    ("maintotalMaintMargin", "Maintenance margin"),
    ("maintotalPositionInitialMargin", "Position initial margin"),
    ("mainmaxWithdrawAmount", "Max withdrawable"),
)
SYMBOL_FIELDS = (
    ("initialMargin", "initial"),
    ("maintMargin", "maintenance"),
    ("crossUnPnl", "unrealised PnL"),
)
ASSETS = ("USDT", "USDC", "BTC")
SHOWN_WHEN = ("walletBalance", "initialMargin", "marginBalance")
"""An asset is shown when it has any of these fields."""


class MarginSnapshotParams(Params):
    stale_after: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    """Seconds: older data is shown with its age."""


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def totals(snap: Snapshot) -> list[str]:
    wallet = fmt.lenient(snap, WALLET) or 0.0
    rows = [f"Wallet: {fmt.maybe(wallet, fmt.usd)}"]
    for key, label in TOTALS:
        value = fmt.lenient(snap, key) or 0.0
        rows.append(f"{label}: {fmt.usd_share(value, _share(value, wallet))}")
    return rows


def symbols(snap: Snapshot) -> list[str]:
    rows = []
    for symbol in snap.symbol_margins:
        shown = (f"{label} {fmt.maybe(fmt.lenient(snap, symbol + f), fmt.usd)}" for f, label in SYMBOL_FIELDS)
        rows.append(f"  {symbol}: {', '.join(shown)}")
    return ["Symbols:", *rows] if rows else []


def assets(snap: Snapshot) -> list[str]:
    rows = []
    for asset in ASSETS:
        if any(asset + f in snap.values or asset + f in snap.invalid for f in SHOWN_WHEN):
            shown = (f"{f} {fmt.maybe(fmt.lenient(snap, asset + f), fmt.usd)}" for f in ASSET_FIELDS)
            rows.append(f"  {asset}: {', '.join(shown)}")
    return ["Assets:", *rows] if rows else []


def split(snap: Snapshot) -> str:
    usdt, usdc = (fmt.lenient(snap, f"{a}walletBalance") or 0.0 for a in ("USDT", "USDC"))
    shares = [fmt.maybe(_share(x, usdt + usdc), fmt.pct) for x in (usdt, usdc)]
    return f"USDT/USDC split: USDT {shares[0]}, USDC {shares[1]}"


def section(account: str, snap: Snapshot | None, params: MarginSnapshotParams, slot: float) -> str:
    if snap is None:
        return f"{account}: no data"
    head = f"{account} at {fmt.hhmm(slot)}{fmt.staleness(snap.observed_at, slot, params.stale_after)}"
    bad = [f"{key} ({reason})" for key, reason in snap.invalid.items()]
    tail = [f"Unreadable: {'; '.join(bad)}"] if bad else []
    return "\n".join([head, *totals(snap), *symbols(snap), *assets(snap), split(snap), *tail])


def build_each(
    snapshots: Mapping[str, Snapshot | None], params: MarginSnapshotParams, slot: float
) -> list[tuple[str, Message]]:
    """One message per account: ``(account, message)``."""
    title = f"Margin snapshot {fmt.hhmm(slot)}"
    return [
        (account, Message(f"{title}: {account}", section(account, snap, params, slot), "info"))
        for account, snap in snapshots.items()
    ]


def build(snapshots: Mapping[str, Snapshot | None], params: MarginSnapshotParams, slot: float) -> Message:
    text = "\n\n".join(m.text for _, m in build_each(snapshots, params, slot))
    return Message(title=f"Margin snapshot {fmt.hhmm(slot)}", text=text, severity="info")


SPEC = ReportSpec(
    name="margin_snapshot",
    params=MarginSnapshotParams,
    build=build_each,
    summary="Wallet, margins, per-symbol and per-asset margin figures of every account",
)
