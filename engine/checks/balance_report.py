"""Scheduled balance report (legacy ``generate_balance_report``, spec section 5).

Per account, from its newest snapshot: USDT and USDC wallet balances with their shares of
``maintotalWalletBalance`` (0 when that total is 0), BNB, and TOTAL; then the sums over the
accounts with data. A missing key counts as 0, as the legacy read it. Built from the newest
snapshots even when no frame arrived in the slot's minute (the legacy skipped the report then),
so an account whose data is older than ``stale_after`` seconds says how old; accounts without
any data are listed. A value that does not parse shows ``invalid`` for that account only, is
named, and is left out of the sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields

from pydantic import Field

from engine.checks import fmt
from engine.checks.base import Message, Params, ReportSpec
from shared.config import DEFAULT_STALE_AFTER
from shared.models import Snapshot

KEYS = ("USDTwalletBalance", "USDCwalletBalance", "BNBwalletBalance", "maintotalWalletBalance")
"""The figures of one account, in the order of :class:`Balances`."""


class BalanceReportParams(Params):
    stale_after: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    """Seconds: older data is shown with its age."""


@dataclass(frozen=True)
class Balances:
    """Figures of one account (NaN when unreadable) or sums over accounts."""

    usdt: float
    usdc: float
    bnb: float
    total: float


def balances(snap: Snapshot) -> Balances:
    return Balances(*(fmt.lenient(snap, key) or 0.0 for key in KEYS))


def _sum(values: Iterable[float]) -> float:
    return sum((v for v in values if not math.isnan(v)), 0.0)


def summed(rows: Sequence[Balances]) -> Balances:
    """Column sums in account order, leaving out unreadable figures."""
    return Balances(*(_sum(getattr(row, f.name) for row in rows) for f in fields(Balances)))


def _share(part: float, total: float) -> float:
    return part / total if total else 0.0


def lines(row: Balances) -> list[str]:
    return [
        f"  USDT: {fmt.usd_share(row.usdt, _share(row.usdt, row.total), 1)}",
        f"  USDC: {fmt.usd_share(row.usdc, _share(row.usdc, row.total), 1)}",
        f"  BNB: {fmt.maybe(row.bnb, lambda v: fmt.num(v, 4, commas=True))}",
        f"  TOTAL: {fmt.maybe(row.total, fmt.usd)}",
    ]


def _account(account: str, snap: Snapshot, params: BalanceReportParams, slot: float) -> list[str]:
    head = f"{account}{fmt.staleness(snap.observed_at, slot, params.stale_after)}"
    bad = [f"{key} ({snap.invalid[key]})" for key in KEYS if key in snap.invalid]
    return [head, *lines(balances(snap)), *([f"  Unreadable: {'; '.join(bad)}"] if bad else [])]


def _summary(present: Mapping[str, Snapshot]) -> list[str]:
    rows = {account: balances(snap) for account, snap in present.items()}
    partial = [a for a, row in rows.items() if any(math.isnan(v) for v in astuple(row))]
    note = [f"  Sums leave out the unreadable figures of: {', '.join(partial)}"] if partial else []
    return [f"All accounts ({len(rows)} with data)", *lines(summed(list(rows.values()))), *note]


ALL_ACCOUNTS = "*"


def build(snapshots: Mapping[str, Snapshot | None], params: BalanceReportParams, slot: float) -> Message:
    present = {a: s for a, s in snapshots.items() if s is not None}
    missing = [a for a, s in snapshots.items() if s is None]
    text = [f"Balance report {fmt.hhmm(slot)}"]
    for account, snap in present.items():
        text += _account(account, snap, params, slot)
    text += _summary(present)
    text += [f"No data: {', '.join(missing)}"] if missing else []
    return Message(title=f"Balance report {fmt.hhmm(slot)}", text="\n".join(text), severity="info")


def build_all(
    snapshots: Mapping[str, Snapshot | None], params: BalanceReportParams, slot: float
) -> list[tuple[str, Message]]:
    """The report as the framework takes it: one message about all accounts."""
    return [(ALL_ACCOUNTS, build(snapshots, params, slot))]


SPEC = ReportSpec(
    name="balance_report",
    params=BalanceReportParams,
    build=build_all,
    summary="USDT, USDC, BNB and total wallet balance of every account, and their sums",
)
