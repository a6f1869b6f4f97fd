"""Binding configurations to checks: the legacy file, effective timing, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan import STALE_INSTANCE, build
from engine.registry import Registry
from ingestor.normalize import normalize_account
from shared.config import ConfigError, load, parse


def test_legacy_config_binds_every_enabled_instance(legacy_config: Path) -> None:
    plan = build(load(legacy_config), Registry.discover())
    assert "aaz_binance_delta_check:all:BINANCE-AAZ13-UM" in plan.bound
    assert plan.get("margin_full_snapshot:all") is None  # "enabled": false
    assert plan.bound["aaz_binance_low_balance_check"].policy.cooldown == 300
    assert STALE_INSTANCE in plan.bound


def test_delta_message_quotes_the_instance_delay_as_configured(legacy_config: Path) -> None:
    plan = build(load(legacy_config), Registry.discover())
    bound = plan.bound["aaz_binance_delta_check:all:BINANCE-AAZ01-UM"]
    snap = normalize_account(
        "BINANCE-AAZ01-UM", {"BTCUSDT": 0.5, "BTCUSDTAvg-Price": 64000.1, "BTCUSDC": -0.48}, observed_at=1.0
    )
    fired = [f for f in bound.check.evaluate(snap, bound.params, 1.0) if f.breached]
    text = bound.check.render("BINANCE-AAZ01-UM", snap, bound.params, fired).text
    # |0.5*64000.1| - |-0.48*64000.1| = 32000.05 - 30720.048 = 1280.002
    assert "$1280.00" in text and "threshold 100 for 60s" in text


def test_hedge_message_quotes_the_instance_delay(legacy_config: Path) -> None:
    plan = build(load(legacy_config), Registry.discover())
    bound = plan.bound["aaz_okx_hedge_check:all:OKX-AAZ-TRADING"]
    obj = {"ETH-USDT-SWAP": -31, "ETH-USDC-SWAP": 3000, "ETH-USDT-SWAPAvg-Price": 3100}
    snap = normalize_account("OKX-AAZ-TRADING", obj, observed_at=1.0)
    fired = [f for f in bound.check.evaluate(snap, bound.params, 1.0) if f.breached]
    assert "for 60s" in bound.check.render("OKX-AAZ-TRADING", snap, bound.params, fired).text


def test_every_problem_is_listed_with_its_path() -> None:
    text = """
checks:
  a: {check: low_balance, params: {thresholds: {USDT: "lots"}}}
  b: {check: no_such_check}
  c: {check: delta, params: {threshold: 1, colour: red}}
"""
    with pytest.raises(ConfigError) as err:
        build(parse(text, "bad.yaml"), Registry.discover())
    paths = [p.path for p in err.value.problems]  # one problem per mistake (a union's branches: one)
    assert paths == ["checks.a.params.thresholds.USDT", "checks.b.check", "checks.c.params.colour"]
    assert "bad.yaml: checks.b.check: unknown check 'no_such_check'" in str(err.value)


def test_structural_and_binding_errors_are_listed_together() -> None:
    text = "colour: red\nchecks:\n  a: {check: low_balance, cooldown: -1}\n  b: {check: nope}\n"
    with pytest.raises(ConfigError) as err:
        build(parse(text, "x.yaml"), Registry.discover())
    assert {p.path for p in err.value.problems} == {"colour", "checks.a.cooldown", "checks.b.check"}


def test_structural_errors_are_all_listed() -> None:
    text = "checks:\n  a: {check: low_balance, cooldown: -1, colour: red}\n  b: {accounts: []}\n"
    with pytest.raises(ConfigError) as err:
        parse(text, "x.yaml").check_problems()
    paths = {p.path for p in err.value.problems}
    assert {"checks.a.cooldown", "checks.a.colour", "checks.b.check", "checks.b.accounts"} <= paths


def test_readme_yaml_example_is_valid(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    block = readme[readme.index("### Native YAML") :]
    text = block[block.index("```yaml") + len("```yaml") : block.index("```", block.index("```yaml") + 7)]
    plan = build(parse(text, "README.md"), Registry.discover())
    assert {"binance-delta", "okx-hedge", "low-balance", "margin-risk", "balance-report", "stale"} <= set(
        plan.bound
    )
    assert plan.get("margin-snapshot") is None


def test_the_readme_delivery_example_is_a_valid_configuration(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    block = readme[readme.index("### Configuration: receivers, routes, inhibit rules") :]
    text = block[block.index("```yaml") + len("```yaml") : block.index("```", block.index("```yaml") + 7)]
    config = parse(text, "README.md")
    assert config.problems == () and config.route is not None
    assert set(config.receivers) == {"desk", "desk-critical", "treasury", "ops", "archive", "stdout"}
    assert build(config, Registry.discover()).bound["treasury-balance"].labels_for("BINANCE-TRS1") == {
        "team": "treasury"
    }
