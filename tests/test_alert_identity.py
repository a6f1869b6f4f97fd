"""Every alert's identity (issue 11): a fingerprint shared by a firing alert, its repeats and its
resolution, and the full label set (built-ins, venue, the configuration's labels, the caller's),
built in one place (``engine.alerts.make_alert``) for every kind of alert the engine writes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.alerts import make_alert, venue_of
from engine.assess import ERROR_KEY, assess, evaluate, job_failure_alert, report_alerts
from engine.checks.base import Message, ReportSpec
from engine.plan import Bound, Plan, build
from engine.registry import Registry
from engine.reload import refused_alert
from engine.state import KeyState
from monitorx.backtest import main as backtest
from shared.config import Config, ConfigError, Problem, load, parse
from shared.models import Alert, Snapshot, fingerprint
from tests.golden.recordings import NASTY_CONFIG, nasty

CONFIG = """
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*", "OKX-*"]
    params: {thresholds: {USDT: 10000, USDC: 10000}}
    cooldown: 60
    resolved: true
    labels: {team: treasury}
  low-b:
    check: low_balance
    accounts: ["BINANCE-*"]
    params: {thresholds: {USDT: 10000}}
  report:
    check: balance_report
    accounts: ["BINANCE-*"]
    labels: {team: reports}
account_labels:
  "BINANCE-*": {desk: binance, team: accounts, region: asia}
  "BINANCE-AAZ*": {desk: aaz}
"""
AAZ = "BINANCE-AAZ01-UM"
OTHER = "BINANCE-XYZ02-UM"
OKX = "OKX-MAIN"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build(parse(CONFIG, "labels.yaml").check_problems(), Registry.discover(plugins=False))


def bound(plan: Plan, name: str) -> Bound:
    found = plan.get(name)
    assert found is not None
    return found


def snap(account: str, at: float, **balances: float) -> Snapshot:
    raw = {f"{asset}walletBalance": value for asset, value in balances.items()}
    return Snapshot(account=account, venue="binance", observed_at=at, raw=raw)


def run(b: Bound, account: str, frames: list[tuple[float, dict[str, float]]]) -> list[Alert]:
    """The alerts of evaluating ``b`` on one account's frames in order, state carried along."""
    states: dict[str, KeyState] = {}
    alerts: list[Alert] = []
    for at, balances in frames:
        s = snap(account, at, **balances)
        done = assess(b, account, s, at, states, at, evaluate(b, s, at))
        states = {**states, **done.states}
        alerts.extend(done.alerts)
    return alerts


LOW, HIGH = {"USDT": 5000.0}, {"USDT": 20000.0}


# ---------------------------------------------------------------- fingerprint


def test_the_fingerprint_is_deterministic_and_each_part_counts() -> None:
    one = fingerprint("low", AAZ, "USDT")
    assert one == fingerprint("low", AAZ, "USDT")
    assert len(one) == 16 and int(one, 16) >= 0
    others = {
        fingerprint("low-b", AAZ, "USDT"),
        fingerprint("low", OTHER, "USDT"),
        fingerprint("low", AAZ, "USDC"),
        fingerprint("low", AAZ, "USDT,USDC"),
        fingerprint("low", f"{AAZ},USDT", ""),  # the separator is not a character of the parts
    }
    assert one not in others and len(others) == 5


def test_a_name_with_a_lone_surrogate_has_a_fingerprint() -> None:
    assert fingerprint("low", "BINANCE-AAZ07-UM\ud800", "USDT") != fingerprint(
        "low", "BINANCE-AAZ07-UM", "USDT"
    )


def test_a_firing_alert_its_repeat_and_its_resolution_share_the_fingerprint(plan: Plan) -> None:
    frames = [(0.0, LOW), (30.0, LOW), (70.0, LOW), (80.0, HIGH)]
    alerts = run(bound(plan, "low"), AAZ, frames)
    assert [(a.state, a.observed_at) for a in alerts] == [
        ("firing", 0.0),
        ("firing", 70.0),
        ("resolved", 80.0),
    ]
    assert len({a.id for a in alerts}) == 3  # three events...
    assert {a.fingerprint for a in alerts} == {fingerprint("low", AAZ, "USDT")}  # ...of one alert


