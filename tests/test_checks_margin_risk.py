"""margin_risk check (spec section 4): wallet 1 when 0 or missing, infinite ratio when USDC is 0,
thresholds as %, bounds as given, the table. Expected figures computed by hand."""

from __future__ import annotations

from typing import Any

import pytest

from engine.checks import margin_risk
from ingestor.normalize import normalize_account
from shared.models import InvalidValue, Snapshot

ACC = "BINANCE-AAZ01-UM"
LEGACY = {
    "initial_margin": 0.7,
    "maint_margin": 0.2,
    "position_margin": 0.75,
    "usdt_usdc_ratio_min": 0.6,
    "usdt_usdc_ratio_max": 2.0,
}
HEALTHY = {
    "maintotalWalletBalance": 10000,
    "maintotalInitialMargin": 5000,  # 50%
    "maintotalMaintMargin": 1000,  # 10%
    "maintotalPositionInitialMargin": 5000,  # 50%
    "mainmaxWithdrawAmount": 2000,
    "USDTwalletBalance": 5000,
    "USDCwalletBalance": 5000,  # ratio 1
}
RISKY = {
    **HEALTHY,
    "maintotalInitialMargin": 7500,  # 75% > 70%
    "maintotalMaintMargin": 2500,  # 25% > 20%
    "maintotalPositionInitialMargin": 7000,  # 70% <= 75%
    "USDTwalletBalance": 6000,
    "USDCwalletBalance": 2000,  # ratio 3 > 2.0
}
ALL = {"initial_margin", "maint_margin", "position_margin", "usdt_usdc_ratio"}


def snap(obj: dict[str, Any]) -> Snapshot:
    return normalize_account(ACC, obj, observed_at=1000.0)


def params(**thresholds: Any) -> margin_risk.MarginRiskParams:
    return margin_risk.MarginRiskParams.model_validate({"thresholds": {**LEGACY, **thresholds}})


def breached(obj: dict[str, Any], p: margin_risk.MarginRiskParams) -> set[str]:
    found = margin_risk.evaluate(snap(obj), p, 0.0)
    assert {f.key for f in found} == ALL  # every metric is evaluated on every snapshot
    return {f.key for f in found if f.breached}


def text(obj: dict[str, Any], p: margin_risk.MarginRiskParams) -> str:
    s = snap(obj)
    return margin_risk.render(ACC, s, p, [f for f in margin_risk.evaluate(s, p, 0.0) if f.breached]).text


CASES: list[tuple[str, dict[str, Any], dict[str, Any], set[str]]] = [
    ("healthy", HEALTHY, {}, set()),
    ("risky", RISKY, {}, {"initial_margin", "maint_margin", "usdt_usdc_ratio"}),
    # 7000 / 10000 = 0.7 exactly as the literal: not above 0.7
    ("initial at threshold", {**HEALTHY, "maintotalInitialMargin": 7000}, {}, set()),
    ("position above", {**HEALTHY, "maintotalPositionInitialMargin": 7600}, {}, {"position_margin"}),
    ("USDC 0: ratio inf", {**HEALTHY, "USDCwalletBalance": 0}, {}, {"usdt_usdc_ratio"}),
    (
        "USDC missing: ratio inf",
        {k: v for k, v in HEALTHY.items() if k != "USDCwalletBalance"},
        {},
        {"usdt_usdc_ratio"},
    ),
    (
        "USDT and USDC 0: ratio inf",
        {**HEALTHY, "USDTwalletBalance": 0, "USDCwalletBalance": 0},
        {},
        {"usdt_usdc_ratio"},
    ),
    # 1000 / 2000 = 0.5 < 0.6
    (
        "ratio below min",
        {**HEALTHY, "USDTwalletBalance": 1000, "USDCwalletBalance": 2000},
        {},
        {"usdt_usdc_ratio"},
    ),
    # 4000 / 2000 = 2.0 and 1200 / 2000 = 0.6: inside [0.6, 2.0]
    ("ratio at max", {**HEALTHY, "USDTwalletBalance": 4000, "USDCwalletBalance": 2000}, {}, set()),
    ("ratio at min", {**HEALTHY, "USDTwalletBalance": 1200, "USDCwalletBalance": 2000}, {}, set()),
    # wallet 0 -> 1: initial 0.5 / 1 = 0.5 (not above 0.7), maint 0.5 / 1 = 0.5 > 0.2, position 0.8 > 0.75
    (
        "wallet 0 counts as 1",
        {
            **HEALTHY,
            "maintotalWalletBalance": 0,
            "maintotalInitialMargin": 0.5,
            "maintotalMaintMargin": 0.5,
            "maintotalPositionInitialMargin": 0.8,
        },
        {},
        {"maint_margin", "position_margin"},
    ),
    (
        "wallet missing counts as 1",
        {"maintotalInitialMargin": 0.75, "USDTwalletBalance": 1, "USDCwalletBalance": 1},
        {},
        {"initial_margin"},
    ),
]


