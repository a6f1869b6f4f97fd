"""A failing or hanging check never stops other checks: each becomes a check_error for its pair."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import redis as redis_lib

from engine.checks.base import CheckSpec, Finding, Message, Params
from engine.plan import build
from engine.registry import Registry
from ingestor.normalize import normalize_account
from shared.config import parse
from shared.keys import Keys
from shared.models import Alert, Snapshot
from tests.helpers import in_process

ACC = "BINANCE-AAZ01-UM"


class NoParams(Params):
    pass


def _hang(snap: Snapshot | None, params: NoParams, now: float) -> list[Finding]:
    threading.Event().wait(60)  # far beyond the job timeout: the worker must stop it
    return []


def _boom(snap: Snapshot | None, params: NoParams, now: float) -> list[Finding]:
    raise ZeroDivisionError("division by zero in a check")


def _render(account: str, snap: Snapshot | None, params: NoParams, fired: Sequence[Finding]) -> Message:
    return Message(title="never", text="never")


HANG = CheckSpec(name="hang", params=NoParams, evaluate=_hang, render=_render, summary="hangs")
BOOM = CheckSpec(name="boom", params=NoParams, evaluate=_boom, render=_render, summary="raises")
CONFIG = """
checks:
  hang: {check: hang, accounts: ["*"]}
  boom: {check: boom, accounts: ["*"]}
  low: {check: low_balance, accounts: ["*"]}
"""


def test_hanging_and_raising_checks_do_not_stop_the_others(redis_url: str, r: redis_lib.Redis) -> None:
    registry = Registry([*Registry.discover(plugins=False).specs.values(), HANG, BOOM])
    plan = build(parse(CONFIG, "t.yaml"), registry)
    keys = Keys()
    d, worker, pub = in_process(redis_url, plan, job_timeout=1)
    pub.publish([normalize_account(ACC, {"USDTwalletBalance": 50}, 10.0)])
    d.step()
    worker.work(burst=True)
    got = [Alert.model_validate_json(f["alert"]) for _, f in r.xrange(keys.alerts)]
    errors = {a.instance: a.text for a in got if a.check == "check_error"}
    assert "JobTimeoutException" in errors["hang"]
    assert "ZeroDivisionError: division by zero in a check" in errors["boom"]
    assert [a.account for a in got if a.check == "low_balance"] == [ACC]
    assert int(r.hget(keys.counters, "check_errors") or 0) == 2


def test_a_check_error_repeats_only_after_its_cooldown(redis_url: str, r: redis_lib.Redis) -> None:
    registry = Registry([*Registry.discover(plugins=False).specs.values(), BOOM])
    plan = build(parse("checks:\n  boom: {check: boom, accounts: ['*']}\n", "t.yaml"), registry)
    keys = Keys()
    d, worker, pub = in_process(redis_url, plan)
    for t in (10.0, 20.0, 400.0):
        pub.publish([normalize_account(ACC, {"USDTwalletBalance": 50}, t)])
        d.step()
        worker.work(burst=True)
    errors = [
        a.observed_at
        for _, f in r.xrange(keys.alerts)
        if (a := Alert.model_validate_json(f["alert"])).check == "check_error"
    ]
    assert errors == [10.0, 400.0]  # 300 s minimum between repeats of one pair's check_error
