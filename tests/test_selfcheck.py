"""The health rules (engine.health) and the alerts about MonitorX itself (alerter.selfcheck) on a
real redis-server: each finding fires once and resolves once, across replicas and restarts, and
the alerter's router delivers them like any other alert."""

from __future__ import annotations

import json
import time
from typing import Any

import redis as redis_lib

from alerter.cli import build_alerter
from alerter.receivers import legacy_receivers
from alerter.selfcheck import SelfCheck
from engine.health import Health, Limits, findings, read_health
from shared.config import Config
from shared.heartbeat import HEARTBEAT_TTL, Beater
from shared.keys import Keys
from shared.models import Alert
from shared.settings import AlertSettings

KEYS = Keys()


class Clock:
    """A hand-moved unix clock, starting at the real time (stream entry ids use Redis' clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def emitted(r: redis_lib.Redis) -> list[Alert]:
    entries: Any = r.xrange(KEYS.alerts)
    return [Alert.model_validate_json(fields["alert"]) for _, fields in entries]


def beat(r: redis_lib.Redis, clock: Clock, role: Any, details: dict[str, Any] | None = None) -> None:
    Beater(r, KEYS, role, f"{role}-1", clock=clock).beat(details or {})


def all_roles(r: redis_lib.Redis, clock: Clock) -> None:
    for role in ("ingestor", "dispatcher", "worker", "alerter"):
        beat(r, clock, role, {"feeds": {"galio": {"state": "up"}}} if role == "ingestor" else None)


def after_grace(r: redis_lib.Redis, clock: Clock) -> SelfCheck:
    check = SelfCheck(r, KEYS, clock=clock, wait=lambda s: None)
    clock.now += HEARTBEAT_TTL + 1
    return check


# -- the rules ------------------------------------------------------------------------------------


def test_a_healthy_system_has_no_finding(r: redis_lib.Redis) -> None:
    clock = Clock()
    all_roles(r, clock)
    assert findings(read_health(r, KEYS, clock.now)) == []


def test_each_missing_role_is_a_critical_finding(r: redis_lib.Redis) -> None:
    clock = Clock()
    beat(r, clock, "alerter")
    found = findings(read_health(r, KEYS, clock.now))
    assert [(f.check, f.key, f.severity) for f in found] == [
        ("process_missing", role, "critical") for role in ("ingestor", "dispatcher", "worker")
    ]


def test_an_ingestor_with_no_feed_up_is_not_connected(r: redis_lib.Redis) -> None:
    clock = Clock()
    all_roles(r, clock)
    beat(r, clock, "ingestor", {"feeds": {"galio": {"state": "connecting"}}})
    found = findings(read_health(r, KEYS, clock.now))
    assert [(f.check, f.text) for f in found] == [
        ("feed_disconnected", "no ingestor connected to a feed (galio: connecting)")
    ]


def test_a_group_behind_the_limit_lags_and_dead_letters_wait(r: redis_lib.Redis) -> None:
    clock = Clock()
    all_roles(r, clock)
    r.xadd(KEYS.snapshots, {"account": "A"}, id=f"{int((clock.now - 90) * 1000)}-0")
    r.xgroup_create(KEYS.snapshots, "dispatch", id="0")
    r.xadd(KEYS.dead, {"alert": "{}"})
    health = read_health(r, KEYS, clock.now)
    assert [(f.check, f.key) for f in findings(health, Limits(lag_limit_s=60))] == [
        ("group_lagging", f"{KEYS.snapshots}/dispatch"),
        ("dead_letters", "dead"),
    ]
    assert [f.check for f in findings(health, Limits(lag_limit_s=120))] == ["dead_letters"]


def test_findings_are_pure_over_the_health_model() -> None:
    assert findings(Health(processes=(), groups=(), dead_letters=0), Limits(roles=())) == []


# -- the alerts -----------------------------------------------------------------------------------


def test_no_role_is_called_missing_within_one_ttl_of_the_start(r: redis_lib.Redis) -> None:
    clock = Clock()
    check = SelfCheck(r, KEYS, clock=clock, wait=lambda s: None)
    assert check.look(clock.now + HEARTBEAT_TTL - 1) == 0
    assert emitted(r) == []


def test_a_finding_fires_once_and_resolves_once(r: redis_lib.Redis) -> None:
    clock = Clock()
    beat(r, clock, "ingestor", {"feeds": {"galio": {"state": "up"}}})
    beat(r, clock, "dispatcher")
    check = after_grace(r, clock)
    all_roles(r, clock)
    r.delete(KEYS.heartbeat("worker", "worker-1"))
    assert check.look(clock.now) == 0  # seen once: it must last one period
    assert emitted(r) == []
    assert check.look(clock.now + 1) == 1
    assert check.look(clock.now + 2) == 0  # still missing: nothing new
    (fired,) = emitted(r)
    assert (fired.check, fired.state, fired.account, fired.keys) == (
        "process_missing",
        "firing",
        "monitorx",
        ("worker",),
    )
    assert fired.title == "MonitorX: no worker running (no fresh heartbeat)"
    beat(r, clock, "worker")
    assert check.look(clock.now + 3) == 1
    resolved = emitted(r)[-1]
    assert (resolved.state, resolved.fingerprint) == ("resolved", fired.fingerprint)
    assert r.hlen(KEYS.health) == 0


def test_replicas_and_a_restart_write_each_event_once(r: redis_lib.Redis) -> None:
    clock = Clock()
    r.xadd(KEYS.dead, {"alert": "{}"})
    all_roles(r, clock)
    first, second = after_grace(r, clock), after_grace(r, clock)
    all_roles(r, clock)
    assert first.look(clock.now) + second.look(clock.now) == 0
    assert first.look(clock.now + 1) + second.look(clock.now + 1) == 1
    restarted = after_grace(r, clock)
    all_roles(r, clock)
    assert restarted.look(clock.now + 1) == 0  # the state is in Redis, not in the process
    r.delete(KEYS.dead)
    assert first.look(clock.now + 2) + second.look(clock.now + 2) == 1
    assert [(a.check, a.state) for a in emitted(r)] == [
        ("dead_letters", "firing"),
        ("dead_letters", "resolved"),
    ]
    assert len({a.id for a in emitted(r)}) == 2


def test_a_finding_gone_by_the_next_look_raises_nothing(r: redis_lib.Redis) -> None:
    """An orderly stop of the whole stack: the processes delete their heartbeats a few seconds
    before the alerter stops; a process restarting within a period likewise."""
    clock = Clock()
    check = after_grace(r, clock)
    all_roles(r, clock)
    r.delete(KEYS.heartbeat("ingestor", "ingestor-1"))
    assert check.look(clock.now) == 0
    beat(r, clock, "ingestor", {"feeds": {"galio": {"state": "up"}}})
    assert check.look(clock.now + 1) == 0
    r.delete(KEYS.heartbeat("ingestor", "ingestor-1"))
    assert check.look(clock.now + 2) == 0  # seen again, but not at two looks in a row
    assert emitted(r) == [] and r.hlen(KEYS.health) == 0


def test_step_waits_until_due_then_looks(r: redis_lib.Redis) -> None:
    clock = Clock()
    waits: list[float] = []
    check = SelfCheck(r, KEYS, clock=clock, wait=waits.append, every=10.0)
    all_roles(r, clock)
    assert check.step() == 0 and waits == []  # the first look is due at once
    clock.now += 4
    assert check.step() == 0 and waits == [6.0]


def test_the_router_delivers_a_self_alert_like_any_other(
    r: redis_lib.Redis, redis_url: str, tmp_path: Any
) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    settings = AlertSettings.model_validate(
        {"MONITORX_REDIS_URL": redis_url, "MONITORX_ALERTS_JSONL": str(jsonl)}
    )
    alerter = build_alerter(r, settings, Config(), legacy_receivers(settings), block_ms=10).start()
    clock = Clock()
    check = after_grace(r, clock)
    all_roles(r, clock)
    r.delete(KEYS.heartbeat("dispatcher", "dispatcher-1"))
    assert check.look(clock.now) + check.look(clock.now + 1) == 1
    deadline = time.monotonic() + 20
    while not (jsonl.exists() and jsonl.read_text()) and time.monotonic() < deadline:
        alerter.step()
    delivered = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(d["check"], d["state"], d["keys"]) for d in delivered] == [
        ("process_missing", "firing", ["dispatcher"])
    ]