@pytest.mark.parametrize(("obj", "override", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(obj: dict[str, Any], override: dict[str, Any], expected: set[str]) -> None:
    assert breached(obj, params(**override)) == expected


def test_defaults_when_thresholds_are_missing() -> None:
    # defaults 0.8 / 0.2 / 0.75 / [0.5, 2.5]: 75% initial and ratio 2.4 pass, 0.45 does not
    obj = {**HEALTHY, "maintotalInitialMargin": 7500, "USDTwalletBalance": 4800, "USDCwalletBalance": 2000}
    assert breached(obj, margin_risk.MarginRiskParams()) == set()
    assert breached({**obj, "USDTwalletBalance": 900}, margin_risk.MarginRiskParams()) == {"usdt_usdc_ratio"}
    partial = margin_risk.MarginRiskParams.model_validate({"thresholds": {"initial_margin": 0.7}})
    assert breached(obj, partial) == {"initial_margin"}
    assert partial.thresholds.usdt_usdc_ratio_max == 2.5


def test_spec_registration() -> None:
    spec = margin_risk.SPEC
    assert (spec.name, spec.forget_on_clear, spec.default_delay, spec.default_cooldown) == (
        "margin_risk",
        False,
        None,
        60,
    )


def test_message_has_every_figure() -> None:
    out = text(RISKY, params())
    # breached: initial 7500/10000 -> "75.00%" vs 0.7 -> "70%"; maint 2500/10000 -> "25.00%" vs "20%";
    # ratio 6000/2000 = 3 -> "3.00" vs bounds as given "[0.6, 2.0]"; position 70% did not breach
    assert "• Initial margin 75.00% of wallet is above 70%" in out
    assert "• Maintenance margin 25.00% of wallet is above 20%" in out
    assert "• USDT/USDC ratio 3.00 is outside [0.6, 2.0]" in out
    assert "• Position" not in out
    # table: margins and withdrawable as shares of wallet 10000, USDT and USDC of 6000 + 2000 = 8000
    for row in [
        "Wallet: $10,000.00",
        "Initial margin: $7,500.00 (75.00%)",
        "Maintenance margin: $2,500.00 (25.00%)",
        "Position initial margin: $7,000.00 (70.00%)",
        "Max withdrawable: $2,000.00 (20.00%)",
        "USDT: $6,000.00 (75.00%)",
        "USDC: $2,000.00 (25.00%)",
        "USDT/USDC ratio: 3.00",
    ]:
        assert row in out.splitlines()


def test_only_fired_metrics_are_listed() -> None:
    s, p = snap(RISKY), params()
    fired = [f for f in margin_risk.evaluate(s, p, 0.0) if f.key == "maint_margin"]
    out = margin_risk.render(ACC, s, p, fired).text
    assert [line for line in out.splitlines() if line.startswith("•")] == [
        "• Maintenance margin 25.00% of wallet is above 20%"
    ]


def test_infinite_ratio_prints_inf() -> None:
    out = text({**HEALTHY, "USDCwalletBalance": 0}, params())
    # USDT 5000 of 5000 + 0 -> 100.00%, USDC 0.00%
    assert "• USDT/USDC ratio inf is outside [0.6, 2.0]" in out
    assert "USDT/USDC ratio: inf" in out
    assert "USDT: $5,000.00 (100.00%)" in out and "USDC: $0.00 (0.00%)" in out


def test_shares_of_zero_stable_total_are_na() -> None:
    out = text({**HEALTHY, "USDTwalletBalance": 0, "USDCwalletBalance": 0}, params())
    assert "USDT: $0.00 (N/A)" in out and "USDC: $0.00 (N/A)" in out


def test_wallet_zero_shows_the_1_used() -> None:
    obj = {
        "maintotalWalletBalance": 0,
        "maintotalInitialMargin": 0.755,
        "USDTwalletBalance": 1,
        "USDCwalletBalance": 1,
    }
    out = text(obj, params())
    # initial 0.755 / 1 -> 75.5 -> "75.50%"; withdrawable missing -> 0 -> "$0.00 (0.00%)"
    assert "Wallet: $1.00 (maintotalWalletBalance is 0 or missing: 1 is used)" in out
    assert "Initial margin: $0.76 (75.50%)" in out  # 0.755 is 0.75500000000000000444 in binary: rounds up
    assert "Max withdrawable: $0.00 (0.00%)" in out


def test_bounds_and_thresholds_printed_as_given() -> None:
    p = params(usdt_usdc_ratio_min=1, usdt_usdc_ratio_max=2, initial_margin=0.5)
    out = text(RISKY, p)
    assert "outside [1, 2]" in out
    assert "above 50%" in out


def test_display_only_junk_shows_invalid() -> None:
    out = text({**RISKY, "mainmaxWithdrawAmount": "oops"}, params())
    assert "Max withdrawable: invalid" in out.splitlines()


@pytest.mark.parametrize("key", ["maintotalWalletBalance", "maintotalInitialMargin", "USDCwalletBalance"])
def test_junk_metric_input_raises_naming_account_and_key(key: str) -> None:
    with pytest.raises(InvalidValue) as err:
        margin_risk.evaluate(snap({**HEALTHY, key: "x1"}), params(), 0.0)
    assert (err.value.account, err.value.key) == (ACC, key)


def test_no_snapshot_evaluates_nothing() -> None:
    assert margin_risk.evaluate(None, params(), 0.0) == []
