"""delta check (spec section 1): grouping, first-leg price, the legacy |abs - abs| quirk and the
sign_aware fix, the figures of the message. Expected figures are computed by hand in comments."""

from __future__ import annotations

from typing import Any

import pytest

from engine.checks import delta
from ingestor.normalize import normalize_account
from shared.models import InvalidValue, Snapshot

ACC = "BINANCE-AAZ01-UM"


def snap(obj: dict[str, Any]) -> Snapshot:
    return normalize_account(ACC, obj, observed_at=1000.0)


def findings(obj: dict[str, Any], **params: Any) -> dict[str, tuple[bool, float]]:
    found = delta.evaluate(snap(obj), delta.DeltaParams(**params), 1000.0)
    return {f.key: (f.breached, f.detail["delta"]) for f in found}


def text(obj: dict[str, Any], **params: Any) -> str:
    s, p = snap(obj), delta.DeltaParams(**params)
    fired = [f for f in delta.evaluate(s, p, 1000.0) if f.breached]
    return delta.render(ACC, s, p, fired).text


OPPOSITE = {"BTCUSDT": 0.5, "BTCUSDTAvg-Price": 64000.1, "BTCUSDC": "-0.48", "BTCUSDCAvg-Price": 1.0}
SAME_SIDE = {"BTCUSDT": 1, "BTCUSDTAvg-Price": 100, "BTCUSDC": 1}
FULL_ACCOUNT = {
    "USDTwalletBalance": "12000.5",
    "maintotalWalletBalance": 20000,
    "BTCUSDT": 2,
    "BTCUSDTAvg-Price": 100,
    "BTCUSDTForce-Liquid-Price": 50,
    "BTC-USDTinitialMargin": 10,
    "BTCUSDC": -1,
    "ETHUSDT": 5,
    "ETHUSDTAvg-Price": 10,
}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, tuple[bool, float]]]] = [
    # v1 = |0.5 x 64000.1| = 32000.05, v2 = |-0.48 x 64000.1| = 30720.048, delta = 1280.002
    ("opposite legs", OPPOSITE, {}, {"BTCUSDT/BTCUSDC": (True, 1280.002)}),
    # quirk: v1 = |1 x 100| = 100, v2 = 100, delta = |100 - 100| = 0: same side reads as hedged
    ("same side legacy", SAME_SIDE, {}, {"BTCUSDT/BTCUSDC": (False, 0.0)}),
    # fix: delta = |100 + 100| = 200 > 100
    ("same side sign_aware", SAME_SIDE, {"sign_aware": True}, {"BTCUSDT/BTCUSDC": (True, 200.0)}),
    # hedged both ways: |100 - 100| = 0 and |100 + (-100)| = 0
    ("hedged legacy", {**SAME_SIDE, "BTCUSDC": -1}, {}, {"BTCUSDT/BTCUSDC": (False, 0.0)}),
    (
        "hedged sign_aware",
        {**SAME_SIDE, "BTCUSDC": -1},
        {"sign_aware": True},
        {"BTCUSDT/BTCUSDC": (False, 0.0)},
    ),
    # USDC key first: price = 3000; v1 = 2 x 3000 = 6000, v2 = 1 x 3000 = 3000, delta 3000
    (
        "first key USDC sets price",
        {"ETHUSDC": 2, "ETHUSDCAvg-Price": 3000, "ETHUSDT": -1, "ETHUSDTAvg-Price": 9999},
        {},
        {"ETHUSDT/ETHUSDC": (True, 3000.0)},
    ),
    # USDT key first: price = 9999; v1 = 9999, v2 = 2 x 9999 = 19998, delta 9999
    (
        "first key USDT sets price",
        {"ETHUSDT": -1, "ETHUSDCAvg-Price": 3000, "ETHUSDC": 2, "ETHUSDTAvg-Price": 9999},
        {},
        {"ETHUSDT/ETHUSDC": (True, 9999.0)},
    ),
    ("one key only", {"BTCUSDT": 1, "BTCUSDTAvg-Price": 100}, {}, {}),
    (
        "first-leg price 0",
        {"BTCUSDT": 1, "BTCUSDTAvg-Price": 0, "BTCUSDC": 5, "BTCUSDCAvg-Price": 100},
        {},
        {},
    ),
    ("first-leg price missing", {"BTCUSDT": 1, "BTCUSDC": 5, "BTCUSDCAvg-Price": 100}, {}, {}),
    ("first-leg price null", {"BTCUSDT": 1, "BTCUSDTAvg-Price": None, "BTCUSDC": 5}, {}, {}),
    # v1 = 200, v2 = 100, delta = 100: not above 100; above 99.5
    (
        "delta equal to threshold",
        {**SAME_SIDE, "BTCUSDT": 2, "BTCUSDC": -1},
        {},
        {"BTCUSDT/BTCUSDC": (False, 100.0)},
    ),
    (
        "just above",
        {**SAME_SIDE, "BTCUSDT": 2, "BTCUSDC": -1},
        {"threshold": 99.5},
        {"BTCUSDT/BTCUSDC": (True, 100.0)},
    ),
    # only BTC pairs: Avg-Price, Force-Liquid-Price, asset, total and margin keys never form legs,
    # ETH has one key; BTC: v1 = 200, v2 = 100, delta 100
    ("other keys ignored", FULL_ACCOUNT, {"threshold": 50}, {"BTCUSDT/BTCUSDC": (True, 100.0)}),
    # BTC as above (100, not above 100); ETH: v1 = 5 x 10 = 50, v2 = 30 x 10 = 300, delta 250
    (
        "two pairs",
        {**SAME_SIDE, "BTCUSDT": 2, "BTCUSDC": -1, "ETHUSDT": 5, "ETHUSDTAvg-Price": 10, "ETHUSDC": "30"},
        {},
        {"BTCUSDT/BTCUSDC": (False, 100.0), "ETHUSDT/ETHUSDC": (True, 250.0)},
    ),
]