def test_another_key_account_or_instance_is_another_alert(plan: Plan) -> None:
    usdc = run(bound(plan, "low"), AAZ, [(0.0, {"USDT": 20000.0, "USDC": 5000.0})])
    other_account = run(bound(plan, "low"), OTHER, [(0.0, LOW)])
    other_instance = run(bound(plan, "low-b"), AAZ, [(0.0, LOW)])
    usdt = run(bound(plan, "low"), AAZ, [(0.0, LOW)])
    prints = [a.fingerprint for alerts in (usdt, usdc, other_account, other_instance) for a in alerts]
    assert len(prints) == 4 and len(set(prints)) == 4


def test_a_check_error_and_its_recovery_share_a_fingerprint_of_their_own(plan: Plan) -> None:
    b = bound(plan, "low")
    done = assess(b, AAZ, None, 0.0, {}, 0.0, RuntimeError("boom"))
    again = assess(
        b, AAZ, snap(AAZ, 10.0, **HIGH), 10.0, done.states, 10.0, evaluate(b, snap(AAZ, 10.0, **HIGH), 10.0)
    )
    [error], [recovered] = done.alerts, again.alerts
    assert (error.state, recovered.state) == ("firing", "resolved")
    assert error.fingerprint == recovered.fingerprint == fingerprint("low", AAZ, ERROR_KEY)
    assert error.fingerprint != fingerprint("low", AAZ, "USDT")


# ---------------------------------------------------------------- labels


def test_a_check_alert_carries_the_builtin_and_the_configured_labels(plan: Plan) -> None:
    [alert] = run(bound(plan, "low"), AAZ, [(0.0, {"USDT": 5000.0, "USDC": 5000.0})])
    assert alert.labels == {
        "check": "low_balance",
        "instance": "low",
        "account": AAZ,
        "venue": "binance",
        "severity": "warning",
        "key": "USDT,USDC",
        "desk": "aaz",  # BINANCE-AAZ* comes after BINANCE-*: it wins
        "team": "treasury",  # the check's label wins over the account's
        "region": "asia",
    }
    assert alert.fingerprint == fingerprint("low", AAZ, "USDT,USDC")


def test_account_labels_apply_only_to_the_accounts_they_match(plan: Plan) -> None:
    [binance] = run(bound(plan, "low-b"), OTHER, [(0.0, LOW)])
    [okx] = run(bound(plan, "low"), OKX, [(0.0, LOW)])
    assert {k: binance.labels[k] for k in ("desk", "team", "region")} == {
        "desk": "binance",
        "team": "accounts",  # low-b has no labels of its own
        "region": "asia",
    }
    assert okx.labels == {
        "check": "low_balance",
        "instance": "low",
        "account": OKX,
        "venue": "okx",
        "severity": "warning",
        "key": "USDT",
        "team": "treasury",
    }


def test_a_resolution_keeps_the_labels_with_its_own_severity(plan: Plan) -> None:
    alerts = run(bound(plan, "low"), AAZ, [(0.0, LOW), (10.0, HIGH)])
    fired, resolved = alerts
    assert resolved.labels == {**fired.labels, "severity": "info"}


def test_the_callers_labels_win_over_the_configurations_and_the_builtins_over_both() -> None:
    alert = make_alert(
        instance="i",
        check="low_balance",
        account="OKX-1",
        state="firing",
        message=Message("t", "x", "critical"),
        observed_at=1.0,
        emitted_at=2.0,
        keys=("USDT",),
        config_labels={"team": "config", "desk": "config", "check": "config", "venue": "config"},
        labels={"team": "caller", "severity": "caller", "key": "caller"},
    )
    assert alert.labels == {
        "check": "low_balance",
        "instance": "i",
        "account": "OKX-1",
        "venue": "okx",
        "severity": "critical",
        "key": "USDT",
        "team": "caller",
        "desk": "config",
    }
    assert list(alert.labels)[:6] == ["check", "instance", "account", "venue", "severity", "key"]


@pytest.mark.parametrize(
    ("account", "venue"),
    [(AAZ, "binance"), ("OKX-SUB-1", "okx"), ("okx-x", "okx"), ("*", ""), ("galio", ""), ("-X", "")],
)
def test_the_venue_is_the_first_part_of_the_account_id(account: str, venue: str) -> None:
    assert venue_of(account) == venue
    alert = make_alert(
        instance="i",
        check="c",
        account=account,
        state="firing",
        message=Message("t", "x"),
        observed_at=0,
        emitted_at=0,
    )
    assert alert.labels.get("venue") == (venue or None)
    assert "key" not in alert.labels  # no keys: no key label


