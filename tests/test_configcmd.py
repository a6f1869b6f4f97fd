"""``monitorx config check|show|convert`` as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.plan import build
from engine.registry import Registry
from monitorx.configcmd import to_yaml
from shared.config import load, parse


def monitorx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitorx", *args], capture_output=True, text=True, timeout=60
    )


def test_check_accepts_the_legacy_file(legacy_config: Path) -> None:
    done = monitorx("config", "check", str(legacy_config))
    assert done.returncode == 0, done.stderr
    assert "OK (legacy)" in done.stdout


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "checks:\n  a: {check: low_balance, delay: -1}\n  b: {check: delta, params: {threshold: x}}\n"
    )
    done = monitorx("config", "check", str(bad))
    assert done.returncode == 1
    assert f"{bad}: checks.a.delay:" in done.stderr
    assert f"{bad}: checks.b.params.threshold" in done.stderr


def test_show_prints_instances_and_the_expanded_routing(legacy_config: Path) -> None:
    out = monitorx("config", "show", str(legacy_config)).stdout
    assert "aaz_okx_hedge_check:all:OKX-AAZ-TRADING\n  check=okx_hedge" in out
    assert "delay=60 cooldown=300" in out
    routing = out[out.index("routing") :]
    assert "BINANCE-AAZ12-UM: aaz_binance_delta_check:all:BINANCE-AAZ12-UM, stale_data:all" in routing
    assert "aaz_binance_low_balance_check" not in routing.split("BINANCE-AAZ12-UM:")[1].splitlines()[0]


def test_convert_gives_an_equivalent_yaml(legacy_config: Path) -> None:
    done = monitorx("config", "convert", str(legacy_config))
    assert done.returncode == 0, done.stderr
    registry = Registry.discover()
    legacy = build(load(legacy_config), registry)
    native = build(parse(done.stdout, "converted.yaml"), registry)
    assert set(native.bound) == set(legacy.bound)
    for name, bound in legacy.bound.items():
        other = native.bound[name]
        assert (other.instance.accounts, other.params, other.instance.schedule) == (
            bound.instance.accounts,
            bound.params,
            bound.instance.schedule,
        )
        if bound.instance.check not in {"balance_report", "margin_snapshot"}:
            assert other.policy == bound.policy


def test_to_yaml_keeps_the_labels_of_checks_and_accounts() -> None:
    text = (
        "version: 1\naccount_labels: {'BINANCE-AAZ*': {desk: aaz}}\n"
        "checks:\n  low:\n    check: low_balance\n    labels: {team: treasury}\n"
    )
    again = parse(to_yaml(parse(text, "desk.yaml")), "again.yaml")
    assert again.instances[0].labels == {"team": "treasury"}
    assert again.account_labels == (("BINANCE-AAZ*", {"desk": "aaz"}),)
