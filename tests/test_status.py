"""The status model on a real Redis (heartbeats by shared.heartbeat.Beater, snapshots by
shared.redisio.Publisher, the other keys in their documented layouts), each problem rule on its
own, and the ``monitorx status`` / ``monitorx health`` commands with their exit statuses."""

from __future__ import annotations

import json
import time

import pytest
import redis as redis_lib

from engine.health import LAG_LIMIT_S, Limits
from engine.plan import builtin_config
from engine.reload import ReloadRecord
from monitorx import healthcmd, statuscmd
from monitorx.status import Status, problems, read_status
from monitorx.statuscmd import render
from shared.heartbeat import ROLES, Beater, Role
from shared.keys import DISPATCH_GROUP, ROUTE_GROUP, Keys
from shared.models import Alert, Snapshot
from shared.redisio import Publisher
from shared.silences import SilenceStore
from tests.helpers import free_port, wait_until
from tests.test_delivery_stages import alert as stage_alert

KEYS = Keys()
CONFIG = builtin_config()  # stale_after 10 s, the stale-data inhibit rule


def beat(r: redis_lib.Redis, role: Role, name: str | None = None, ttl: int = 15) -> Beater:
    beater = Beater(r, KEYS, role, name or f"{role}-1", ttl=ttl)
    beater.beat(
        {"feeds": {"galio": {"state": "up", "last_frame_at": time.time()}}} if role == "ingestor" else {}
    )
    return beater


def healthy(r: redis_lib.Redis) -> float:
    """Every role beating, one fresh account, the groups created and read to the end: healthy."""
    for role in ROLES:
        beat(r, role)
    now = time.time()
    Publisher(r, KEYS).publish([snapshot("BIN-A", now)])
    r.xgroup_create(KEYS.snapshots, DISPATCH_GROUP, id="$", mkstream=True)
    r.xgroup_create(KEYS.alerts, ROUTE_GROUP, id="$", mkstream=True)
    return now


def snapshot(account: str, at: float) -> Snapshot:
    return Snapshot(account=account, venue="binance", observed_at=at, raw={"totalMarginBalance": "1"})


def alert(account: str, check: str = "delta") -> Alert:
    return stage_alert(account, check, at=time.time())


def status(r: redis_lib.Redis, now: float | None = None) -> Status:
    return read_status(r, KEYS, CONFIG, time.time() if now is None else now)


# -- the model's figures ----------------------------------------------------------------------


def test_a_group_with_unread_entries_shows_its_lag_pending_and_age(r: redis_lib.Redis) -> None:
    r.xgroup_create(KEYS.snapshots, DISPATCH_GROUP, id="0", mkstream=True)
    Publisher(r, KEYS).publish([snapshot(f"BIN-{n}", time.time()) for n in range(4)])
    r.xreadgroup(DISPATCH_GROUP, "d1", {KEYS.snapshots: ">"}, count=1)
    now = time.time() + 100
    (group,) = status(r, now).groups
    assert (group.stream, group.group, group.consumers) == (KEYS.snapshots, DISPATCH_GROUP, 1)
    assert (group.pending, group.lag) == (1, 3)
    assert group.oldest_pending_age_s is not None and 99 < group.oldest_pending_age_s < 110
    assert group.oldest_undelivered_age_s is not None and 99 < group.oldest_undelivered_age_s < 110
    r.xreadgroup(DISPATCH_GROUP, "d1", {KEYS.snapshots: ">"})
    (group,) = status(r, now).groups
    assert (group.pending, group.lag, group.oldest_undelivered_age_s) == (4, 0, None)


def test_every_notify_stream_group_is_read(r: redis_lib.Redis) -> None:
    for receiver in ("desk", "ops"):
        r.xgroup_create(KEYS.notify(receiver), "deliver", id="0", mkstream=True)
        r.xadd(KEYS.notify(receiver), {"group": "g"})
    found = {(g.stream, g.lag) for g in status(r).groups}
    assert found == {(KEYS.notify("desk"), 1), (KEYS.notify("ops"), 1)}


