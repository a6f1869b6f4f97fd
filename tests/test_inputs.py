"""The engine's gate (``engine.inputs``): skipping the evaluations whose traced inputs did not
change while a pair is at rest never changes an alert or a state. Checked on long random runs of
account objects where figures change a few at a time (and often not at all), with delays and
cooldowns crossed, for every builtin per-account check; and through the dispatcher on Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
import yaml

from engine.inputs import Gate, still_valid
from engine.plan import Bound, build
from engine.registry import Registry
from engine.store import MemoryStore, evaluate_pair
from ingestor.normalize import normalize_account
from shared.config import parse
from shared.keys import COUNTER_UNCHANGED, Keys
from tests.helpers import alerts_of, in_process
from tests.test_dispatch_and_run import plan_of, snap

ACC = "BINANCE-AAZ01-UM"
HEALTHY: dict[str, Any] = {
    "USDTwalletBalance": 20000, "USDCwalletBalance": "20000", "BNBwalletBalance": 10.0,
    "BTCUSDT": 0.5, "BTCUSDC": -0.5, "BTCUSDTAvg-Price": 64000, "BTCUSDCAvg-Price": 64010.5,
    "ETH-USDC-SWAP": 3000, "ETH-USDT-SWAP": -30, "ETH-USDT-SWAPAvg-Price": 3100.0,
    "USDTinitialMargin": 100.0, "USDTmaintMargin": 10.0, "maintotalWalletBalance": 40000.0,
    "maintotalInitialMargin": 200.0, "maintotalMaintMargin": 20.0, "SOLUSDT": 3,
}  # fmt: skip
"""A healthy account: every check at rest on it."""
VALUES: tuple[Any, ...] = (
    0.3, 1.0, 2.9, 3.1, 50.0, 99.9, 100.1, -1.0, 0, 10000, 9999.99, 20000.0, 70000.0, 90000.0,
    "12000.5", "0", " 7 ", None, "", "junk", True,
)  # fmt: skip
CHECKS: list[dict[str, Any]] = [
    {"check": "low_balance", "cooldown": 30},
    {"check": "low_balance", "params": {"alert_zero_or_missing": True}, "cooldown": 0},
    {"check": "delta", "params": {"threshold": 50}, "delay": 20, "cooldown": 40, "resolved": True},
    {"check": "delta", "params": {"threshold": 0, "sign_aware": True}, "delay": 0},
    {"check": "okx_hedge", "params": {"threshold": 10}, "delay": 5},
    {"check": "margin_risk", "cooldown": 60},
]


def bound_of(check: dict[str, Any]) -> Bound:
    config = {"checks": {"c": {"accounts": ["*"], **check}}}
    return build(parse(yaml.safe_dump(config), "t.yaml"), Registry.discover(plugins=False)).bound["c"]


def run_of(rng: random.Random, steps: int) -> Iterator[tuple[float, dict[str, Any]]]:
    """(time, account object) from a healthy account: now and then a figure takes a random value
    (a breach, junk, a key gone) or goes back to health; the position SOLUSDT, which no check
    reads, moves on every frame; time moves by 0.2 s to 70 s."""
    obj = dict(HEALTHY)
    t = 1_700_000_000.0
    for _ in range(steps):
        roll, key = rng.random(), rng.choice(list(HEALTHY))
        if roll < 0.15:
            obj[key] = rng.choice(VALUES)
        elif roll < 0.2:
            obj.pop(key, None)
        elif roll < 0.5:
            obj[key] = HEALTHY[key]
        obj["SOLUSDT"] = rng.random()
        t += rng.choice((0.2, 1.0, 5.0, 25.0, 70.0))
        yield t, dict(obj)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: f"{c['check']}-{sorted(c.get('params', {}))}")
def test_skipping_unchanged_inputs_never_changes_an_alert_or_a_state(check: dict[str, Any]) -> None:
    bound = bound_of(check)
    every, gated = MemoryStore(), MemoryStore()
    skipped = 0
    for t, obj in run_of(random.Random(str(check)), 3000):
        s = normalize_account(ACC, obj, observed_at=t)
        evaluate_pair(every, bound, ACC, s, t, lambda at=t: at, on_snapshot=True)
        gate = gated.read(bound.name, ACC).gate
        if gate is not None and still_valid(Gate.from_json(gate), bound, s.raw):
            skipped += 1
            continue
        evaluate_pair(gated, bound, ACC, s, t, lambda at=t: at, on_snapshot=True)
    assert [a.model_dump() for a in gated.alerts] == [a.model_dump() for a in every.alerts]
    assert gated.read(bound.name, ACC).states == every.read(bound.name, ACC).states
    assert every.alerts, "nothing ever fired: the run proves nothing"
    assert skipped > 300, f"only {skipped} evaluations skipped: the gate is not doing its job"


def test_a_gate_reads_only_what_the_check_read() -> None:
    bound = bound_of({"check": "low_balance"})
    store = MemoryStore()
    base = {"USDTwalletBalance": 20000, "BTCUSDT": 0.5, "BTCUSDTAvg-Price": 64000}
    evaluate_pair(store, bound, ACC, normalize_account(ACC, base, 1.0), 1.0, lambda: 1.0, on_snapshot=True)
    record = store.read(bound.name, ACC)
    assert record.gate is not None
    gate = Gate.from_json(record.gate)
    assert "USDTwalletBalance" in gate.keys and "BTCUSDT" not in gate.keys and not gate.whole
    assert still_valid(gate, bound, {**base, "BTCUSDT": 0.7})  # a position moved: nothing to do
    assert not still_valid(gate, bound, {**base, "USDTwalletBalance": 20001})
    other = bound_of({"check": "low_balance", "params": {"thresholds": {"USDT": 30000}}})
    assert not still_valid(gate, other, base)  # new params: evaluated again


def test_the_dispatcher_queues_no_job_for_a_pair_at_rest_whose_inputs_did_not_change(
    redis_url: str, r: redis_lib.Redis
) -> None:
    keys = Keys()
    d, worker, pub = in_process(redis_url, plan_of(), tick_seconds=3600)
    pub.publish([snap(1000.0, "20000")])
    assert d.step() == 2  # low_balance and stale_data: first evaluations
    worker.work(burst=True)
    moved = normalize_account(
        ACC, {"USDTwalletBalance": "20000", "BNBwalletBalance": "5", "BTCUSDT": 1}, observed_at=1001.0
    )
    pub.publish([moved])  # a position moved, the balances did not
    assert d.step() == 0
    assert r.hget(keys.counters, COUNTER_UNCHANGED) == "2"
    pub.publish([snap(1002.0, "1234.5")])  # the USDT balance changed (and breaches)
    assert d.step() == 1  # low_balance only: stale_data read nothing that changed
    worker.work(burst=True)
    assert [a.account for a in alerts_of(r, "low_balance")] == [ACC]
    pub.publish([snap(1003.0, "1234.5")])  # firing: never gated, whatever the inputs
    assert d.step() == 1
