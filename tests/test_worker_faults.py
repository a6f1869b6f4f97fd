"""Issue 9 items 1, 3 and 6, in process against a real redis-server and rq's own code: a worker that
died holding a pair never blinds it, its job is failed and reported in plain words, and a restarted
dispatcher handles the entries it left pending at once."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis as redis_lib
from rq.job import JobStatus

from engine.plan import build
from engine.registry import Registry
from engine.store import HOLD_SECONDS
from ingestor.normalize import normalize_account
from shared.config import parse
from shared.keys import Keys
from shared.redisio import Outage, connect
from tests.helpers import alerts_of, in_process
from tests.pipeline import rq_worker_count
from tests.test_dispatch_and_run import plan_of, snap
from tests.test_isolation import ACC, HANG
from workers.worker import ABANDON_GRACE, RqOutageFilter, make_worker, retire_interrupted

KEYS = Keys()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def die_holding_a_job(url: str, plan: Any, started: bool = True) -> Any:
    """A real rq worker that dequeues the next job and, if ``started``, does everything rq does
    before running it (started registry, status STARTED), then dies: the state a SIGKILL at that
    moment leaves (without ``started``: the job taken, still QUEUED, in the queue's intermediate
    list). The job never ran, so the pair's latest-wins marker still names it."""
    worker = make_worker("simple", connect(url, decode=False), None)  # type: ignore[arg-type]
    found = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert found is not None
    job, _ = found
    if started:
        worker.prepare_execution(job)
        worker.prepare_job_execution(job)
    assert job.get_status() == (JobStatus.STARTED if started else JobStatus.QUEUED)
    return job


JOB_TIMEOUT = 5


def dispatcher_and_a_dead_job(url: str) -> tuple[Any, Any]:
    """A dispatcher on a settable clock that queued a job for a healthy pair, and that job held
    by a worker that died (die_holding_a_job)."""
    d, _, pub = in_process(url, plan_of(), tick_seconds=0.001, job_timeout=JOB_TIMEOUT, clock=Clock(0.0))
    pub.publish([snap(1000.0, "20000")])
    d.step()
    return d, die_holding_a_job(url, plan_of())


def past_the_timeout(d: Any) -> None:
    """A dispatcher step once the job timeout and the abandon grace have passed."""
    d.clock.now = time.time() + JOB_TIMEOUT + ABANDON_GRACE + 1
    d.step()


@pytest.mark.parametrize("started", [True, False], ids=["after-start", "right-after-dequeue"])
def test_a_worker_dying_before_its_job_cleared_the_marker_does_not_blind_the_pair(
    redis_url: str, r: redis_lib.Redis, started: bool
) -> None:
    d, worker, pub = in_process(redis_url, plan_of(), tick_seconds=3600)
    pub.publish([snap(1000.0, "20000")])  # healthy
    d.step()
    dead = die_holding_a_job(redis_url, plan_of(), started)
    assert r.get(KEYS.queued("low", "BINANCE-AAZ01-UM")) == dead.id  # the marker it never cleared
    pub.publish([snap(1001.0, "1234.5")])  # the account breaches
    assert d.step() >= 1  # was: coalesced into the dead job for MARKER_TTL (600 s)
    worker.work(burst=True)
    assert [a.account for a in alerts_of(r, "low_balance")] == ["BINANCE-AAZ01-UM"]


def test_an_abandoned_job_is_failed_and_reported_in_plain_words_soon_after_its_timeout(
    redis_url: str, r: redis_lib.Redis
) -> None:
    d, dead = dispatcher_and_a_dead_job(redis_url)
    past_the_timeout(d)  # the tick runs rq's clean-up of abandoned jobs
    assert dead.get_status(refresh=True) == JobStatus.FAILED
    errors = alerts_of(r, "check_error")
    assert len(errors) == 1
    assert "worker running this check died" in errors[0].text
    assert "AbandonedJobError" not in errors[0].text