def test_accounts_older_than_stale_after_are_stale_oldest_first(r: redis_lib.Redis) -> None:
    now = time.time()
    Publisher(r, KEYS).publish([snapshot("BIN-A", now - 2), snapshot("BIN-B", now - 30)])
    accounts = status(r, now).accounts
    assert [(a.account, a.stale) for a in accounts] == [("BIN-B", True), ("BIN-A", False)]
    assert 29 < accounts[0].age_s < 31


def test_dead_letters_quarantine_queue_feeds_and_counters_are_counted(r: redis_lib.Redis) -> None:
    for n in range(3):
        r.xadd(
            KEYS.dead, {"alert": "{}", "sink": "desk", "error": "410", "attempts": "1", "failed_at": str(n)}
        )
    r.xadd(KEYS.quarantine, {"reason": "not JSON", "received_at": "1", "excerpt": "{"})
    r.hset(
        KEYS.feed("galio"),
        mapping={"state": "down", "reason": "refused", "since": "5.0", "updated_at": "6.0"},
    )
    r.hset(KEYS.counters, mapping={"frames": 7, "jobs_enqueued": 2})
    r.rpush("rq:queue:monitorx", "job-1", "job-2")
    s = status(r)
    assert (s.dead_letters, s.quarantined) == (3, 1)
    assert [(f.name, f.state, f.reason, f.since) for f in s.feeds] == [("galio", "down", "refused", 5.0)]
    assert s.counters == {"frames": 7, "jobs_enqueued": 2}
    assert (s.queue.name, s.queue.depth, s.queue.started, s.queue.failed) == ("monitorx", 2, 0, 0)


def test_firing_silenced_and_inhibited_are_decided_by_the_alerters_stages(r: redis_lib.Redis) -> None:
    alerts = [alert("BIN-A", "stale_data"), alert("BIN-A"), alert("BIN-B"), alert("BIN-C")]
    r.hset(KEYS.firing, mapping={a.fingerprint: a.model_dump_json() for a in alerts})
    SilenceStore(r, KEYS).add(['account="BIN-B"'], 600, "maintenance", "ops", time.time(), 3600)
    s = status(r)
    assert (s.firing, s.silenced, s.inhibited) == (4, 1, 1)
    marks = {(a.alert.account, a.alert.check): a.mark for a in s.alerts}
    assert marks[("BIN-A", "delta")] == "inhibited" and marks[("BIN-B", "delta")] == "silenced"
    assert marks[("BIN-C", "delta")] == "firing"


def test_processes_are_listed_by_role_with_their_freshness(r: redis_lib.Redis) -> None:
    beat(r, "worker", "w2")
    beat(r, "ingestor")
    s = status(r)
    assert [(p.heartbeat.role, p.heartbeat.name, p.fresh) for p in s.processes] == [
        ("ingestor", "ingestor-1", True),
        ("worker", "w2", True),
    ]
    assert [p.fresh for p in status(r, time.time() + 60).processes] == [False, False]


# -- the problem rules, one by one ----------------------------------------------------------------


def test_a_healthy_system_has_no_problem(r: redis_lib.Redis) -> None:
    healthy(r)
    assert problems(status(r)) == []


@pytest.mark.parametrize("role", ROLES)
def test_a_role_without_a_fresh_process_is_a_problem(r: redis_lib.Redis, role: Role) -> None:
    healthy(r)
    r.delete(KEYS.heartbeat(role, f"{role}-1"))
    assert problems(status(r)) == [f"no {role} running (no fresh heartbeat)"]


