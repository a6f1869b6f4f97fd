"""Margin usage and USDT/USDC balance (legacy ``margin_risk_alert``, spec section 4).

wallet = ``maintotalWalletBalance`` (1 when 0 or missing); initial, maintenance and position
margin as shares of it; ``usdt_usdc_ratio`` = USDT / USDC wallet balance (``inf`` when USDC is 0).
A missing margin or balance key counts as 0, as the legacy read them. Breached: a margin share
above its threshold, the ratio outside [min, max]. Cooldown per (account, metric), never forgotten
by a recovery. The metrics that fire go into one message, with the account's margin table.

A junk value of a figure the metrics use raises InvalidValue (check_error); the table's max
withdrawable is display-only and shows ``invalid`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.checks import fmt
from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.models import Snapshot

RATIO = "usdt_usdc_ratio"
MARGINS: Mapping[str, tuple[str, str]] = {
    "initial_margin": ("maintotalInitialMargin", "Initial margin"),
    "maint_margin": ("maintotalMaintMargin", "Maintenance margin"),
    "position_margin": ("maintotalPositionInitialMargin", "Position initial margin"),
}
"""Metric -> (total key, label), in message order."""
WALLET = "maintotalWalletBalance"
WITHDRAWABLE = "mainmaxWithdrawAmount"


class MarginThresholds(Params):
    initial_margin: int | float = 0.8
    maint_margin: int | float = 0.2
    position_margin: int | float = 0.75
    usdt_usdc_ratio_min: int | float = 0.5
    usdt_usdc_ratio_max: int | float = 2.5

    def limit(self, metric: str) -> float:
        """The threshold of a margin metric (``initial_margin``, ...)."""
        return float(getattr(self, metric))


class MarginRiskParams(Params):
    thresholds: MarginThresholds = MarginThresholds()
    """Margin shares of wallet (0.7 = 70%) and the bounds of the USDT/USDC ratio (printed as given)."""


@dataclass(frozen=True)
class Figures:
    wallet: float
    """As used: 1 when the raw value is 0 or missing."""
    wallet_raw: float | None
    margins: dict[str, float]
    """Metric -> margin in USD."""
    usdt: float
    usdc: float

    def share(self, metric: str) -> float:
        return self.margins[metric] / self.wallet

    @property
    def ratio(self) -> float:
        """USDT / USDC wallet balance; ``inf`` when USDC is 0."""
        return self.usdt / self.usdc if self.usdc else math.inf


def figures(snap: Snapshot) -> Figures:
    raw = snap.number(WALLET)
    margins = {metric: snap.number_or(key, 0.0) for metric, (key, _) in MARGINS.items()}
    usdt, usdc = snap.number_or("USDTwalletBalance", 0.0), snap.number_or("USDCwalletBalance", 0.0)
    return Figures(raw or 1.0, raw, margins, usdt, usdc)


def evaluate(snap: Snapshot | None, params: MarginRiskParams, now: float) -> list[Finding]:
    if snap is None:
        return []
    fig, t = figures(snap), params.thresholds
    found = [Finding(m, fig.share(m) > t.limit(m), {"ratio": fig.share(m)}) for m in MARGINS]
    outside = not t.usdt_usdc_ratio_min <= fig.ratio <= t.usdt_usdc_ratio_max
    return [*found, Finding(RATIO, outside, {"ratio": fig.ratio})]


def _breach_line(finding: Finding, t: MarginThresholds) -> str:
    ratio = finding.detail["ratio"]
    if finding.key == RATIO:
        bounds = f"[{fmt.given(t.usdt_usdc_ratio_min)}, {fmt.given(t.usdt_usdc_ratio_max)}]"
        return f"• USDT/USDC ratio {fmt.ratio(ratio)} is outside {bounds}"
    label = MARGINS[finding.key][1]
    return f"• {label} {fmt.pct(ratio)} of wallet is above {fmt.pct(t.limit(finding.key), 0)}"


def _row(label: str, value: float, share: float | None) -> str:
    return f"{label}: {fmt.usd_share(value, share)}"


def table(snap: Snapshot, fig: Figures) -> list[str]:
    note = "" if fig.wallet_raw else f" ({WALLET} is 0 or missing: 1 is used)"
    rows = [f"Wallet: {fmt.usd(fig.wallet)}{note}"]
    rows += [_row(label, fig.margins[m], fig.share(m)) for m, (_, label) in MARGINS.items()]
    withdrawable = fmt.lenient(snap, WITHDRAWABLE) or 0.0
    rows.append(_row("Max withdrawable", withdrawable, withdrawable / fig.wallet))
    stable = fig.usdt + fig.usdc  # USDT and USDC as shares of their sum (N/A when it is 0)
    rows += [_row(a, v, v / stable if stable else None) for a, v in (("USDT", fig.usdt), ("USDC", fig.usdc))]
    return [*rows, f"USDT/USDC ratio: {fmt.ratio(fig.ratio)}"]


def render(
    account: str, snap: Snapshot | None, params: MarginRiskParams, fired: Sequence[Finding]
) -> Message:
    assert snap is not None  # evaluate finds nothing without a snapshot
    lines = [_breach_line(f, params.thresholds) for f in fired]
    text = "\n".join([f"Account {account}:", *lines, "", *table(snap, figures(snap))])
    return Message(title=f"Margin risk alert: {account}", text=text, severity="critical")


SPEC = CheckSpec(
    name="margin_risk",
    params=MarginRiskParams,
    evaluate=evaluate,
    render=render,
    summary="Margin usage of wallet above its thresholds, or USDT/USDC ratio outside its bounds",
    forget_on_clear=False,
    default_delay=None,
    default_cooldown=60.0,
)
