"""Heartbeats (shared.heartbeat) against a real redis-server: the writer's throttle, TTL and clean
stop, the reader's order, what each process says of itself, and, in a real pipeline, that a
killed process disappears within the TTL while a stopped one disappears at once."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from alerter.cli import Beating, build_alerter
from alerter.receivers import legacy_receivers
from ingestor.health import FeedHealth
from shared import keys as K
from shared.config import Config
from shared.heartbeat import HEARTBEAT_EVERY, HEARTBEAT_TTL, Beater, Heartbeat, read_heartbeats
from shared.keys import Keys
from shared.settings import AlertSettings
from tests.helpers import in_process, wait_until
from tests.pipeline import Pipeline
from tests.test_dispatch_and_run import plan_of, snap
from workers.worker import WorkerBeat

KEYS = Keys()


class Clock:
    """A hand-moved unix clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(r: redis_lib.Redis, role: str, name: str) -> Heartbeat | None:
    raw: Any = r.get(KEYS.heartbeat(role, name))
    return None if raw is None else Heartbeat.model_validate_json(raw)


# -- the writer and the reader ---------------------------------------------------------------------


def test_beat_writes_at_most_every_interval_unless_forced(r: redis_lib.Redis) -> None:
    clock = Clock()
    beater = Beater(r, KEYS, "dispatcher", "d1", clock=clock)
    assert beater.due() and beater.beat({"n": 1})
    clock.now += HEARTBEAT_EVERY - 0.1
    assert not beater.due() and not beater.beat({"n": 2})
    first = stored(r, "dispatcher", "d1")
    assert first is not None and first.details == {"n": 1} and first.last_step_at == 1000.0
    assert beater.beat({"n": 3}, force=True)
    clock.now += HEARTBEAT_EVERY
    assert beater.due() and beater.beat({"n": 4})
    last = stored(r, "dispatcher", "d1")
    assert last is not None and last.details == {"n": 4} and last.last_step_at == clock.now
    assert last.started_at == 1000.0 and last.role == "dispatcher" and last.name == "d1"


def test_beat_sets_the_ttl_and_stop_deletes(r: redis_lib.Redis) -> None:
    beater = Beater(r, KEYS, "worker", "w1")
    beater.beat({"current_job": None})
    assert 0 < int(r.ttl(KEYS.heartbeat("worker", "w1"))) <= HEARTBEAT_TTL  # type: ignore[arg-type]
    beat = stored(r, "worker", "w1")
    assert beat is not None and beat.fresh(time.time()) and beat.host == socket.gethostname()
    beater.stop()
    assert not r.exists(KEYS.heartbeat("worker", "w1"))


def test_read_heartbeats_orders_by_role_then_name_and_skips_junk(r: redis_lib.Redis) -> None:
    for role, name in [("worker", "w2"), ("alerter", "a1"), ("worker", "w1"), ("ingestor", "i1")]:
        Beater(r, KEYS, role, name).beat()  # type: ignore[arg-type]
    r.set(KEYS.heartbeat("worker", "junk"), "not json")
    r.set(KEYS.heartbeat("worker", "alien"), json.dumps({"role": "worker", "name": "alien"}))
    r.hset(KEYS.heartbeat("worker", "hash"), "a", "b")  # MGET reads nothing from a hash
    found = [(b.role, b.name) for b in read_heartbeats(r, KEYS)]
    assert found == [("ingestor", "i1"), ("worker", "w1"), ("worker", "w2"), ("alerter", "a1")]


# -- what each process says ------------------------------------------------------------------------


def test_dispatcher_step_beats_its_read_lag(redis_url: str, r: redis_lib.Redis) -> None:
    beater = Beater(r, KEYS, "dispatcher", "d1", every=0.0)  # a write every step
    d, _, pub = in_process(redis_url, plan_of(), beater=beater)
    d.step()
    idle = stored(r, "dispatcher", "d1")
    assert idle is not None and idle.details == {"read_lag_s": None, "newest_observed_at": None}
    observed = time.time() - 2.0
    pub.publish([snap(observed, "20000")])
    d.step()
    beat = stored(r, "dispatcher", "d1")
    assert beat is not None and beat.details["newest_observed_at"] == observed
    assert 2.0 <= beat.details["read_lag_s"] < 2.0 + HEARTBEAT_EVERY


def test_worker_beat_thread_names_the_job_in_hand_and_stops(redis_url: str, r: redis_lib.Redis) -> None:
    d, worker, pub = in_process(redis_url, plan_of())
    pub.publish([snap(time.time(), "20000")])
    assert d.step() >= 1
    [job_id] = worker.queues[0].get_job_ids()[:1]
    worker.job_in_hand = worker.queues[0].fetch_job(job_id)  # as execute_job sets it
    beat = WorkerBeat(Beater(r, KEYS, "worker", "w1")).start()
    beat.worker = worker
    try:
        wait_until(
            lambda: (hb := stored(r, "worker", "w1")) is not None and hb.details["current_job"] == job_id,
            timeout=HEARTBEAT_EVERY + 3,
            what="a beat naming the job in hand",
        )
    finally:
        beat.stop()
    assert not r.exists(KEYS.heartbeat("worker", "w1"))


