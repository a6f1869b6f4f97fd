"""Dispatcher and workers against a real redis-server: routing, latest wins, state, allowlist."""

from __future__ import annotations

import json
from typing import Any

import redis as redis_lib
from rq import Queue
from rq.serializers import JSONSerializer

from dispatcher.service import Dispatcher
from engine.plan import Plan, build
from engine.registry import Registry
from ingestor.normalize import normalize_account
from shared.config import parse
from shared.keys import COUNTER_COALESCED, COUNTER_REJECTED_JOBS, QUEUE_NAME, Keys
from shared.models import Alert
from shared.redisio import Publisher, connect
from tests.helpers import alerts_of, in_process, wait_until

CONFIG = """
stale_after: 30
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*"]
    cooldown: 300
"""
ACC = "BINANCE-AAZ01-UM"
KEYS = Keys()


def plan_of(text: str = CONFIG) -> Plan:
    return build(parse(text, "test.yaml"), Registry.discover())


def setup(url: str, plan: Plan, clock: Any = None) -> tuple[Dispatcher, Any, Publisher]:
    return in_process(url, plan, **({"clock": clock} if clock is not None else {}))


def alerts(r: redis_lib.Redis) -> list[Alert]:
    return alerts_of(r)


def snap(t: float, usdt: object, seq: int = 0) -> Any:
    return normalize_account(
        ACC, {"USDTwalletBalance": usdt, "BNBwalletBalance": "5"}, observed_at=t, seq=seq
    )


