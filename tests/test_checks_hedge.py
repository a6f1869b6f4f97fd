"""okx_hedge check (spec section 2): both naming schemes, USDC leg first, the USDT leg's price,
contract sizes from params, the figures of the message. Expected figures computed by hand."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.checks import okx_hedge
from ingestor.normalize import normalize_account
from shared.models import InvalidValue, Snapshot

ACC = "OKX-AAZ-TRADING"
LEGACY = {
    "threshold": 100,
    "symbols": ["ETH", "BTC"],
    "contract_sizes": {"ETH": {"USDT": 0.1, "USDC": 0.001}, "BTC": {"USDT": 0.01, "USDC": 0.0001}},
}
SWAP = {"ETH-USDC-SWAP": 3000, "ETH-USDT-SWAP": -31, "ETH-USDT-SWAPAvg-Price": 3100}
OKX_P = {"OKX-P-BTCUSDC": "10000", "OKX-P-BTCUSDT": -90, "OKX-P-BTCUSDTAvg-Price": 60000}
SWAP_KEY = "ETH-USDC-SWAP/ETH-USDT-SWAP"
OKX_P_KEY = "OKX-P-BTCUSDC/OKX-P-BTCUSDT"


def snap(obj: dict[str, Any]) -> Snapshot:
    return normalize_account(ACC, obj, observed_at=1000.0)


def params(**override: Any) -> okx_hedge.HedgeParams:
    return okx_hedge.HedgeParams.model_validate({**LEGACY, **override})


def findings(obj: dict[str, Any], **override: Any) -> dict[str, tuple[bool, float]]:
    return {
        f.key: (f.breached, f.detail["usd"]) for f in okx_hedge.evaluate(snap(obj), params(**override), 0.0)
    }


def text(obj: dict[str, Any], **override: Any) -> str:
    s, p = snap(obj), params(**override)
    return okx_hedge.render(ACC, s, p, [f for f in okx_hedge.evaluate(s, p, 0.0) if f.breached]).text


CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, tuple[bool, float]]]] = [
    # 3000 x 0.001 = 3 ETH, -30 x 0.1 = -3 ETH: diff 0, usd 0
    ("swap hedged", {**SWAP, "ETH-USDT-SWAP": -30}, {}, {SWAP_KEY: (False, 0.0)}),
    # 3 + (-31 x 0.1 = -3.1) = -0.1 ETH; |-0.1 x 3100| = 310 > 100
    ("swap unhedged", SWAP, {}, {SWAP_KEY: (True, 310.0)}),
    # 10000 x 0.0001 = 1 BTC, -90 x 0.01 = -0.9 BTC: diff 0.1; |0.1 x 60000| = 6000
    ("OKX-P scheme", OKX_P, {}, {OKX_P_KEY: (True, 6000.0)}),
    # same side is never a hedge: 1000 x 0.001 = 1, 10 x 0.1 = 1, diff 2, usd 2 x 3100 = 6200
    ("same side", {**SWAP, "ETH-USDC-SWAP": 1000, "ETH-USDT-SWAP": 10}, {}, {SWAP_KEY: (True, 6200.0)}),
    # both schemes of ETH: -SWAP as above (310); OKX-P-: 2000 x 0.001 = 2, -20 x 0.1 = -2, diff 0
    (
        "both schemes",
        {**SWAP, "OKX-P-ETHUSDC": 2000, "OKX-P-ETHUSDT": -20, "OKX-P-ETHUSDTAvg-Price": 3000},
        {},
        {SWAP_KEY: (True, 310.0), "OKX-P-ETHUSDC/OKX-P-ETHUSDT": (False, 0.0)},
    ),
    ("USDC leg missing", {"ETH-USDT-SWAP": -31, "ETH-USDT-SWAPAvg-Price": 3100}, {}, {}),
    ("USDT leg missing", {"ETH-USDC-SWAP": 3000, "ETH-USDT-SWAPAvg-Price": 3100}, {}, {}),
    # the price is the USDT leg's: the USDC leg's own price never counts
    (
        "USDT price missing",
        {"ETH-USDC-SWAP": 3000, "ETH-USDT-SWAP": -31, "ETH-USDC-SWAPAvg-Price": 3100},
        {},
        {},
    ),
    ("USDT price 0", {**SWAP, "ETH-USDT-SWAPAvg-Price": 0}, {}, {}),
    ("symbols restrict", {**SWAP, **OKX_P}, {"symbols": ["BTC"]}, {OKX_P_KEY: (True, 6000.0)}),
    # legacy default threshold 0: any imbalance fires; 3 - 29.99 x 0.1 = 0.001 ETH, x 3100 = 3.1
    ("threshold 0", {**SWAP, "ETH-USDT-SWAP": -29.99}, {"threshold": 0}, {SWAP_KEY: (True, 3.1)}),
    # 3000 x 0.001 = 3, -20 x 0.1 = -2 (both exact), diff 1 x 3100 = 3100: not above 3100
    (
        "usd equal to threshold",
        {**SWAP, "ETH-USDT-SWAP": -20},
        {"threshold": 3100},
        {SWAP_KEY: (False, 3100.0)},
    ),
    # float arithmetic as the legacy's: 3 - 3.1 = -0.10000000000000009, x 3100 = 310.0000000000003 > 310
    ("float noise above threshold", SWAP, {"threshold": 310}, {SWAP_KEY: (True, 310.0)}),
]


@pytest.mark.parametrize(("obj", "override", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(
    obj: dict[str, Any], override: dict[str, Any], expected: dict[str, tuple[bool, float]]
) -> None:
    got = findings(obj, **override)
    assert {k: b for k, (b, _) in got.items()} == {k: b for k, (b, _) in expected.items()}
    for key, (_, usd) in expected.items():
        assert got[key][1] == pytest.approx(usd, abs=1e-9)


def test_defaults_are_the_legacy_ones() -> None:
    p = okx_hedge.HedgeParams()
    assert (p.threshold, p.symbols) == (0, ("ETH", "BTC"))
    assert p.contract_sizes == LEGACY["contract_sizes"]
    spec = okx_hedge.SPEC
    assert (spec.name, spec.forget_on_clear, spec.default_delay, spec.default_cooldown) == (
        "okx_hedge",
        True,
        5,
        300,
    )


@pytest.mark.parametrize(
    "override",
    [
        {"symbols": ["SOL"]},
        {"contract_sizes": {"ETH": {"USDT": 0.1}, "BTC": {"USDT": 0.01, "USDC": 0.0001}}},
        {"contract_sizes": {"ETH": {"USDT": 0.1, "USDC": 0}, "BTC": {"USDT": 0.01, "USDC": 0.0001}}},
    ],
    ids=["base without sizes", "margin without size", "size 0"],
)
def test_missing_contract_size_is_refused_with_the_config(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="contract_sizes needs a positive"):
        params(**override)


@pytest.mark.parametrize(("value", "reason"), [("x", "not a number"), (None, "no value")])
def test_unusable_leg_raises_naming_account_and_key(value: Any, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason) as err:
        okx_hedge.evaluate(snap({**SWAP, "ETH-USDC-SWAP": value}), params(), 0.0)
    assert (err.value.account, err.value.key) == (ACC, "ETH-USDC-SWAP")


def test_message_has_every_figure_swap() -> None:
    out = text(SWAP)
    # usd |(3 - 3.1) x 3100| = 310 -> "$310.00"; threshold as given "100"
    # USDC leg: 3000 -> "3000.0000" contracts x 0.001 -> "0.0010" = 3 -> "3.0000" ETH
    # USDT leg: -31 -> "-31.0000" contracts x 0.1 -> "0.1000" = -3.1 -> "-3.1000" ETH
    # net -0.1 -> "-0.1000", USDT-leg price 3100 -> "$3100.00", usd again "$310.00"
    assert f"{ACC} ETH ({SWAP_KEY}): unhedged $310.00 is above the threshold 100" in out
    lines = out.splitlines()
    assert lines[1] == "  ETH-USDC-SWAP: 3000.0000 contracts x 0.0010 = 3.0000 ETH"  # USDC leg first
    assert lines[2] == "  ETH-USDT-SWAP: -31.0000 contracts x 0.1000 = -3.1000 ETH"
    assert lines[3] == "  Net: -0.1000 ETH x $3100.00 = $310.00"


def test_message_has_every_figure_okx_p_without_commas() -> None:
    out = text(OKX_P, threshold=100.5)
    # 10000 x 0.0001 = 1, -90 x 0.01 = -0.9, net 0.1 x 60000 = 6000 -> "$6000.00" (no ",")
    assert "unhedged $6000.00 is above the threshold 100.5" in out
    assert "OKX-P-BTCUSDC: 10000.0000 contracts x 0.0001 = 1.0000 BTC" in out
    assert "OKX-P-BTCUSDT: -90.0000 contracts x 0.0100 = -0.9000 BTC" in out
    assert "Net: 0.1000 BTC x $60000.00 = $6000.00" in out
    assert "," not in out


def test_all_fired_pairs_in_one_message() -> None:
    s, p = snap({**SWAP, **OKX_P}), params()
    fired = [f for f in okx_hedge.evaluate(s, p, 0.0) if f.breached]
    message = okx_hedge.render(ACC, s, p, fired)
    assert [f.key for f in fired] == [SWAP_KEY, OKX_P_KEY]
    assert len(message.text.split("\n\n")) == 2 and ACC in message.title
