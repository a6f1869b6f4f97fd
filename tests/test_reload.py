"""Hot reload: a new file is picked up on SIGHUP or change; a bad one is refused with an alert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis as redis_lib

from engine.plan import load_plan
from engine.reload import PlanSource, ReloadRecord
from shared.keys import Keys
from shared.models import Alert
from tests.helpers import wait_until

GOOD = """
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*"]
"""
BETTER = (
    GOOD
    + """  delta:
    check: delta
    accounts: ["BINANCE-*"]
"""
)
BAD = "checks:\n  low: {check: low_balance, cooldown: -5}\n  x: {check: nope}\n"


def alerts(r: redis_lib.Redis) -> list[Alert]:
    return [Alert.model_validate_json(f["alert"]) for _, f in r.xrange(Keys().alerts)]


def test_reload_swaps_plan_and_refuses_bad_file(tmp_path: Path, r: redis_lib.Redis) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    now = [0.0]
    source = PlanSource(path, load_plan(path), clock=lambda: now[0])
    assert not source.due()
    path.write_text(BETTER)
    os.utime(path, (1, 1))
    assert not source.due()  # polled at most every POLL_SECONDS
    now[0] += 5
    assert source.refresh(r, Keys())
    assert "delta" in source.plan.bound
    path.write_text(BAD)
    os.utime(path, (2, 2))
    now[0] += 5
    assert not source.refresh(r, Keys())
    assert "delta" in source.plan.bound  # the last good plan keeps running
    refused = [a for a in alerts(r) if a.check == "config_error"]
    assert len(refused) == 1
    assert "checks.low.cooldown" in refused[0].text and "checks.x.check" in refused[0].text


def last_reload(r: redis_lib.Redis) -> ReloadRecord:
    raw = r.get(Keys().reload)
    assert raw is not None
    return ReloadRecord.model_validate_json(raw)


def test_every_reload_is_recorded_with_its_result(tmp_path: Path, r: redis_lib.Redis) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    source = PlanSource(path, load_plan(path))
    path.write_text(BETTER)
    assert source.reload(r, Keys())
    taken = last_reload(r)
    assert (taken.ok, taken.file, taken.instances, taken.error) == (
        True,
        str(path),
        len(source.plan.bound),
        "",
    )
    assert taken.by.endswith(f":{os.getpid()}")
    path.write_text(BAD)
    assert not source.reload(r, Keys())
    refused = last_reload(r)
    assert (refused.ok, refused.instances) == (False, None) and refused.at >= taken.at
    assert "checks.low.cooldown" in refused.error and refused.file == str(path)


def test_two_processes_refusing_the_same_file_raise_one_alert_id(tmp_path: Path, r: redis_lib.Redis) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    a, b = PlanSource(path, load_plan(path)), PlanSource(path, load_plan(path))
    path.write_text(BAD)
    a.reload(r, Keys())
    b.reload(r, Keys())
    assert len({x.id for x in alerts(r)}) == 1


def test_sighup_reloads_a_running_dispatcher(tmp_path: Path, redis_url: str, r: redis_lib.Redis) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    env = {
        **os.environ,
        "MONITORX_REDIS_URL": redis_url,
        "MONITORX_CONFIG": str(path),
        "MONITORX_LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: r.exists(Keys().snapshots), what="the dispatcher to create its group")
        path.write_text(BAD)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(a.check == "config_error" for a in alerts(r)), what="the refusal alert")
        assert proc.poll() is None  # still running on the last good configuration
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "reload refused" in err
