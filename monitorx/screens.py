"""The backtest's screens: for each builtin check, a cheap test on the raw account object that
returns False only when the check's ``evaluate``, on a snapshot of that object at the snapshot's
own time, would find nothing breached and raise nothing. The backtest (``monitorx.replay``) uses
them to settle quiet pairs without building a snapshot; the live pipeline never does, and checks
and plugins know nothing of them (a check without a screen is simply evaluated).

They are hand-written twins of the checks' triggers, held to their promise by
``tests/test_screens.py`` on thousands of random objects; replacing them with something derived
from the checks themselves is open work (README, Backtest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.checks import delta, low_balance, margin_risk, okx_hedge
from engine.checks.delta import DeltaParams
from engine.checks.low_balance import LowBalanceParams
from engine.checks.margin_risk import MarginRiskParams
from engine.checks.okx_hedge import HedgeParams
from engine.checks.stale_data import StaleDataParams
from shared.feed import KeyLayout
from shared.models import InvalidValue, raw_number

Screen = Callable[[Mapping[str, Any], KeyLayout, Any], bool]
AgeScreen = Callable[[float, Any], bool]


def priced_pairs(keys: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(first, second, price key of first)`` of every delta pair, in key order."""
    return [(first, second, first + delta.PRICE) for _, first, second in delta.pairs(keys)]


def delta_screen(raw: Mapping[str, Any], layout: KeyLayout, params: DeltaParams) -> bool:
    """True when a pair may breach (or a leg is null or empty, which evaluate reports)."""
    for first, second, price_key in layout.derived(priced_pairs):
        price = raw_number(raw, price_key)
        if not price:
            continue
        q1, q2 = raw_number(raw, first), raw_number(raw, second)
        if (
            q1 is None
            or q2 is None
            or delta.leg_values(q1, q2, price, params.sign_aware)[0] > params.threshold
        ):
            return True
    return False


def low_balance_screen(raw: Mapping[str, Any], layout: KeyLayout, params: LowBalanceParams) -> bool:
    strict = params.alert_zero_or_missing
    for asset, threshold in params.thresholds.items():
        if low_balance.below(raw_number(raw, f"{asset}walletBalance"), threshold, strict):
            return True
    return False


MARGIN_KEYS = tuple(key for key, _ in margin_risk.MARGINS.values())


def margin_risk_screen(raw: Mapping[str, Any], layout: KeyLayout, params: MarginRiskParams) -> bool:
    """evaluate's figures and comparisons, read from the raw object, without building findings
    (False only after reading every figure, so that junk raises as in evaluate)."""
    t = params.thresholds
    wallet = raw_number(raw, margin_risk.WALLET) or 1.0
    for key, limit in zip(MARGIN_KEYS, t.limits, strict=True):
        if (raw_number(raw, key) or 0.0) / wallet > limit:
            return True
    usdt, usdc = raw_number(raw, "USDTwalletBalance"), raw_number(raw, "USDCwalletBalance")
    return margin_risk.outside(margin_risk.stable_ratio(usdt or 0.0, usdc or 0.0), t)


def _raw_leg(raw: Mapping[str, Any], key: str, size: float) -> tuple[str, float, float]:
    contracts = raw_number(raw, key)
    if contracts is None:
        raise InvalidValue("", key, "no value for a position of a pair")
    return key, contracts, size


def okx_hedge_screen(raw: Mapping[str, Any], layout: KeyLayout, params: HedgeParams) -> bool:
    for base in params.symbols:
        sizes = params.contract_sizes[base]
        for keys in okx_hedge.leg_keys(base):
            if keys[0] not in raw or keys[1] not in raw:
                continue
            price = raw_number(raw, keys[1] + okx_hedge.PRICE)
            if not price:
                continue
            legs = [_raw_leg(raw, key, sizes[m]) for key, m in zip(keys, okx_hedge.MARGINS, strict=True)]
            if okx_hedge.net(legs, price)[1] > params.threshold:
                return True
    return False


def stale_screen(raw: Mapping[str, Any], layout: KeyLayout, params: StaleDataParams) -> bool:
    """Never breached at the snapshot's own time: its age is 0 and ``max_age`` is above 0."""
    return False


def stale_age_screen(age: float, params: StaleDataParams) -> bool:
    """For a tick: breached only when the newest snapshot is older than ``max_age``."""
    return age > params.max_age


SCREENS: Mapping[str, Screen] = {
    "delta": delta_screen,
    "low_balance": low_balance_screen,
    "margin_risk": margin_risk_screen,
    "okx_hedge": okx_hedge_screen,
    "stale_data": stale_screen,
}
"""Check name -> its screen."""
AGE_SCREENS: Mapping[str, AgeScreen] = {"stale_data": stale_age_screen}
"""Check name -> its age screen: for a time-driven check whose findings depend on the snapshot
only through its age, the same promise for any snapshot of that age (ticks then build none)."""