def test_alerter_beat_counts_each_receivers_unread_and_pending_notices(
    r: redis_lib.Redis, tmp_path: Path
) -> None:
    settings = AlertSettings(consumer="alert-1", alerts_jsonl=tmp_path / "alerts.jsonl")
    receivers = legacy_receivers(settings)
    alerter = build_alerter(r, settings, Config(), receivers, block_ms=20).start()
    stream = KEYS.notify("jsonl")
    for n in range(3):
        r.xadd(stream, {"group": f"g{n}"})
    r.xreadgroup(K.DELIVER_GROUP, "other", {stream: ">"}, count=1)  # one pending, two unread
    beating = Beating(alerter.router, Beater(r, KEYS, "alerter", "alert-1"), ["jsonl"])
    beating.step()
    beat = stored(r, "alerter", "alert-1")
    assert beat is not None and beat.details == {"receivers": ["jsonl"], "backlog": {"jsonl": 3}}


def test_feed_connection_state_follows_sessions_frames_and_the_feed_down_alert() -> None:
    health = FeedHealth("galio", "ws://127.0.0.1:1", down_after=1.0, started_at=100.0)
    assert health.connection() == "connecting" and health.last_frame_at is None
    health.connected(100.1)
    assert health.connection() == "up"
    health.frame(100.2)
    health.failure("connection lost", 100.3)
    assert health.connection() == "connecting" and health.last_frame_at == 100.2
    assert [a.state for a in health.evaluate(101.5)] == ["firing"]
    health.connected(101.6)
    assert health.connection() == "down"  # open, but no frame yet: the alert still fires
    health.frame(101.7)
    assert health.connection() == "up" and health.last_frame_at == 101.7


# -- a real pipeline -------------------------------------------------------------------------------


@pytest.fixture
def pipeline(tmp_path: Path, redis_url: str) -> Iterator[Pipeline]:
    made = Pipeline(tmp_path / "run", redis_url)
    try:
        yield made
    finally:
        made.close()


def beats_of(r: redis_lib.Redis) -> dict[tuple[str, str], Heartbeat]:
    now = time.time()
    return {(b.role, b.name): b for b in read_heartbeats(r, KEYS) if b.fresh(now)}


def every_role_told(pipeline: Pipeline, workers: list[str]) -> dict[tuple[str, str], Heartbeat] | None:
    """The fresh heartbeats once each process has said what only it knows, else None."""
    beats = beats_of(pipeline.r)
    host = socket.gethostname()
    dispatcher = beats.get(("dispatcher", f"dispatch-{host}"))
    ingestor = beats.get(("ingestor", f"galio-{host}"))
    alerter = beats.get(("alerter", f"alert-{host}"))
    if dispatcher is None or ingestor is None or alerter is None:
        return None
    if any(("worker", w) not in beats for w in workers) or dispatcher.details["read_lag_s"] is None:
        return None
    feed = ingestor.details["feeds"]["galio"]
    if feed["state"] != "up" or feed["last_frame_at"] is None:
        return None
    return beats


def test_each_process_beats_and_a_killed_worker_expires_while_a_stopped_one_goes_at_once(
    pipeline: Pipeline,
) -> None:
    pipeline.start_core(workers=2)
    pipeline.start_simulator("--scenario", "steady", "--hz", "10")
    names = [w.name for w in pipeline.workers]
    beats = pipeline.wait(lambda: every_role_told(pipeline, names), 30, "a heartbeat from every process")

    host = socket.gethostname()
    ingestor = beats[("ingestor", f"galio-{host}")]
    assert ingestor.last_step_at - ingestor.details["feeds"]["galio"]["last_frame_at"] < 2.0
    alerter = beats[("alerter", f"alert-{host}")].details
    assert alerter["receivers"] == ["jsonl"] and set(alerter["backlog"]) == {"jsonl"}
    assert -1.0 < beats[("dispatcher", f"dispatch-{host}")].details["read_lag_s"] < 10.0
    for child in pipeline.workers:
        worker = beats[("worker", child.name)]
        assert set(worker.details) == {"current_job"} and worker.pid == child.proc.pid
    assert {b.role for b in beats.values()} == {"ingestor", "dispatcher", "worker", "alerter"}

    killed, stopped = pipeline.workers
    pipeline.expect_exit([killed])
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(timeout=10)
    assert pipeline.r.exists(KEYS.heartbeat("worker", killed.name))  # no one deletes it: it expires
    wait_until(
        lambda: not pipeline.r.exists(KEYS.heartbeat("worker", killed.name)),
        timeout=HEARTBEAT_TTL + 3,
        what="the killed worker's heartbeat to expire",
    )

    assert pipeline.stop([stopped]) == [(stopped.name, 0)]
    wait_until(
        lambda: not pipeline.r.exists(KEYS.heartbeat("worker", stopped.name)),
        timeout=3,
        what="the stopped worker's heartbeat to go",
    )
    rest = [c for c in (pipeline.ingestor, pipeline.dispatcher, pipeline.alerter) if c is not None]
    assert [code for _, code in pipeline.stop(rest)] == [0, 0, 0]
    wait_until(lambda: not read_heartbeats(pipeline.r, KEYS), timeout=3, what="every heartbeat to go")
