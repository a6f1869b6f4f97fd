"""Every screen of the backtest keeps its promise (``monitorx.screens``): when it returns False,
``evaluate`` on a snapshot of the same raw object, at the snapshot's own time, finds nothing
breached and raises nothing. Checked on thousands of random account objects mixing good figures,
figures near every threshold, zeros, strings, nulls and junk, under the legacy and fixed params,
and on the simulator's frames."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from engine.assess import assess, quiet_states
from engine.checks import delta, low_balance, margin_risk, okx_hedge, stale_data
from engine.checks.base import CheckSpec
from engine.plan import build
from engine.registry import Registry
from engine.state import KeyState
from ingestor.normalize import normalize_account
from monitorx.screens import AGE_SCREENS, SCREENS, delta_screen, low_balance_screen
from shared.config import parse
from shared.feed import KeyLayout
from simulator.frames import FrameGenerator, preset

ACC = "BINANCE-AAZ01-UM"
T = 1_700_000_000.0

KEYS = (
    "BTCUSDT", "BTCUSDC", "ETHUSDC", "ETHUSDT", "SOLUSDT",
    "BTCUSDTAvg-Price", "BTCUSDCAvg-Price", "ETHUSDCAvg-Price", "ETHUSDTAvg-Price",
    "ETH-USDC-SWAP", "ETH-USDT-SWAP", "ETH-USDT-SWAPAvg-Price", "BTC-USDC-SWAP", "BTC-USDT-SWAP",
    "BTC-USDT-SWAPAvg-Price", "OKX-P-ETHUSDC", "OKX-P-ETHUSDT", "OKX-P-ETHUSDTAvg-Price",
    "USDTwalletBalance", "USDCwalletBalance", "BNBwalletBalance",
    "maintotalWalletBalance", "maintotalInitialMargin", "maintotalMaintMargin",
    "maintotalPositionInitialMargin", "mainmaxWithdrawAmount",
)  # fmt: skip
"""Every key a builtin screen reads, and a few it must ignore."""


def _value(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.55:
        return rng.choice([1, -1]) * rng.choice([0.001, 0.3, 1.0, 2.9, 3.0, 3.1, 50.0, 99.9, 100.0, 100.1])
    if kind < 0.7:
        return rng.choice([0, 0.0, -0.0, 1, 3, 10000, 9999.99, 10000.01, 20000.0, 70000.0, 1e9])
    if kind < 0.8:
        return rng.choice(["12000.5", "0", "-3.5", " 7 ", "1e3", "0.00000000", "9999.99000000"])
    if kind < 0.9:
        return rng.choice([None, "", "  "])
    return rng.choice(["junk", "nan", "inf", "-inf", True, False, [1], {"a": 1}, 10**400, "1e999"])


def objects(rng: random.Random, count: int) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        keys = rng.sample(KEYS, rng.randint(0, len(KEYS)))
        yield {key: _value(rng) for key in keys}


def simulated() -> Iterator[dict[str, Any]]:
    generator = FrameGenerator(preset("demo", accounts=4, okx=True))
    for i in range(200):
        frame = generator.frame(i * 0.7)
        if frame is not None:
            yield from frame["pos"].values()


PARAMS: list[tuple[CheckSpec[Any], BaseModel]] = [
    (delta.SPEC, delta.DeltaParams()),
    (delta.SPEC, delta.DeltaParams(threshold=0)),
    (delta.SPEC, delta.DeltaParams(threshold=50.5, sign_aware=True)),
    (okx_hedge.SPEC, okx_hedge.HedgeParams(threshold=100)),
    (okx_hedge.SPEC, okx_hedge.HedgeParams(threshold=0, symbols=("ETH",))),
    (low_balance.SPEC, low_balance.LowBalanceParams()),
    (low_balance.SPEC, low_balance.LowBalanceParams(alert_zero_or_missing=True)),
    (margin_risk.SPEC, margin_risk.MarginRiskParams()),
    (
        margin_risk.SPEC,
        margin_risk.MarginRiskParams.model_validate(
            {"thresholds": {"initial_margin": 0.7, "usdt_usdc_ratio_min": 0.6, "usdt_usdc_ratio_max": 2.0}}
        ),
    ),
    (stale_data.SPEC, stale_data.StaleDataParams(max_age=0.001)),
]


def _outcome(spec: CheckSpec[Any], obj: dict[str, Any], params: BaseModel) -> tuple[bool, bool]:
    """``(screen says maybe, evaluate breaches or raises)`` for one object."""
    try:
        maybe = SCREENS[spec.name](obj, KeyLayout(tuple(obj)), params)
    except ValueError:
        maybe = True
    snap = normalize_account(ACC, obj, observed_at=T)
    try:
        alarming = any(f.breached for f in spec.evaluate(snap, params, T))
    except ValueError:
        alarming = True
    return maybe, alarming


@pytest.mark.parametrize(("spec", "params"), PARAMS, ids=lambda p: getattr(p, "name", ""))
def test_screen_never_hides_a_breach_or_an_error(spec: CheckSpec[Any], params: BaseModel) -> None:
    rng = random.Random(f"{spec.name}:{params!r}")
    seen = {(True, True): 0, (True, False): 0, (False, False): 0}
    for obj in [*objects(rng, 4000), *simulated()]:
        maybe, alarming = _outcome(spec, obj, params)
        assert maybe or not alarming, f"{spec.name} screened out an alarming object: {obj}"
        seen[(maybe, alarming)] += 1
    assert seen[(False, False)] > 0, "the screen never settled anything: the test proves nothing"
    if spec is not stale_data.SPEC:
        assert seen[(True, True)] > 0, "no object breached or raised: the test proves nothing"


def test_screens_are_tight_on_healthy_simulated_accounts() -> None:
    """On the simulator's healthy accounts, the screens settle (almost) everything: that is what
    makes them worth having."""
    params = low_balance.LowBalanceParams(thresholds={"USDT": 100, "USDC": 100, "BNB": 0.1})
    healthy = list(simulated())
    assert healthy
    assert not any(low_balance_screen(o, KeyLayout(tuple(o)), params) for o in healthy)
    assert not any(delta_screen(o, KeyLayout(tuple(o)), delta.DeltaParams(threshold=1e9)) for o in healthy)


def test_every_builtin_snapshot_check_has_a_screen() -> None:
    """A builtin per-snapshot check without a screen would make the backtest build a snapshot and
    evaluate on every frame."""
    for spec in Registry.discover(plugins=False).specs.values():
        if isinstance(spec, CheckSpec):
            assert spec.name in SCREENS, spec.name


@pytest.mark.parametrize("max_age", [0.001, 1.0, 10.0, 600.0])
def test_age_screen_never_hides_stale_data(max_age: float) -> None:
    params = stale_data.StaleDataParams(max_age=max_age)
    snap = normalize_account(ACC, {"USDTwalletBalance": 1.0}, observed_at=T)
    settled = 0
    for age in [0.0, max_age / 2, max_age, max_age + 1e-9, max_age * 2, max_age + 3600]:
        maybe = AGE_SCREENS["stale_data"](age, params)
        breached = any(f.breached for f in stale_data.evaluate(snap, params, T + age))
        assert maybe or not breached, (age, max_age)
        settled += not maybe
    assert 0 < settled < 6


QUIET_CONFIG = """
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*"]
    cooldown: 30
    resolved: true
  delta:
    check: delta
    accounts: ["BINANCE-*"]
    delay: 5
    cooldown: 60
