"""Faults inside and between the processes: SIGTERM under load, checks that raise or hang, and a
forged job in the queue. Redis, dispatcher, worker and supervisor kills have their own modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis as redis_lib
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from monitorx.procs import Child
from shared import keys as K
from shared.keys import QUEUE_NAME
from simulator.frames import binance_account
from tests.faults.harness import Expect, Pipelines, assert_clean, low_balance_config, stop_cleanly, tally
from tests.pipeline import KEYS, Pipeline, write_config
from tests.slack_standin import SlackStandin

LOW = binance_account(1)
REPO = Path(__file__).resolve().parents[2]
SLOW = ("--scenario", "steady", "--hz", "2", "--accounts", "2", "--no-okx", "--low-at", "0")
LOAD = ("--scenario", "steady", "--hz", "10", "--accounts", "3", "--no-okx", "--low-at", "0")


def more_alerts(pipeline: Pipeline, n: int = 5) -> Callable[[], bool]:
    """True once ``n`` more alerts than now reached the JSONL sink."""
    now = len(pipeline.alerts())
    return lambda: len(pipeline.alerts()) >= now + n


def test_sigterm_to_each_process_under_load_exits_0_and_loses_nothing(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    # cooldown 0: account 1 alerts on every evaluation, a steady stream of distinct alerts
    pipeline = pipelines(low_balance_config(tmp_path / "c.yaml", cooldown=0), slack=slack)
    pipeline.start_simulator(*LOAD)
    pipeline.start_core(workers=2)
    pipeline.wait(more_alerts(pipeline, 10), 20, "alerts flowing")
    alerter, dispatcher, ingestor = pipeline.alerter, pipeline.dispatcher, pipeline.ingestor
    assert alerter is not None and dispatcher is not None and ingestor is not None
    worker = pipeline.workers[0]
    restarts: list[tuple[Child, Callable[[], Child]]] = [
        (alerter, pipeline.start_alerter),
        (worker, lambda: pipeline.start_worker(worker.name)),
        (dispatcher, pipeline.start_dispatcher),
        (ingestor, pipeline.start_ingestor),
    ]
    for child, start in restarts:
        assert pipeline.stop([child]) == [(child.name, 0)], f"{child.name} on SIGTERM under load"
        flowing = more_alerts(pipeline)
        start()
        pipeline.wait(flowing, 20, f"alerts flowing again after {child.name} restarted")
    stop_cleanly(pipeline)

    # every alert emitted reached both sinks, each exactly once
    assert_clean(tally([Expect("low_balance", LOW, window=0)], pipeline, slack))
    assert pipeline.r.xlen(KEYS.dead) == 0


# -- bad checks and a forged job ----------------------------------------------------------------------


def fault_plugin(site: Path) -> Path:
    """A distribution on ``site`` whose ``monitorx.checks`` entry points are the hanging and the
    raising checks of tests/test_isolation.py (its modules come from the checkout)."""
    info = site / "monitorx_fault_checks-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: monitorx-fault-checks\nVersion: 0.1\n")
    points = "[monitorx.checks]\nhang = tests.test_isolation:HANG\nboom = tests.test_isolation:BOOM\n"
    (info / "entry_points.txt").write_text(points)
    return site


def forge(redis_url: str, marker: Path) -> Job:
    """What an intruder with access to Redis would enqueue: a job naming ``os.system``."""
    client = redis_lib.Redis.from_url(redis_url)
    queue = Queue(QUEUE_NAME, connection=client, serializer=JSONSerializer)
    return queue.enqueue("os.system", f"touch {marker}")


def test_a_raising_and_a_hanging_check_and_a_forged_job_stop_nothing_else(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    low = {"check": "low_balance", "accounts": ["BINANCE-*"]}
    checks = {"hang": {"check": "hang", "accounts": [LOW]}, "boom": {"check": "boom", "accounts": [LOW]}}
    config = write_config(tmp_path / "c.yaml", {**checks, "low-balance": low})
    site = fault_plugin(tmp_path / "site")
    env = {"PYTHONPATH": f"{site}:{REPO}", "MONITORX_JOB_TIMEOUT": "2"}
    pipeline = pipelines(config, slack=slack, env=env)
    pipeline.start_simulator(*SLOW)
    pipeline.start_core(workers=2)
    marker = tmp_path / "forged-job-ran"
    forged = forge(pipeline.redis_url, marker)

    def errors() -> dict[str, str]:
        return {a["instance"]: a["text"] for a in pipeline.alerts() if a["check"] == "check_error"}

    pipeline.wait(lambda: {"hang", "boom"} <= errors().keys(), 20, "a check_error of each bad check")
    [breach] = pipeline.wait(
        lambda: [a for a in pipeline.alerts() if a["check"] == "low_balance"], 20, "the breach"
    )
    pipeline.wait(lambda: forged.get_status(refresh=True) == JobStatus.FAILED, 20, "the forged job to fail")
    pipeline.wait(lambda: pipeline.drained() and len(slack.ok) >= len(pipeline.alerts()), 15, "Slack")
    stop_cleanly(pipeline)

    bad = [Expect("check_error", LOW, instance=name) for name in ("hang", "boom")]
    assert_clean(tally([Expect("low_balance", LOW), *bad], pipeline, slack))
    assert "JobTimeoutException" in errors()["hang"], errors()
    assert "ZeroDivisionError: division by zero in a check" in errors()["boom"], errors()
    # a hanging check holds a worker for the job timeout at most, never the other checks for long
    assert breach["delivered_at"] - breach["observed_at"] < 8, breach
    assert not marker.exists(), "the forged job ran os.system"
    assert int(pipeline.r.hget(KEYS.counters, K.COUNTER_REJECTED_JOBS) or 0) == 1
    result = forged.latest_result()
    assert result is not None and "not an allowed MonitorX job function" in str(result.exc_string)