def test_low_balance_alert_end_to_end_through_rq(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = setup(redis_url, plan_of())
    pub.publish([snap(1000.0, "1234.5")])
    assert d.step() == 2  # low_balance and stale_data, both routed on snapshots
    worker.work(burst=True)
    got = [a for a in alerts(r) if a.check == "low_balance"]
    assert len(got) == 1
    assert got[0].account == ACC and got[0].state == "firing"
    assert "$1,234.50" in got[0].text and "$10,000" in got[0].text
    assert r.xpending(KEYS.snapshots, "dispatch")["pending"] == 0


def test_latest_wins_coalesces_waiting_jobs(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = setup(redis_url, plan_of())
    for i in range(5):
        pub.publish([snap(1000.0 + i, "20000", seq=i)])
        d.step()
    assert len(Queue(QUEUE_NAME, connection=connect(redis_url, decode=False), serializer=JSONSerializer)) <= 2
    assert int(r.hget(KEYS.counters, COUNTER_COALESCED) or 0) >= 3
    pub.publish([snap(1010.0, "500", seq=9)])
    d.step()
    worker.work(burst=True)
    low = [a for a in alerts(r) if a.check == "low_balance"]
    assert [a.observed_at for a in low] == [1010.0]  # the newest snapshot was evaluated


def test_older_snapshot_never_overwrites_newer_state(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = setup(redis_url, plan_of())
    pub.publish([snap(2000.0, "500")])
    pub.publish([snap(1500.0, "50000")])  # arrives late, older
    d.step()
    worker.work(burst=True)
    assert json.loads(r.hget(KEYS.latest(ACC), "snapshot"))["observed_at"] == 2000.0
    assert len([a for a in alerts(r) if a.check == "low_balance"]) == 1


def test_junk_value_gives_check_error_for_that_pair_only(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = setup(redis_url, plan_of())
    pub.publish(
        [snap(1000.0, "12x"), normalize_account("BINANCE-AAZ02-UM", {"USDTwalletBalance": 5}, 1000.0)]
    )
    d.step()
    worker.work(burst=True)
    by_check = {(a.check, a.account) for a in alerts(r)}
    assert ("check_error", ACC) in by_check
    assert ("low_balance", "BINANCE-AAZ02-UM") in by_check
    error = next(a for a in alerts(r) if a.check == "check_error")
    assert "USDTwalletBalance" in error.text


def test_stale_tick_fires_and_resolves(redis_url: str, r: redis_lib.Redis) -> None:
    now = [1000.0]
    d, worker, pub = setup(redis_url, plan_of(), clock=lambda: now[0])
    pub.publish([snap(1000.0, "50000")])
    d.step()
    worker.work(burst=True)
    now[0] = 1031.0
    d.tick(now[0])
    worker.work(burst=True)
    pub.publish([snap(1032.0, "50000")])
    d.step()
    worker.work(burst=True)
    stale = [(a.state, a.observed_at) for a in alerts(r) if a.check == "stale_data"]
    assert stale == [("firing", 1031.0), ("resolved", 1032.0)]


def test_forged_job_is_refused(redis_url: str, r: redis_lib.Redis) -> None:
    _d, worker, _ = setup(redis_url, plan_of())
    q = Queue(QUEUE_NAME, connection=connect(redis_url, decode=False), serializer=JSONSerializer)
    job = q.enqueue("platform.node")
    worker.work(burst=True)
    job.refresh()
    assert job.is_failed
    assert int(r.hget(KEYS.counters, COUNTER_REJECTED_JOBS) or 0) == 1


REPORT_CONFIG = """
checks:
  report:
    check: balance_report
    accounts: ["BINANCE-AAZ01-UM", "BINANCE-AAZ02-UM"]
    schedule: ["0 0,6,12,18 * * *"]
"""


def test_report_slot_fires_once_even_with_two_dispatchers(redis_url: str, r: redis_lib.Redis) -> None:
    from datetime import UTC, datetime

    noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
    now = [noon - 30]
    plan = plan_of(REPORT_CONFIG)
    d1, worker, pub = setup(redis_url, plan, clock=lambda: now[0])
    d2, _, _ = setup(redis_url, plan, clock=lambda: now[0])
    pub.publish(
        [
            normalize_account(
                ACC, {"USDTwalletBalance": "12000.5", "maintotalWalletBalance": 20000.5}, noon - 40
            )
        ]
    )
    for t in (noon - 30, noon + 2, noon + 3, noon + 7, noon + 3600):
        now[0] = t
        d1.tick(t)
        d2.tick(t)
    worker.work(burst=True)
    reports = [a for a in alerts(r) if a.check == "balance_report"]
    assert {a.id for a in reports} and len({a.id for a in reports}) == 1
    assert reports[0].observed_at == noon and "12:00 UTC" in reports[0].text
    assert "$12,000.50 (60.0%)" in reports[0].text  # 12000.5 / 20000.5 = 0.59999 -> 60.0%
    assert "No data: BINANCE-AAZ02-UM" in reports[0].text


def test_missed_report_slot_is_sent_late_once(redis_url: str, r: redis_lib.Redis) -> None:
    from datetime import UTC, datetime

    six = datetime(2026, 11, 25, 6, 0, tzinfo=UTC).timestamp()
    plan = plan_of(REPORT_CONFIG)
    d, worker, _ = setup(redis_url, plan, clock=lambda: six)
    d.tick(six + 1)  # 06:00 sent on time, recorded
    d.tick(six + 6 * 3600 + 900)  # everything was down at 12:00; back at 12:15
    d.tick(six + 6 * 3600 + 905)
    worker.work(burst=True)
    reports = sorted((a.observed_at, a.labels.get("late")) for a in alerts(r) if a.check == "balance_report")
    assert reports == [(six, None), (six + 6 * 3600, "true")]


def test_entries_left_pending_by_a_dead_dispatcher_are_reclaimed(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = setup(redis_url, plan_of())
    pub.publish([snap(1000.0, "500")])
    r.xreadgroup("dispatch", "crashed-dispatcher", {KEYS.snapshots: ">"})  # read, never acknowledged
    d.step()  # the entry is not idle long enough yet: it stays the dead consumer's
    assert r.xpending(KEYS.snapshots, "dispatch")["pending"] == 1
    d.claim_idle_ms = 1
    d._next_claim = 0.0

    def reclaimed() -> bool:
        d.step()
        return r.xpending(KEYS.snapshots, "dispatch")["pending"] == 0

    wait_until(reclaimed, timeout=5, what="the pending entry to be reclaimed, routed and acknowledged")
    worker.work(burst=True)
    assert [a.check for a in alerts(r) if a.check == "low_balance"] == ["low_balance"]


def test_a_read_that_fills_the_batch_leaves_the_dispatcher_behind(redis_url: str, r: redis_lib.Redis) -> None:
    d, _, pub = in_process(redis_url, plan_of(), batch=3)
    pub.publish([snap(1000.0 + i, "20000", seq=i) for i in range(5)])
    d.step()
    assert d.behind  # 3 of 5 read: its loop does not wait out the batch window
    d.step()
    assert not d.behind  # the last 2