"""


def test_quiet_states_are_the_states_assess_writes_when_it_sends_nothing() -> None:
    """The backtest moves a pair from the screeners' (key, breached) verdicts alone unless an
    alert is due: the states must be assess's, and None exactly when assess sends an alert."""
    plan = build(parse(QUIET_CONFIG, "quiet.yaml"), Registry.discover())
    rng = random.Random("quiet")
    stepped = assessed = 0
    for bound in (plan.get("low"), plan.get("delta")):
        assert bound is not None
        prior: dict[str, KeyState] = {}
        for i, obj in enumerate(objects(rng, 3000)):
            now = T + i * rng.choice([0.2, 1.0, 7.0, 40.0])
            snap = normalize_account(ACC, obj, observed_at=now)
            result = assess(bound, ACC, snap, now, prior, now)
            try:
                verdicts = [(f.key, f.breached) for f in bound.check.evaluate(snap, bound.params, now)]
            except ValueError:
                prior = result.states  # assess reported the error; nothing to compare
                continue
            states = quiet_states(bound, prior, now, verdicts)
            if result.alerts:
                assert states is None
                assessed += 1
            else:
                assert states == result.states
                stepped += 1
            prior = {k: s for k, s in result.states.items() if s != KeyState()}
    assert stepped > 100 and assessed > 10
