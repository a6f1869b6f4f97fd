"""Faults of the Galio feed: gone, refusing our credentials, silent, malformed, bursting.

Every run counts lost and duplicated alerts on the JSONL sink and the Slack stand-in (see
tests.faults.harness.tally). A feed that is down raises one ``feed_down`` alert for the feed
(account ``galio``) naming the reason, and one ``resolved`` when frames flow again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared import keys as K
from simulator.frames import Scenario, binance_account, frame_at
from tests.faults.harness import (
    BroadcastFeed,
    Expect,
    Pipelines,
    assert_clean,
    low_balance_config,
    secret_leaks,
    stop_cleanly,
    tally,
)
from tests.pipeline import KEYS, Pipeline
from tests.slack_standin import SlackStandin

LOW = binance_account(1)
FEED = "galio"
DOWN_AFTER = 2.0
"""MONITORX_FEED_DOWN_AFTER of these runs, in seconds."""
FEED_ENV: Mapping[str, str] = {"MONITORX_FEED_DOWN_AFTER": str(DOWN_AFTER)}
STEADY = ("--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx")
LOW_NOW = (*STEADY, "--low-at", "0")
FEED_DOWN = Expect("feed_down", FEED)
FEED_UP = Expect("feed_down", FEED, "resolved")
LOW_FIRING = Expect("low_balance", LOW)


def of(alerts: list[dict[str, Any]], check: str, state: str | None = None) -> list[dict[str, Any]]:
    return [a for a in alerts if a["check"] == check and (state is None or a["state"] == state)]


def frames(pipeline: Pipeline) -> int:
    return int(pipeline.r.hget(KEYS.counters, K.COUNTER_FRAMES) or 0)


def delivered(pipeline: Pipeline, slack: SlackStandin) -> bool:
    """The stream drained and every JSONL alert also posted to Slack."""
    return pipeline.drained() and len(slack.ok) >= len(pipeline.alerts())


def ingestor_log(pipeline: Pipeline) -> str:
    assert pipeline.ingestor is not None
    return pipeline.procs.stderr(pipeline.ingestor)


def test_feed_gone_mid_stream_says_connection_refused_and_breaches_after_its_return_alert(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    pipeline = pipelines(low_balance_config(tmp_path / "c.yaml"), slack=slack, env=FEED_ENV)
    simulator = pipeline.start_simulator(*STEADY)  # first: a feed absent at start is a fault too
    pipeline.start_core(workers=1)
    pipeline.wait(lambda: frames(pipeline) > 5, 20, "frames flowing")

    assert pipeline.stop([simulator]) == [("simulator", 0)]
    gone = time.time()
    [down] = pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "firing"), 15, "the feed_down alert")
    assert "connection refused" in down["text"], down
    assert down["delivered_at"] - gone < DOWN_AFTER + 5, "feed_down came late"

    pipeline.start_simulator(*LOW_NOW)  # back on the same port, account 1 now low
    back = time.time()
    pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 20, "the breach after the reconnection")
    pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "resolved"), 10, "feed_down resolved")
    pipeline.wait(lambda: delivered(pipeline, slack), 15, "every alert on Slack")
    stop_cleanly(pipeline)

    assert_clean(tally([FEED_DOWN, FEED_UP, LOW_FIRING], pipeline, slack))
    [low] = of(pipeline.alerts(), "low_balance")
    assert low["observed_at"] > back
    assert of(pipeline.alerts(), "feed_down", "resolved")[0]["observed_at"] > back


def test_auth_rejected_says_bad_credentials_without_a_tight_reconnect_loop(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    pipeline = pipelines(low_balance_config(tmp_path / "c.yaml"), slack=slack, env=FEED_ENV)
    wrong = f"not-{pipeline.password}"
    refusing = pipeline.start_simulator(*STEADY, "--password", wrong)
    started = time.monotonic()
    pipeline.start_core(workers=1)
    [down] = pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "firing"), 20, "the feed_down alert")
    assert "bad credentials" in down["text"], down
    attempts = ingestor_log(pipeline).count("sent credentials")
    elapsed = time.monotonic() - started
    assert 1 <= attempts <= 4 * elapsed + 4, f"{attempts} connections in {elapsed:.1f}s: a tight loop"
    assert frames(pipeline) == 0

    assert pipeline.stop([refusing]) == [("simulator", 0)]
    pipeline.start_simulator(*LOW_NOW)  # the right credentials again
    pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 20, "the breach once accepted")
    pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "resolved"), 10, "feed_down resolved")
    pipeline.wait(lambda: delivered(pipeline, slack), 15, "every alert on Slack")
    stop_cleanly(pipeline)

    assert_clean(tally([FEED_DOWN, FEED_UP, LOW_FIRING], pipeline, slack))
    assert secret_leaks(pipeline, wrong) == []


def test_feed_connected_but_silent_says_so_and_the_breach_after_the_silence_alerts(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    # the watchdog's reconnect (MONITORX_SILENCE_TIMEOUT) is left far out: connected and silent
    env = {**FEED_ENV, "MONITORX_SILENCE_TIMEOUT": "60"}
    pipeline = pipelines(low_balance_config(tmp_path / "c.yaml"), slack=slack, env=env)
    # scenario time runs from the simulator's start: frames, nothing from 3 s to 8 s, low from 8.5 s
    pipeline.start_simulator(*STEADY, "--pause-at", "3", "--pause-for", "5", "--low-at", "8.5")
    pipeline.start_core(workers=1)
    [down] = pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "firing"), 20, "the feed_down alert")
    assert "connected but silent" in down["text"], down
    pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 20, "the breach after the silence")
    pipeline.wait(lambda: of(pipeline.alerts(), "feed_down", "resolved"), 10, "feed_down resolved")
    pipeline.wait(lambda: delivered(pipeline, slack), 15, "every alert on Slack")
    stop_cleanly(pipeline)

    assert_clean(tally([FEED_DOWN, FEED_UP, LOW_FIRING], pipeline, slack))
    assert ingestor_log(pipeline).count("connected to") == 1, "the silent session was not kept"
    [up] = of(pipeline.alerts(), "feed_down", "resolved")
    assert down["observed_at"] < up["observed_at"] < of(pipeline.alerts(), "low_balance")[0]["observed_at"]


# -- malformed frames ---------------------------------------------------------------------------------


BULK = 50_000
"""Accounts in one frame."""
HUGE = 20 * 2**20
"""Bytes of the oversized frame (over MONITORX_MAX_FRAME_BYTES, 16 MiB by default)."""


def scenario_frame(t: float, low: bool = False) -> str:
    frame = frame_at(Scenario(accounts=2, okx=False, low_at=0.0 if low else None), t)
    assert frame is not None
    return json.dumps(frame)


JUNK = binance_account(2)
STATES = ("firing", "resolved")


def junk_values_frame() -> str:
    """Account 2 with every kind of bad figure: text, null, boolean, object, list, overflow, NaN."""
    junk = {
        "USDTwalletBalance": "abc",
        "USDCwalletBalance": None,
        "BNBwalletBalance": True,
        "maintotalWalletBalance": {"x": 1},
        "BTCUSDT": [1, 2],
        "ETHUSDT": "1e999",
        "BTCUSDC": "NaN",
    }
    return json.dumps({"pos": {JUNK: junk}})


def bulk_frame() -> str:
    return json.dumps({"pos": {f"BULK-{n:05d}": {"USDTwalletBalance": 50000.0} for n in range(BULK)}})


def bulk_seen(pipeline: Pipeline) -> int:
    return sum(1 for _ in pipeline.r.zscan_iter(KEYS.seen, match="BULK-*", count=5000))


def test_malformed_frames_are_set_aside_and_a_real_breach_in_the_same_run_alerts_once(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    with BroadcastFeed() as feed:
        config = low_balance_config(tmp_path / "c.yaml")
        pipeline = pipelines(config, slack=slack, galio_uri=feed.uri, auth=False)
        pipeline.start_core(workers=1)
        pipeline.wait(lambda: feed.clients == 1, 20, "the ingestor to connect")
        bad = ["not json", json.dumps([1, 2]), json.dumps({"pos": 5}), json.dumps({"pos": {LOW: 7}})]
        for text in [scenario_frame(0.0), *bad, junk_values_frame()]:
            assert feed.send(text) == 1
        pipeline.wait(lambda: frames(pipeline) == 6, 20, "six frames counted")
        # a check cannot judge junk: it says so for that pair, and the other accounts go on
        [junk] = pipeline.wait(lambda: of(pipeline.alerts(), "check_error"), 20, "the junk's check_error")

        # too big: websockets ends the session (close 1009); the ingestor reconnects and goes on
        assert feed.send(json.dumps({"pos": {LOW: {"USDTwalletBalance": 1.0}}, "pad": "x" * HUGE})) == 1
        pipeline.wait(lambda: "1009" in ingestor_log(pipeline), 20, "the session to end on the huge frame")
        # the closed session may still be counted a moment: a send to it reaches nobody
        bulk = bulk_frame()
        pipeline.wait(lambda: feed.send(bulk) == 1, 20, "the ingestor to reconnect and take a frame")
        low = scenario_frame(0.5, low=True)
        assert feed.send(low) == 1 and feed.send(low) == 1  # the same frame twice
        pipeline.wait(lambda: bulk_seen(pipeline) == BULK, 60, f"{BULK} accounts in {KEYS.seen}")
        pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 30, "the real breach")
        pipeline.wait(lambda: of(pipeline.alerts(), "check_error", "resolved"), 20, "good figures again")
        pipeline.wait(lambda: delivered(pipeline, slack), 20, "every alert on Slack")
        stop_cleanly(pipeline)

    junk_error, junk_over = (Expect("check_error", JUNK, state, instance="low-balance") for state in STATES)
    assert_clean(tally([LOW_FIRING, junk_error, junk_over], pipeline, slack))
    assert "'USDTwalletBalance' is invalid (not a number: 'abc')" in junk["text"], junk
    quarantined: Any = pipeline.r.xrange(KEYS.quarantine)
    reasons = [fields["reason"] for _, fields in quarantined]
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith("not JSON") and "list" in reasons[1] and "int" in reasons[2]
    assert LOW in reasons[3]
    counters = pipeline.r.hgetall(KEYS.counters)
    assert int(counters[K.COUNTER_MALFORMED]) == 4
    assert int(counters[K.COUNTER_INVALID_VALUES]) >= 6, counters
    assert int(counters[K.COUNTER_FRAMES]) == 9  # the oversized one never reached us whole
    assert int(counters[K.COUNTER_SNAPSHOTS]) >= BULK + 4, counters


# -- load ---------------------------------------------------------------------------------------------


STORM = 12
"""Accounts breaching at once."""


def test_alert_storm_during_a_tenfold_burst_delivers_each_alert_once(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    # BNB threshold 100: every Binance account is low on BNB from its first frame
    config = low_balance_config(tmp_path / "c.yaml", thresholds={"USDT": 10000, "USDC": 10000, "BNB": 100})
    pipeline = pipelines(config, slack=slack)
    pipeline.start_core(workers=2)
    started = time.monotonic()
    # 20 Hz: ten times the simulator's default rate
    pipeline.start_simulator("--scenario", "steady", "--hz", "20", "--accounts", str(STORM), "--no-okx")
    accounts = [binance_account(n) for n in range(1, STORM + 1)]
    pipeline.wait(lambda: len(pipeline.alerts()) >= STORM, 30, f"{STORM} alerts")
    within = time.monotonic() - started
    pipeline.wait(lambda: frames(pipeline) >= 20 * 3, 20, "three seconds of the burst")
    pipeline.wait(lambda: delivered(pipeline, slack), 20, "every alert on Slack")
    stop_cleanly(pipeline)

    assert_clean(tally([Expect("low_balance", account) for account in accounts], pipeline, slack))
    assert within < 20, f"the storm took {within:.1f}s to come out"
    assert all("BNB wallet balance" in a["text"] for a in pipeline.alerts())
