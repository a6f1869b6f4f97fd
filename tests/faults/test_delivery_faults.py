"""Faults between the alerter and its receivers: killed after Slack took a post, rate limited,
Slack down for longer than the old five attempts lasted, a webhook that does not exist.

The webhook window: an incoming webhook has no idempotency key, so an alerter killed between
Slack accepting a post and the delivery marker posts that alert once more after its restart. That
is the one duplicate these tests allow, and only there."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared import keys as K
from simulator.frames import binance_account
from tests.faults.harness import Expect, Pipelines, assert_clean, low_balance_config, stop_cleanly, tally
from tests.pipeline import KEYS, Pipeline, write_config
from tests.slack_standin import Reply, SlackStandin

LOW = binance_account(1)
DRIFT = binance_account(2)
LOW_NOW = ("--scenario", "steady", "--hz", "5", "--accounts", "2", "--no-okx", "--low-at", "0")
RETRY_AFTER = 10
SHORT_RETRIES: Mapping[str, str] = {"MONITORX_RETRY_IDLE_MS": "200", "MONITORX_RETRY_MAX_MS": "1000"}
"""Retry backoff from 0.2 s, capped at 1 s."""


def delivered(pipeline: Pipeline, slack: SlackStandin, alerts: int) -> bool:
    return len(pipeline.alerts()) >= alerts and pipeline.drained() and len(slack.ok) >= alerts


def dead_letters(pipeline: Pipeline) -> list[dict[str, Any]]:
    entries: Any = pipeline.r.xrange(KEYS.dead)
    return [dict(fields) for _, fields in entries]


def test_alerter_killed_after_slack_accepted_a_post_repeats_it_at_most_once(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    slack.script(Reply(200, delay=3.0))  # Slack holds the first post, then accepts it
    pipeline = pipelines(low_balance_config(tmp_path / "c.yaml"), slack=slack)
    pipeline.start_simulator(*LOW_NOW)
    pipeline.start_core(workers=1)
    pipeline.wait(lambda: slack.in_flight == 1, 20, "the post in Slack's hands")
    # the JSONL sink's own send and record done first (under load they may lag behind the post):
    # the kill is then between Slack accepting and the alerter recording, on Slack alone
    [on_jsonl] = pipeline.wait(lambda: pipeline.alerts(), 20, "the alert on the JSONL sink")
    marker = KEYS.sent("jsonl", on_jsonl["id"])
    pipeline.wait(lambda: pipeline.r.exists(marker), 20, "the JSONL send recorded")
    alerter = pipeline.alerter
    assert alerter is not None
    pipeline.expect_exit([alerter])
    alerter.proc.kill()
    assert alerter.proc.wait(timeout=10) == -9
    pipeline.wait(lambda: len(slack.ok) == 1, 10, "Slack to accept the post of the dead alerter")
    pipeline.start_alerter()
    pipeline.wait(lambda: delivered(pipeline, slack, 1), 20, "the alert delivered after the restart")
    stop_cleanly(pipeline)

    ledger = tally([Expect("low_balance", LOW)], pipeline, slack)
    assert_clean(ledger, max_duplicates=1)
    assert all(line.startswith("slack:") for line in ledger.duplicates), ledger
    assert pipeline.r.xlen(KEYS.dead) == 0


def test_slack_429_retry_after_10_is_honoured_while_the_jsonl_sink_goes_on(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": str(RETRY_AFTER)}))
    low = {"check": "low_balance", "accounts": ["BINANCE-*"]}
    delta = {"check": "delta", "accounts": [DRIFT], "delay": 0}
    config = write_config(tmp_path / "c.yaml", {"low-balance": low, "delta": delta})
    pipeline = pipelines(config, slack=slack)
    # account 1 low from the start; account 2's BTC legs drift from 3 s: a second alert mid-wait
    pipeline.start_simulator(*LOW_NOW, "--delta-at", "3", "--delta-account", "2")
    pipeline.start_core(workers=1)
    [limited] = pipeline.wait(lambda: slack.received, 20, "the first post")
    pipeline.wait(lambda: len(pipeline.alerts()) >= 2, 15, "both alerts on the JSONL sink")
    pipeline.wait(lambda: delivered(pipeline, slack, 2), RETRY_AFTER + 15, "both alerts on Slack")
    stop_cleanly(pipeline)

    assert_clean(tally([Expect("low_balance", LOW), Expect("delta", DRIFT)], pipeline, slack))
    assert limited.status == 429
    after = [post.at - limited.at for post in slack.received[1:]]
    assert min(after) >= RETRY_AFTER - 0.05, f"posted {min(after):.2f}s after a Retry-After of {RETRY_AFTER}"
    assert [post.status for post in slack.received[1:]] == [200, 200], "a post was refused after the wait"
    jsonl = {a["check"]: a["delivered_at"] for a in pipeline.alerts()}
    assert jsonl["delta"] < limited.at + RETRY_AFTER, "the JSONL sink waited for Slack's rate limit"
    assert dead_letters(pipeline) == []


def test_slack_down_past_the_old_attempts_delivers_once_after_and_a_404_webhook_dead_letters_at_once(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    slack.default = Reply(500, "internal_error")
    with SlackStandin() as webhook:
        webhook.default = Reply(404, "no such hook")
        hook_url = webhook.url("/hooks/fault-suite-webhook-token")
        env = {"MONITORX_WEBHOOK_URL": hook_url, **SHORT_RETRIES}
        pipeline = pipelines(low_balance_config(tmp_path / "c.yaml"), slack=slack, env=env)
        pipeline.start_simulator(*LOW_NOW)
        pipeline.start_core(workers=1)
        [alert] = pipeline.wait(lambda: pipeline.alerts(), 20, "the alert on the JSONL sink")
        [dead] = pipeline.wait(lambda: dead_letters(pipeline), 10, "the webhook's dead letter")
        failing_since = slack.received[0].at

        def past_old_attempts() -> bool:
            attempts = int(pipeline.r.hget(KEYS.attempts(alert["id"]), "slack") or 0)
            given_up = [d for d in dead_letters(pipeline) if d["sink"] == "slack"]
            assert given_up == [], f"Slack's alert was dead-lettered during the outage: {given_up}"
            return attempts > 5 and time.time() >= failing_since + 10

        pipeline.wait(past_old_attempts, 40, "Slack failing for 10 s and more than 5 attempts")
        slack.default = Reply()
        pipeline.wait(lambda: delivered(pipeline, slack, 1), 15, "the alert on Slack once it is back")
        stop_cleanly(pipeline)

    assert_clean(tally([Expect("low_balance", LOW)], pipeline, slack))
    assert dead["sink"] == "webhook" and "404" in dead["error"], dead
    assert float(dead["failed_at"]) - alert["emitted_at"] < 3, "the 404 was not dead-lettered at once"
    assert [post.status for post in webhook.received] == [404], "a permanent failure was retried"
    assert int(pipeline.r.hget(KEYS.counters, K.COUNTER_DEAD) or 0) == 1
    assert hook_url not in "".join(str(d) for d in dead_letters(pipeline))
