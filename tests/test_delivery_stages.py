"""The alerter's stages together (route, group, inhibit, silence, dedup, pace, send, record) on
a real Redis with real JSONL receivers, in virtual time: what each receiver is told, and when.

A notification is one entry of the send log (``Keys.sendlog``); the JSONL file shows its alerts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from alerter.cli import Alerter, build_alerter
from alerter.pace import Pacer
from alerter.receivers import JsonlReceiver
from engine.alerts import make_alert
from engine.checks.base import Message
from monitorx import alertscmd
from shared.config import parse
from shared.keys import Keys
from shared.models import Alert, AlertState, Severity
from shared.settings import AlertSettings
from shared.silences import SilenceStore

KEYS = Keys()
T0 = 1_800_000_000.0

ROUTES = """
receivers:
  desk: {jsonl: {path: desk.jsonl}}
  crit: {jsonl: {path: crit.jsonl}}
route:
  receiver: desk
  group_by: [check]
  group_wait: 2s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: crit
      group_by: [account]
      group_wait: 0s
      continue: true
    - matchers: ['severity="critical"']
      receiver: desk
      group_by: [check]
      group_wait: 0s
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def alert(
    account: str,
    check: str = "delta",
    state: AlertState = "firing",
    severity: Severity = "warning",
    at: float = T0,
) -> Alert:
    message = Message(f"{check} on {account}", f"{check} {state} on {account}", severity)
    return make_alert(
        instance=check,
        check=check,
        account=account,
        state=state,
        message=message,
        observed_at=at,
        emitted_at=at,
        keys=["BTCUSDT"],
    )


def publish(r: redis_lib.Redis, *alerts: Alert) -> None:
    for a in alerts:
        r.xadd(KEYS.alerts, {"alert": a.model_dump_json()})


def sent(r: redis_lib.Redis, receiver: str | None = None) -> list[dict[str, str]]:
    """Successful notifications, oldest first."""
    entries: Any = r.xrange(KEYS.sendlog)
    found = [f for _, f in entries if f["status"] == "sent"]
    return [f for f in found if receiver is None or f["receiver"] == receiver]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def clock() -> Clock:
    return Clock()


def setup(r: redis_lib.Redis, tmp_path: Path, clock: Clock, text: str = ROUTES, **options: Any) -> Alerter:
    config = parse(
        text.replace("desk.jsonl", str(tmp_path / "desk.jsonl")).replace(
            "crit.jsonl", str(tmp_path / "crit.jsonl")
        ),
        "delivery.yaml",
    )
    receivers = [JsonlReceiver(tmp_path / f"{name}.jsonl", name=name) for name in config.receivers]
    settings = AlertSettings(consumer=options.pop("consumer", "alert-a"))
    options = {"clock": clock, "block_ms": 5, "retry_idle_ms": 50, **options}
    return build_alerter(r, settings, config, receivers, **options).start()


def steps(alerter: Alerter, n: int = 3) -> None:
    for _ in range(n):
        alerter.step()