def test_a_report_carries_its_labels_and_late(plan: Plan) -> None:
    b = bound(plan, "report")
    [alert] = report_alerts(b, {AAZ: snap(AAZ, 90.0, **HIGH)}, 100.0, True, 101.0)
    assert alert.labels == {
        "check": "balance_report",
        "instance": "report",
        "account": "*",
        "severity": "info",
        "team": "reports",
        "late": "true",
    }
    assert alert.fingerprint == fingerprint("report", "*", "")


def test_a_failing_report_is_a_check_error_with_the_reports_labels(plan: Plan) -> None:
    def broken(snapshots: Any, params: Any, slot: float) -> Any:
        raise RuntimeError("no figures")

    b = bound(plan, "report")
    spec = b.spec
    assert isinstance(spec, ReportSpec)
    [alert] = report_alerts(replace(b, spec=replace(spec, build=broken)), {}, 100.0, False, 101.0)
    assert alert.labels == {
        "check": "check_error",
        "instance": "report",
        "account": "*",
        "severity": "critical",
        "key": ERROR_KEY,
        "team": "reports",
    }


def test_a_failed_job_and_a_refused_file_carry_the_builtin_labels() -> None:
    job = job_failure_alert("job-1", "low", AAZ, "worker died", 5.0)
    assert job.labels == {
        "check": "check_error",
        "instance": "low",
        "account": AAZ,
        "venue": "binance",
        "severity": "critical",
        "key": ERROR_KEY,
    }
    assert job.fingerprint == fingerprint("low", AAZ, ERROR_KEY)
    refused = refused_alert(ConfigError("c.yaml", [Problem(path="x", reason="y")]), None)
    assert refused.labels == {
        "check": "config_error",
        "instance": "config",
        "account": "*",
        "severity": "critical",
    }
    assert refused.fingerprint == fingerprint("config", "*", "")


def test_a_legacy_file_attaches_no_labels(legacy_config: Path) -> None:
    config = load(legacy_config)
    assert config.account_labels == ()
    assert all(i.labels == {} for i in config.instances)
    legacy = build(config, Registry.discover(plugins=False))
    b = next(b for b in legacy.bound.values() if b.instance.check == "low_balance")
    [alert] = run(b, AAZ, [(0.0, LOW)])
    assert set(alert.labels) == {"check", "instance", "account", "venue", "severity", "key"}


# ---------------------------------------------------------------- carried as JSON


def test_an_alert_written_without_a_fingerprint_gets_one() -> None:
    fields: dict[str, Any] = {
        "id": "1",
        "check": "low_balance",
        "instance": "low",
        "account": AAZ,
        "state": "firing",
        "keys": ["USDT", "USDC"],
        "title": "t",
        "text": "x",
        "observed_at": 1.0,
        "emitted_at": 2.0,
    }
    expected = fingerprint("low", AAZ, "USDT,USDC")
    assert Alert.model_validate_json(json.dumps(fields)).fingerprint == expected
    assert Alert.model_validate({**fields, "fingerprint": ""}).fingerprint == expected
    assert Alert(**{**fields, "keys": ()}).fingerprint == fingerprint("low", AAZ, "")
    assert Alert.model_validate({**fields, "fingerprint": "kept"}).fingerprint == "kept"


def test_an_alert_round_trips_with_its_identity(plan: Plan) -> None:
    [alert] = run(bound(plan, "low"), AAZ, [(0.0, LOW)])
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_the_configuration_carries_its_labels_as_json(plan: Plan) -> None:
    """The parallel backtest hands its workers the configuration as JSON."""
    config = plan.config
    assert Config.model_validate_json(config.model_dump_json()) == config
    assert config.account_labels == (
        ("BINANCE-*", {"desk": "binance", "team": "accounts", "region": "asia"}),
        ("BINANCE-AAZ*", {"desk": "aaz"}),
    )


def test_the_backtest_prints_every_alerts_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "nasty.yaml"
    labelled = NASTY_CONFIG.replace("cooldown: 300}", "cooldown: 300, labels: {team: treasury}}")
    config.write_text(labelled + 'account_labels: {"BINANCE-AAZ0*": {desk: aaz}}\n', encoding="utf-8")
    recording = nasty(tmp_path / "nasty.jsonl")
    assert (
        backtest(["--config", str(config), "--recording", str(recording), "--output", "jsonl", "--jobs", "1"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(row["labels"]["desk"] == "aaz" for row in rows)
    assert all(
        row["fingerprint"] == fingerprint(row["instance"], row["account"], ",".join(row["keys"]))
        for row in rows
    )
    assert {row["labels"].get("team") for row in rows if row["instance"] == "low"} == {"treasury"}
    assert {row["labels"].get("team") for row in rows if row["instance"] != "low"} == {None}
