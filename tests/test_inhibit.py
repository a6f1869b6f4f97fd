"""Inhibition with Alertmanager's rule, the default rule shipped (stale data mutes an account's
other alerts) and MonitorX's own errors never inhibited."""

from __future__ import annotations

from alerter.inhibit import Rule, compile_rules, inhibited, inhibitor
from shared.config import DEFAULT_INHIBIT_RULES, InhibitRule

DEFAULT = compile_rules(DEFAULT_INHIBIT_RULES)
STALE_AAZ01 = {"check": "stale_data", "account": "BINANCE-AAZ01-UM", "severity": "warning"}


def alert(check: str, account: str = "BINANCE-AAZ01-UM", **more: str) -> dict[str, str]:
    return {"check": check, "account": account, "severity": "warning", **more}


def rules(*written: InhibitRule) -> tuple[Rule, ...]:
    return compile_rules(written)


def test_stale_data_mutes_the_other_alerts_of_its_account() -> None:
    for check in ("low_balance", "delta", "margin_risk", "okx_hedge"):
        assert inhibitor(alert(check), [STALE_AAZ01], DEFAULT) == STALE_AAZ01


def test_stale_data_does_not_mute_other_accounts() -> None:
    assert not inhibited(alert("low_balance", "BINANCE-AAZ02-UM"), [STALE_AAZ01], DEFAULT)


def test_stale_data_does_not_mute_itself_nor_other_stale_data() -> None:
    assert not inhibited(STALE_AAZ01, [STALE_AAZ01], DEFAULT)
    other = alert("stale_data", key="age")
    assert not inhibited(other, [STALE_AAZ01], DEFAULT)


def test_errors_of_monitorx_itself_are_never_inhibited() -> None:
    everything = rules(InhibitRule(source_matchers=("check=stale_data",), target_matchers=('check=~".*"',)))
    for check in ("check_error", "config_error"):
        assert not inhibited(alert(check), [STALE_AAZ01], everything)
        assert not inhibited(alert(check), [STALE_AAZ01], DEFAULT)
    assert inhibited(alert("low_balance"), [STALE_AAZ01], everything)


def test_nothing_firing_inhibits_nothing() -> None:
    assert not inhibited(alert("low_balance"), [], DEFAULT)
    assert inhibitor(alert("low_balance"), [alert("delta")], DEFAULT) is None


def test_equal_labels_missing_on_both_sides_are_equal() -> None:
    rule = rules(InhibitRule(source_matchers=("check=a",), target_matchers=("check=b",), equal=("desk",)))
    assert inhibited({"check": "b"}, [{"check": "a"}], rule)
    assert not inhibited({"check": "b", "desk": "aaz"}, [{"check": "a"}], rule)
    assert inhibited({"check": "b", "desk": "aaz"}, [{"check": "a", "desk": "aaz"}], rule)


def test_a_source_matching_both_sides_does_not_inhibit_a_target_matching_both() -> None:
    # severity=critical inhibits warnings; an alert that is both source and target (a critical
    # with team=x, targets being team=x) is not muted by another of its kind (Alertmanager).
    rule = rules(InhibitRule(source_matchers=("severity=critical",), target_matchers=("team=x",)))
    both_a = {"severity": "critical", "team": "x", "check": "a"}
    both_b = {"severity": "critical", "team": "x", "check": "b"}
    assert not inhibited(both_a, [both_a, both_b], rule)
    source_only = {"severity": "critical", "team": "y", "check": "c"}
    assert inhibitor(both_a, [both_b, source_only], rule) == source_only
    assert inhibited({"severity": "warning", "team": "x"}, [both_b], rule)


def test_the_first_rule_and_source_that_inhibit_are_reported() -> None:
    first = InhibitRule(name="one", source_matchers=("check=a",), target_matchers=("check=t",))
    second = InhibitRule(name="two", source_matchers=("check=b",), target_matchers=("check=t",))
    compiled = rules(first, second)
    assert [r.name for r in compiled] == ["one", "two"]
    assert inhibitor({"check": "t"}, [{"check": "b"}, {"check": "a"}], compiled) == {"check": "a"}
    assert inhibitor({"check": "t"}, [{"check": "b"}], compiled) == {"check": "b"}


def test_regex_target_matchers_use_the_whole_value() -> None:
    rule = rules(InhibitRule(source_matchers=("check=s",), target_matchers=('account=~"BINANCE-.*"',)))
    assert inhibited({"check": "t", "account": "BINANCE-AAZ01-UM"}, [{"check": "s"}], rule)
    assert not inhibited({"check": "t", "account": "OKX-BINANCE-1"}, [{"check": "s"}], rule)
