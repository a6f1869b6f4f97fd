"""The new checks are registered and the legacy features.json binds to them (params validate)."""

from __future__ import annotations

from pathlib import Path

from engine.checks import margin_risk, okx_hedge
from engine.checks.base import CheckSpec, ReportSpec
from engine.plan import build
from engine.registry import Registry
from shared.config import load

NEW = {
    "delta": CheckSpec,
    "okx_hedge": CheckSpec,
    "margin_risk": CheckSpec,
    "balance_report": ReportSpec,
    "margin_snapshot": ReportSpec,
}


def test_builtin_registry_has_the_new_checks() -> None:
    registry = Registry.discover(plugins=False)
    for name, kind in NEW.items():
        assert isinstance(registry.get(name), kind), name


def test_legacy_config_binds_every_enabled_instance(legacy_config: Path) -> None:
    config = load(legacy_config)
    plan = build(config, Registry.discover(plugins=False))
    checks = {b.spec.name for b in plan.bound.values()}
    assert {"delta", "okx_hedge", "low_balance", "margin_risk", "balance_report"} <= checks
    assert "margin_snapshot" not in checks  # "enabled": false in the legacy file
    hedge = plan.bound["aaz_okx_hedge_check:all:OKX-AAZ-TRADING"]
    assert isinstance(hedge.params, okx_hedge.HedgeParams)
    assert (hedge.params.threshold, hedge.policy.delay, hedge.policy.cooldown) == (100, 60, 300)
    risk = plan.bound["margin_risk_alert:multi"]
    assert isinstance(risk.params, margin_risk.MarginRiskParams)
    assert risk.params.thresholds.usdt_usdc_ratio_max == 2.0 and risk.policy.cooldown == 300
    delta = plan.bound["aaz_binance_delta_check:all:BINANCE-AAZ01-UM"]
    assert (delta.policy.delay, delta.policy.cooldown, delta.policy.forget_on_clear) == (60, 300, True)