def test_a_feed_down_is_a_problem(r: redis_lib.Redis) -> None:
    healthy(r)
    r.hset(
        KEYS.feed("galio"),
        mapping={"state": "down", "reason": "refused", "since": "5.0", "updated_at": "5.0"},
    )
    assert problems(status(r)) == []  # the live ingestor says up: its heartbeat wins over the record
    Beater(r, KEYS, "ingestor", "ingestor-1").beat({"feeds": {"galio": {"state": "down"}}})
    assert problems(status(r)) == ["feed galio down since 5: refused"]
    r.delete(KEYS.heartbeat("ingestor", "ingestor-1"))  # no ingestor: the record that says down stands
    assert problems(status(r))[1:] == ["feed galio down since 5: refused"]
    beat(r, "ingestor")
    r.hset(KEYS.feed("galio"), "state", "up")
    assert problems(status(r)) == []


def test_feeds_follow_the_ingestors_heartbeat_and_none_connected_is_a_problem(r: redis_lib.Redis) -> None:
    healthy(r)
    assert [(f.name, f.state) for f in status(r).feeds] == [("galio", "up")]
    Beater(r, KEYS, "ingestor", "ingestor-1").beat({"feeds": {"galio": {"state": "connecting"}}})
    assert [(f.name, f.state) for f in status(r).feeds] == [("galio", "connecting")]
    assert problems(status(r)) == ["no ingestor connected to a feed (galio: connecting)"]
    r.delete(KEYS.heartbeat("ingestor", "ingestor-1"))  # no ingestor: a record that says up is not trusted
    r.hset(KEYS.feed("galio"), mapping={"state": "up", "reason": "", "since": "5.0", "updated_at": "6.0"})
    assert [(f.name, f.state) for f in status(r).feeds] == [("galio", "unknown")]


def test_a_refused_reload_is_a_problem_until_one_is_taken(r: redis_lib.Redis) -> None:
    healthy(r)
    refused = ReloadRecord(at=1.0, ok=False, file="/etc/c.yaml", by="h:1", error="checks.x: bad")
    r.set(KEYS.reload, refused.model_dump_json())
    assert status(r).reload == refused
    assert problems(status(r)) == [
        "configuration reload of /etc/c.yaml refused: the last good one keeps running"
    ]
    rendered = render(status(r), [])
    assert "CONFIG RELOAD: 1970-01-01 00:00:01 UTC of /etc/c.yaml by h:1: REFUSED: checks.x: bad" in rendered
    r.set(KEYS.reload, refused.model_copy(update={"ok": True, "error": ""}).model_dump_json())
    assert problems(status(r)) == []


def test_a_group_behind_by_more_than_the_limit_in_seconds_is_a_problem(r: redis_lib.Redis) -> None:
    now = healthy(r)
    old = int((now - LAG_LIMIT_S - 30) * 1000)
    r.xgroup_create(KEYS.notify("desk"), "deliver", id="0", mkstream=True)
    r.xadd(KEYS.notify("desk"), {"group": "g"}, id=f"{old}-0")
    (found,) = problems(status(r, now))
    assert found.startswith(f"group deliver on {KEYS.notify('desk')} is 9") and "behind" in found
    r.xreadgroup("deliver", "a1", {KEYS.notify("desk"): ">"})  # delivered, not acknowledged
    assert len(problems(status(r, now))) == 1
    r.xack(KEYS.notify("desk"), "deliver", f"{old}-0")
    assert problems(status(r, now)) == []


def test_a_group_with_more_undelivered_entries_than_the_limit_is_a_problem(r: redis_lib.Redis) -> None:
    healthy(r)
    r.xadd(KEYS.alerts, {"alert": "{}"})
    r.xadd(KEYS.alerts, {"alert": "{}"})
    assert problems(status(r), Limits(lag_limit_entries=2)) == []
    r.xadd(KEYS.alerts, {"alert": "{}"})
    (found,) = problems(status(r), Limits(lag_limit_entries=2))
    assert found == f"group {ROUTE_GROUP} on {KEYS.alerts} has 3 entries undelivered (limit 2)"


def test_stale_accounts_are_one_problem(r: redis_lib.Redis) -> None:
    now = healthy(r)
    Publisher(r, KEYS).publish([snapshot("BIN-OLD", now - 11), snapshot("BIN-OLDER", now - 50)])
    assert problems(status(r, now)) == ["2 account(s) stale (no data for over 10 s): BIN-OLDER, BIN-OLD"]