@pytest.mark.parametrize(("obj", "params", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(
    obj: dict[str, Any], params: dict[str, Any], expected: dict[str, tuple[bool, float]]
) -> None:
    got = findings(obj, **params)
    assert {k: b for k, (b, _) in got.items()} == {k: b for k, (b, _) in expected.items()}
    for key, (_, value) in expected.items():
        assert got[key][1] == pytest.approx(value)


def test_no_snapshot_evaluates_nothing() -> None:
    assert delta.evaluate(None, delta.DeltaParams(), 0.0) == []


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        ({**SAME_SIDE, "BTCUSDC": "abc"}, "BTCUSDC"),
        ({**SAME_SIDE, "BTCUSDTAvg-Price": "n/a"}, "BTCUSDTAvg-Price"),
        ({**SAME_SIDE, "BTCUSDC": None}, "BTCUSDC"),
        ({**SAME_SIDE, "BTCUSDC": ""}, "BTCUSDC"),
    ],
    ids=["junk position", "junk price", "null position", "empty position"],
)
def test_unusable_leg_raises_naming_account_and_key(obj: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidValue) as err:
        delta.evaluate(snap(obj), delta.DeltaParams(), 1000.0)
    assert (err.value.account, err.value.key) == (ACC, key)


def test_junk_elsewhere_does_not_matter() -> None:
    assert findings({**SAME_SIDE, "USDTwalletBalance": "junk"}, sign_aware=True) == {
        "BTCUSDT/BTCUSDC": (True, 200.0)
    }


def test_message_has_every_figure() -> None:
    out = text(OPPOSITE)
    # delta 1280.002 -> "$1280.00" (no thousands separator); threshold as given "100"
    # leg 1: 0.5 -> "0.50", price 64000.1 -> "64000.1000", value 32000.05 -> "$32000.05"
    # leg 2: -0.48 -> "-0.48", same price (first leg's), value 30720.048 -> "$30720.05"
    for figure in [ACC, "BTCUSDT", "BTCUSDC", "$1280.00", "threshold 100"]:
        assert figure in out
    assert "BTCUSDT: 0.50 x 64000.1000 = $32000.05" in out
    assert "BTCUSDC: -0.48 x 64000.1000 = $30720.05" in out
    assert "1.0000" not in out  # the second leg's own Avg-Price is never used
    assert "," not in out


def test_threshold_printed_as_given() -> None:
    obj = {**SAME_SIDE, "BTCUSDC": -2}  # delta |100 - 200| = 100
    assert "threshold 99.5" in text(obj, threshold=99.5)
    assert "threshold 99" in text(obj, threshold=99) and "99.0" not in text(obj, threshold=99)


def test_sign_aware_shows_signed_leg_values() -> None:
    out = text({**SAME_SIDE, "BTCUSDC": -3}, sign_aware=True)
    # 1 x 100 = 100, -3 x 100 = -300, delta |100 - 300| = 200
    assert "$200.00" in out
    assert "BTCUSDT: 1.00 x 100.0000 = $100.00" in out
    assert "BTCUSDC: -3.00 x 100.0000 = $-300.00" in out


def test_all_fired_pairs_in_one_message_one_block_each() -> None:
    obj = {**SAME_SIDE, "BTCUSDC": -3, "ETHUSDC": 1, "ETHUSDCAvg-Price": 2000, "ETHUSDT": 0}
    s, p = snap(obj), delta.DeltaParams()
    fired = [f for f in delta.evaluate(s, p, 1000.0) if f.breached]
    assert [f.key for f in fired] == ["BTCUSDT/BTCUSDC", "ETHUSDT/ETHUSDC"]
    message = delta.render(ACC, s, p, fired)
    blocks = message.text.split("\n\n")
    # BTC: |100 - 300| = 200; ETH (USDC first, price 2000): |2000 - 0| = 2000
    assert "$200.00" in blocks[0] and "ETHUSDC / ETHUSDT: delta $2000.00" in blocks[1]
    assert ACC in message.title


@pytest.mark.parametrize(
    ("qty", "shown_qty", "shown_delta"),
    [
        (1.125, "1.12", "$0.12"),  # |1.125 - 1| = 0.125 exactly: half-even -> 0.12 (Decimal half-up: 0.13)
        (3.675, "3.67", "$2.67"),  # 3.675 is 3.67499999... in binary; |3.675 - 1| = 2.675 -> 2.67
    ],
)
def test_python_float_rounding(qty: float, shown_qty: str, shown_delta: str) -> None:
    out = text({"BTCUSDT": qty, "BTCUSDTAvg-Price": 1, "BTCUSDC": -1}, threshold=0)
    assert f"delta {shown_delta} " in out
    assert f"BTCUSDT: {shown_qty} x 1.0000" in out


def test_spec_registration() -> None:
    spec = delta.SPEC
    assert (spec.name, spec.forget_on_clear, spec.default_delay, spec.default_cooldown) == (
        "delta",
        True,
        60,
        300,
    )
    assert spec.triggers == frozenset({"snapshot"})
    assert isinstance(spec.evaluate(None, delta.DeltaParams(), 0), list)
