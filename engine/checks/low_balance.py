"""Low wallet balance (legacy ``aaz_binance_low_balance_check``, spec section 3).

Per account and asset: breached when ``0 < <ASSET>walletBalance < threshold``. Legacy quirk, the
default: a balance of exactly 0, or a missing key, never alerts; ``alert_zero_or_missing: true``
alerts on both. Cooldown per (account, asset), never forgotten by a recovery. All assets that
fire on one evaluation go into one message.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from engine.checks import fmt
from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.models import Snapshot

DEFAULT_THRESHOLDS: dict[str, int | float] = {"USDT": 10000, "USDC": 10000, "BNB": 3}
"""The legacy thresholds (copied into each params object, never mutated)."""


class LowBalanceParams(Params):
    thresholds: dict[str, int | float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    """Asset -> lowest healthy wallet balance."""
    usd_assets: tuple[str, ...] = ("USDT", "USDC")
    """Assets written as dollars (``$1,234.50``, threshold ``$10,000``); others as ``1.2345``."""
    alert_zero_or_missing: bool = False
    """Fix for the legacy quirk: also alert on a balance of exactly 0 or a missing key."""


def evaluate(snap: Snapshot | None, params: LowBalanceParams, now: float) -> list[Finding]:
    if snap is None:
        return []
    findings = []
    for asset, threshold in params.thresholds.items():
        balance = snap.number(f"{asset}walletBalance")
        if balance is None and not params.alert_zero_or_missing:
            continue
        breached = params.alert_zero_or_missing if balance is None or balance <= 0 else balance < threshold
        findings.append(Finding(asset, breached, {"balance": balance, "threshold": threshold}))
    return findings


def _line(asset: str, balance: float | None, threshold: float, params: LowBalanceParams) -> str:
    dollars = asset in params.usd_assets
    limit = f"${fmt.given(threshold, commas=True)}" if dollars else fmt.given(threshold)
    if balance is None:
        return f"• {asset} wallet balance is missing (threshold {limit})"
    shown = fmt.usd(balance) if dollars else fmt.num(balance, 4, commas=True)
    return f"• {asset} wallet balance {shown} is below the threshold {limit}"


def render(
    account: str, snap: Snapshot | None, params: LowBalanceParams, fired: Sequence[Finding]
) -> Message:
    lines = [_line(f.key, f.detail["balance"], f.detail["threshold"], params) for f in fired]
    return Message(title=f"Low balance alert: {account}", text="\n".join(lines))


SPEC = CheckSpec(
    name="low_balance",
    params=LowBalanceParams,
    evaluate=evaluate,
    render=render,
    summary="Wallet balance of an asset below its threshold",
    forget_on_clear=False,
    default_delay=None,
    default_cooldown=60.0,
)
