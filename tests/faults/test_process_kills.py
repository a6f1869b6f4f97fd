"""Processes killed with SIGKILL at the worst moment, against real processes: a dispatcher with
entries pending, and workers killed again and again under load."""

from __future__ import annotations

import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

from shared.keys import DISPATCH_GROUP
from simulator.frames import binance_account
from tests.faults.harness import Expect, Pipelines, assert_clean, tally
from tests.faults.test_redis_faults import config
from tests.pipeline import KEYS, Pipeline
from tests.slack_standin import SlackStandin

LOW, DRIFT = binance_account(1), binance_account(2)


def delivered(pipeline: Pipeline, check: str) -> list[dict[str, Any]]:
    return [a for a in pipeline.alerts() if a["check"] == check]


def test_a_dispatcher_killed_with_entries_pending_is_resumed_at_once_by_its_restart(
    pipelines: Pipelines, tmp_path: Path, slack: SlackStandin
) -> None:
    # The claim idle is far longer than the test: only the restart's own-pending read can help.
    pipeline = pipelines(config(tmp_path), slack=slack, env={"MONITORX_CLAIM_IDLE_MS": "600000"})
    pipeline.start_core(workers=1)
    assert pipeline.dispatcher is not None
    pipeline.expect_exit([pipeline.dispatcher])
    pipeline.dispatcher.proc.send_signal(signal.SIGKILL)
    pipeline.dispatcher.proc.wait(timeout=10)
    simulator = pipeline.start_simulator(
        "--scenario", "steady", "--low-at", "0", "--max-frames", "3", "--hz", "10"
    )
    pipeline.expect_exit([simulator])  # it stops after its three frames
    pipeline.wait(lambda: pipeline.r.xlen(KEYS.snapshots) >= 9, 15, "three frames on the stream")
    # What the killed dispatcher held: every entry read under its (stable) consumer name, none acked.
    consumer = f"dispatch-{socket.gethostname()}"
    pipeline.r.xreadgroup(DISPATCH_GROUP, consumer, {KEYS.snapshots: ">"}, count=1000)
    assert pipeline.r.xpending(KEYS.snapshots, DISPATCH_GROUP)["pending"] >= 9
    restarted = time.time()
    pipeline.start_dispatcher()
    [low] = pipeline.wait(lambda: delivered(pipeline, "low_balance"), 10, "the low balance after the restart")
    assert low["delivered_at"] - restarted < 8.0  # was: after the 600 s claim idle
    pipeline.wait(lambda: pipeline.r.xpending(KEYS.snapshots, DISPATCH_GROUP)["pending"] == 0, 10, "acks")
    pipeline.wait(pipeline.drained, 10, "the alerts delivered")
    assert_clean(tally([Expect("low_balance", LOW)], pipeline, slack))


def test_workers_killed_again_and_again_under_load_lose_nothing(
    pipelines: Pipelines, tmp_path: Path, slack: SlackStandin
) -> None:
    pipeline = pipelines(config(tmp_path), slack=slack)
    pipeline.start_core(workers=2)
    pipeline.start_simulator("--scenario", "steady", "--hz", "10", "--low-at", "4", "--delta-at", "9")
    rng = random.Random(9)
    deadline = time.monotonic() + 12.0
    kills = 0
    while time.monotonic() < deadline:  # before, during or after a check: wherever it falls
        victim = pipeline.workers[-1]
        evaluations = int(pipeline.r.hget(KEYS.counters, "evaluations") or 0) + rng.randint(3, 40)
        pipeline.wait(
            lambda: int(pipeline.r.hget(KEYS.counters, "evaluations") or 0) >= evaluations,  # noqa: B023
            10,
            "the workers at work",
        )
        pipeline.expect_exit([victim])
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        kills += 1
        pipeline.start_worker(f"e2e-worker-again-{kills}")
    assert kills >= 5
    pipeline.wait(lambda: delivered(pipeline, "delta"), 20, "the delta alert")
    pipeline.wait(pipeline.drained, 15, "the alerts delivered")
    ledger = tally([Expect("low_balance", LOW), Expect("delta", DRIFT)], pipeline, slack)
    assert_clean(ledger)
    for error in delivered(pipeline, "check_error"):  # a job killed mid-check, said plainly
        assert "worker running this check died" in error["text"], error