def test_a_storm_is_one_notification_after_group_wait_and_a_recovery_one_more(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    publish(r, *(alert(f"BINANCE-A{i:02d}-UM") for i in range(12)))
    steps(alerter)
    assert sent(r) == []  # group_wait: 2 s
    clock.now += 2
    steps(alerter)
    notes = sent(r)
    assert len(notes) == 1 and notes[0]["alerts"] == "12" and notes[0]["receiver"] == "desk"
    assert len({line["group_key"] for line in lines(tmp_path / "desk.jsonl")}) == 1
    clock.now += 5
    publish(r, *(alert(f"BINANCE-A{i:02d}-UM", state="resolved", at=clock.now) for i in range(12)))
    steps(alerter)
    assert len(sent(r)) == 1  # group_interval: 1 m since the first notification
    clock.now = T0 + 2 + 60
    steps(alerter)
    assert [n["alerts"] for n in sent(r)] == ["12", "12"]
    assert r.keys(KEYS.group("*")) == []  # all resolved and told: the group is gone


def test_a_critical_alert_continues_to_a_second_receiver(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    publish(r, alert("OKX-B-SWAP", severity="critical"))
    steps(alerter)
    assert sorted(n["receiver"] for n in sent(r)) == ["crit", "desk"]
    assert [x["account"] for x in lines(tmp_path / "crit.jsonl")] == ["OKX-B-SWAP"]


def test_a_silenced_alert_is_told_when_its_silence_ends_if_it_still_fires(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    silences = SilenceStore(r, KEYS)
    silence = silences.add(['account="OKX-B-SWAP"'], 600, "maintenance", "ops", clock.now, 3600)
    publish(r, alert("OKX-B-SWAP"), alert("OKX-C-SWAP"))
    steps(alerter)
    clock.now += 2
    steps(alerter)
    assert [x["account"] for x in lines(tmp_path / "desk.jsonl")] == ["OKX-C-SWAP"]
    clock.now += 60
    steps(alerter)
    assert len(sent(r)) == 1  # still silenced
    silences.expire(silence.id, clock.now)  # every group is looked at again at once
    steps(alerter)
    assert [x["account"] for x in lines(tmp_path / "desk.jsonl")][-1] == "OKX-B-SWAP"
    assert len(sent(r)) == 2


def test_stale_data_inhibits_the_accounts_other_alerts_until_it_resolves(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(
        r,
        tmp_path,
        clock,
        ROUTES + "inhibit_rules:\n  - source_matchers: ['check=\"stale_data\"']\n"
        "    target_matchers: ['check!=\"stale_data\"']\n    equal: [account]\n",
    )
    publish(r, alert("OKX-B-SWAP", check="stale_data"))
    steps(alerter)
    publish(r, alert("OKX-B-SWAP", at=T0 + 1), alert("OKX-C-SWAP", at=T0 + 1))
    steps(alerter)
    clock.now += 3
    steps(alerter)
    told = [(x["check"], x["account"]) for x in lines(tmp_path / "desk.jsonl")]
    assert ("delta", "OKX-C-SWAP") in told and ("delta", "OKX-B-SWAP") not in told
    publish(r, alert("OKX-B-SWAP", check="stale_data", state="resolved", at=clock.now))
    clock.now += 60
    steps(alerter)
    told = [(x["check"], x["account"]) for x in lines(tmp_path / "desk.jsonl")]
    assert ("delta", "OKX-B-SWAP") in told


def test_an_alerter_started_over_what_an_older_one_recorded_still_inhibits(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    stale = alert("OKX-B-SWAP", check="stale_data")
    r.hset(KEYS.firing, stale.fingerprint, stale.model_dump_json())  # firing, and no index yet
    alerter = setup(r, tmp_path, clock)  # default inhibit rule: stale data mutes the account
    assert r.hkeys(KEYS.inhibitors) == [stale.fingerprint]
    publish(r, alert("OKX-B-SWAP", at=T0 + 1), alert("OKX-C-SWAP", at=T0 + 1))
    steps(alerter)
    clock.now += 3
    steps(alerter)
    assert [x["account"] for x in lines(tmp_path / "desk.jsonl")] == ["OKX-C-SWAP"]


def test_a_route_repeat_sends_what_still_fires_again(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    publish(r, alert("OKX-B-SWAP"))
    steps(alerter)
    clock.now += 2
    steps(alerter)
    clock.now += 3599
    steps(alerter)
    assert len(sent(r)) == 1
    clock.now += 1
    steps(alerter)
    assert len(sent(r)) == 2
    assert [x["account"] for x in lines(tmp_path / "desk.jsonl")] == ["OKX-B-SWAP"] * 2


def test_a_cooldown_repeat_is_new_to_the_receiver_and_told_at_the_group_interval(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    first = alert("OKX-B-SWAP")
    publish(r, first, first)  # the same alert twice: told once
    steps(alerter)
    clock.now += 2
    steps(alerter)
    publish(r, alert("OKX-B-SWAP", at=T0 + 30))
    clock.now = T0 + 40
    steps(alerter)
    assert len(sent(r)) == 1
    clock.now = T0 + 62
    steps(alerter)
    assert len(sent(r)) == 2 and len(lines(tmp_path / "desk.jsonl")) == 2


def test_changes_while_a_channel_waits_merge_into_one_notification(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    text = ROUTES.replace("group_wait: 2s\n  group_interval: 1m", "group_wait: 0s\n  group_interval: 0s")
    alerter = setup(r, tmp_path, clock, text)
    for delivery in alerter.deliveries:
        delivery.receiver.channel = f"chan-{delivery.receiver.name}"
    Pacer(r, KEYS).hold("chan-desk", clock.now + 10, clock.now)  # a Retry-After: 10
    for i in range(3):
        publish(r, alert(f"OKX-{i}-SWAP", at=T0 + i))
        steps(alerter, 2)
    assert sent(r) == []
    clock.now += 10
    steps(alerter)
    assert [n["alerts"] for n in sent(r)] == ["3"]


def test_two_replicas_tell_each_alert_once(r: redis_lib.Redis, tmp_path: Path, clock: Clock) -> None:
    a = setup(r, tmp_path, clock, consumer="alert-a")
    b = setup(r, tmp_path, clock, consumer="alert-b")
    publish(r, *(alert(f"BINANCE-A{i:02d}-UM") for i in range(12)))
    a.router.step()
    b.router.step()
    clock.now += 2
    for _ in range(3):
        b.step()
        a.step()
    assert len(sent(r)) == 1
    assert sorted(x["account"] for x in lines(tmp_path / "desk.jsonl")) == [
        f"BINANCE-A{i:02d}-UM" for i in range(12)
    ]


def test_a_resolution_joins_the_group_of_the_alert_it_ends(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    """The resolution says severity info; it is routed by the critical alert's labels."""
    alerter = setup(r, tmp_path, clock)
    publish(r, alert("OKX-B-SWAP", severity="critical"))
    steps(alerter)
    publish(r, alert("OKX-B-SWAP", state="resolved", severity="info", at=T0 + 5))
    clock.now += 5
    steps(alerter)
    clock.now = T0 + 60  # the group_interval since the first notification
    steps(alerter)
    crit = [(x["state"], x["group_key"]) for x in lines(tmp_path / "crit.jsonl")]
    assert [s for s, _ in crit] == ["firing", "resolved"] and crit[0][1] == crit[1][1]


def test_an_unreadable_alert_is_dead_lettered_and_the_rest_flows(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    alerter = setup(r, tmp_path, clock)
    r.xadd(KEYS.alerts, {"alert": "{not json"})
    publish(r, alert("OKX-B-SWAP", severity="critical"))
    steps(alerter)
    dead: Any = r.xrange(KEYS.dead)
    assert [f["sink"] for _, f in dead] == ["*"]
    assert len(sent(r, "crit")) == 1


def test_monitorx_alerts_says_why_each_firing_alert_is_or_is_not_notified(
    r: redis_lib.Redis,
    redis_url: str,
    tmp_path: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "delivery.yaml"
    path.write_text(ROUTES + "inhibit_rules: []\n")
    monkeypatch.setenv("MONITORX_REDIS_URL", redis_url)
    alerter = setup(r, tmp_path, clock)
    silence = SilenceStore(r, KEYS).add(
        ['account="OKX-B-SWAP"'], 600, "maintenance", "ops", time.time(), 3600
    )
    publish(r, alert("OKX-B-SWAP"), alert("OKX-C-SWAP"), alert("OKX-D-SWAP", severity="critical"))
    steps(alerter)
    assert alertscmd.main(["--config", str(path)]) == 0
    rows = {line.split()[4]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert f"silenced by {silence.id} (maintenance)" in rows["OKX-B-SWAP"]
    assert rows["OKX-C-SWAP"].endswith("waiting: desk")  # group_wait
    assert rows["OKX-D-SWAP"].endswith("notified: crit, desk")
    assert alertscmd.main(["--config", str(path), "--silenced"]) == 0
    assert [line.split()[4] for line in capsys.readouterr().out.splitlines()[1:]] == ["OKX-B-SWAP"]
    assert alertscmd.main(["log", "--receiver", "crit"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and " crit " in out[1] and " sent " in out[1]


def test_the_per_sink_groups_of_an_earlier_alerter_are_removed_and_their_alerts_routed(
    r: redis_lib.Redis, tmp_path: Path, clock: Clock
) -> None:
    publish(r, alert("OKX-B-SWAP", severity="critical"))
    r.xgroup_create(KEYS.alerts, "alert:slack", id="0")
    r.xreadgroup("alert:slack", "old", {KEYS.alerts: ">"})  # pending there, never acknowledged
    alerter = setup(r, tmp_path, clock)
    groups: Any = r.xinfo_groups(KEYS.alerts)
    assert [g["name"] for g in groups] == ["alert:route"]
    steps(alerter)
    assert len(sent(r, "crit")) == 1