def test_dead_letters_waiting_are_a_problem(r: redis_lib.Redis) -> None:
    healthy(r)
    r.xadd(KEYS.dead, {"alert": "{}", "sink": "desk", "error": "410", "attempts": "1", "failed_at": "1"})
    assert problems(status(r)) == ["1 dead letter(s) waiting (monitorx dlq list)"]


def test_problems_come_worst_first(r: redis_lib.Redis) -> None:
    now = healthy(r)
    r.xadd(KEYS.dead, {"alert": "{}", "sink": "desk"})
    Publisher(r, KEYS).publish([snapshot("BIN-OLD", now - 60)])
    r.hset(KEYS.feed("galio"), mapping={"state": "down", "reason": "refused", "since": "5.0"})
    Beater(r, KEYS, "ingestor", "ingestor-1").beat({"feeds": {"galio": {"state": "down"}}})
    r.delete(KEYS.heartbeat("worker", "worker-1"))
    found = problems(status(r, now))
    assert [p.split()[0] for p in found] == ["no", "feed", "1", "1"]
    assert "stale" in found[2] and "dead letter" in found[3]


# -- the commands -------------------------------------------------------------------------------


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MONITORX_REDIS_URL", redis_url)
    monkeypatch.delenv("MONITORX_CONFIG", raising=False)
    monkeypatch.delenv("MONITORX_PREFIX", raising=False)
    return redis_url


def test_status_exits_0_when_healthy_and_1_with_problems_first(
    r: redis_lib.Redis, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy(r)
    assert statuscmd.main([]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("healthy") and "worker-1" in out
    r.delete(KEYS.heartbeat("worker", "worker-1"))
    assert statuscmd.main([]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("1 problem(s)") and lines[1] == "  ! no worker running (no fresh heartbeat)"


def test_status_json_is_the_model_with_its_problems(
    r: redis_lib.Redis, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy(r)
    r.xadd(KEYS.dead, {"alert": "{}", "sink": "desk"})
    assert statuscmd.main(["--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["healthy"] is False and data["problems"] == ["1 dead letter(s) waiting (monitorx dlq list)"]
    assert data["dead_letters"] == 1 and len(data["processes"]) == 4
    assert (
        Status.model_validate(
            {k: v for k, v in data.items() if k not in ("problems", "healthy")}
        ).dead_letters
        == 1
    )


def test_status_exits_3_when_redis_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONITORX_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.delenv("MONITORX_CONFIG", raising=False)
    assert statuscmd.main([]) == 3
    assert "Redis unreachable" in capsys.readouterr().err


def test_health_needs_a_fresh_beat_of_the_role_on_this_host(r: redis_lib.Redis, env: str) -> None:
    assert healthcmd.main(["--role", "worker"]) == 1
    beat(r, "ingestor")
    assert healthcmd.main(["--role", "worker"]) == 1  # another role
    beater = beat(r, "worker", ttl=1)
    assert healthcmd.main(["--role", "worker"]) == 0
    wait_until(lambda: healthcmd.main(["--role", "worker"]) == 1, timeout=5, what="the beat to expire")
    beater.beat(force=True)
    assert healthcmd.main(["--role", "worker"]) == 0
    beater.stop()
    assert healthcmd.main(["--role", "worker"]) == 1


def test_health_ignores_a_process_of_the_role_on_another_host(r: redis_lib.Redis, env: str) -> None:
    beater = beat(r, "worker")
    elsewhere = json.loads(str(r.get(beater.key)))
    r.set(beater.key, json.dumps({**elsewhere, "host": "elsewhere"}), ex=15)
    assert healthcmd.main(["--role", "worker"]) == 1


def test_health_is_unhealthy_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITORX_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert healthcmd.main(["--role", "alerter"]) == 1