def test_a_restarted_dispatcher_handles_its_own_pending_entries_at_once(
    redis_url: str, r: redis_lib.Redis
) -> None:
    first, worker, pub = in_process(redis_url, plan_of(), claim_idle_ms=3_600_000, tick_seconds=3600)
    pub.publish([snap(1000.0, "1234.5")])
    first._read()  # read, then killed before enqueueing and acknowledging
    assert r.xpending(KEYS.snapshots, "dispatch")["pending"] == 1
    second, _, _ = in_process(redis_url, plan_of(), claim_idle_ms=3_600_000, tick_seconds=3600)
    assert second.step() >= 1  # the same consumer name: its pending entry is handled now
    assert r.xpending(KEYS.snapshots, "dispatch")["pending"] == 0
    worker.work(burst=True)
    assert len(alerts_of(r, "low_balance")) == 1


def test_a_job_interrupted_by_a_redis_outage_is_retired_not_reported_as_abandoned(
    redis_url: str, r: redis_lib.Redis
) -> None:
    d, job = dispatcher_and_a_dead_job(redis_url)
    worker = make_worker("simple", connect(redis_url, decode=False), None)  # type: ignore[arg-type]
    worker.job_in_hand = job  # work() quit on a Redis error with this job in hand
    retire_interrupted(worker)
    past_the_timeout(d)
    assert alerts_of(r, "check_error") == []
    assert worker.job_in_hand is None


def test_a_job_redis_lost_in_the_outage_needs_no_retiring(redis_url: str, r: redis_lib.Redis) -> None:
    """Redis came back from an AOF (or empty) without the job the worker had in hand: the worker
    carries on (it used to exit: rq raises InvalidJobOperation for a job hash that is gone)."""
    _, job = dispatcher_and_a_dead_job(redis_url)
    r.delete(job.key)
    worker = make_worker("simple", connect(redis_url, decode=False), None)  # type: ignore[arg-type]
    worker.job_in_hand = job
    retire_interrupted(worker)
    assert worker.job_in_hand is None


def test_rq_connection_retries_become_one_line_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    rq_log = logging.getLogger("rq.worker.test")
    outage = Outage("worker")
    rq_log.addFilter(RqOutageFilter(outage))
    retry = "Worker w: could not connect to Redis instance: Error 111 connecting. retrying in 1 seconds..."
    with caplog.at_level(logging.INFO, logger=rq_log.name):  # whatever level an rq worker left
        for _ in range(5):
            rq_log.error(retry)
        rq_log.info("Worker w: monitorx: low BINANCE-AAZ01-UM (job)")
    lines = [rec.getMessage() for rec in caplog.records]
    assert not [line for line in lines if "retrying in" in line]
    assert len([line for line in lines if "Redis unavailable" in line]) == 1
    assert len([line for line in lines if "Redis available again" in line]) == 1
    assert lines[-1].endswith("(job)") and outage.failures == 0


def test_a_worker_registers_again_when_redis_came_back_empty(redis_url: str, r: redis_lib.Redis) -> None:
    worker = make_worker("simple", connect(redis_url, decode=False), None)  # type: ignore[arg-type]
    worker.register_birth()
    assert rq_worker_count(redis_url) == 1
    r.flushall()  # Redis restarted empty
    assert worker.dequeue_job_and_maintain_ttl(timeout=1, max_idle_time=1) is None
    assert rq_worker_count(redis_url) == 1


def test_a_check_that_timed_out_holds_its_pair_and_never_runs_again_unbounded(
    redis_url: str, r: redis_lib.Redis
) -> None:
    registry = Registry([*Registry.discover(plugins=False).specs.values(), HANG])
    config = "checks:\n  hang: {check: hang, accounts: ['*']}\n  low: {check: low_balance, accounts: ['*']}\n"
    plan = build(parse(config, "t.yaml"), registry)
    d, worker, pub = in_process(redis_url, plan, job_timeout=1, tick_seconds=3600)
    pub.publish([normalize_account(ACC, {"USDTwalletBalance": 50}, 10.0)])
    d.step()
    worker.work(burst=True)
    assert r.exists(KEYS.hold("hang", ACC)) and 0 < r.ttl(KEYS.hold("hang", ACC)) <= HOLD_SECONDS
    [error] = [a for a in alerts_of(r, "check_error") if a.instance == "hang"]
    assert "JobTimeoutException" in error.text
    pub.publish([normalize_account(ACC, {"USDTwalletBalance": 60}, 11.0)])
    d.step()  # the low-balance pair gets its job; the held pair none
    assert r.get(KEYS.queued("hang", ACC)) is None and r.get(KEYS.queued("low", ACC)) is not None
