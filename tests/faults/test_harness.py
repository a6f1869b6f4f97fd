"""The fault suite's own tools, checked against known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis as redis_lib
from slack_sdk.webhook import WebhookClient

from alerter.sinks import alert_record, slack_message
from shared.models import Alert
from tests.faults.harness import Expect, RedisFactory, assert_clean, tally
from tests.pipeline import KEYS, Pipeline
from tests.slack_standin import SlackStandin

LOW = "BINANCE-AAZ01-UM"


def alert(n: int, account: str = LOW, observed_at: float = 100.0) -> Alert:
    return Alert(
        id=f"a{n}",
        check="low_balance",
        instance="low",
        account=account,
        state="firing",
        title=f"Low balance {account}",
        text=f"USDT wallet balance ${n},000.00 is below the threshold $10,000",
        observed_at=observed_at,
        emitted_at=observed_at,
    )


def deliver(pipeline: Pipeline, slack: SlackStandin, *alerts: Alert, jsonl: bool = True) -> None:
    client = WebhookClient(slack.url())
    for a in alerts:
        text, blocks = slack_message(a)
        assert client.send(text=text, blocks=blocks).status_code == 200
        if jsonl:
            with pipeline.jsonl.open("a") as out:
                out.write(json.dumps(alert_record(a, a.observed_at + 1)) + "\n")


def test_tally_counts_lost_duplicates_and_repeats_inside_the_window(
    tmp_path: Path, redis_url: str, slack: SlackStandin
) -> None:
    pipeline = Pipeline(tmp_path, redis_url)
    try:
        deliver(pipeline, slack, alert(1))
        clean = tally([Expect("low_balance", LOW)], pipeline, slack)
        assert_clean(clean)
        assert clean.delivered == {"jsonl": 1, "slack": 1}

        deliver(pipeline, slack, alert(1), jsonl=False)  # the webhook window: posted again
        deliver(pipeline, slack, alert(2, observed_at=150.0))  # a new id 50 s later
        other = ("low_balance", "BINANCE-AAZ02-UM", "firing")
        ledger = tally([Expect("low_balance", LOW, window=300), other], pipeline, slack)
        assert ledger.lost == [f"{sink}: low_balance BINANCE-AAZ02-UM firing" for sink in ("jsonl", "slack")]
        assert len(ledger.duplicates) == 3, ledger  # Slack: a1 twice; a2 inside 300 s, on both sinks
        assert "slack: low_balance BINANCE-AAZ01-UM firing (alert a1) delivered 2 times" in ledger.duplicates
        assert "LOST slack: low_balance BINANCE-AAZ02-UM firing" in str(ledger)
        with pytest.raises(AssertionError, match="lost"):
            assert_clean(ledger, max_duplicates=3)
        assert_clean(tally([Expect("low_balance", LOW, window=30)], pipeline, slack), max_duplicates=1)

        pipeline.r.xadd(KEYS.alerts, {"alert": alert(3, observed_at=500.0).model_dump_json()})
        stranded = tally([Expect("low_balance", LOW, window=30)], pipeline, slack)
        assert [line for line in stranded.lost if "a3" in line] == [
            f"{sink}: low_balance {LOW} firing (alert a3) on {KEYS.alerts} never delivered"
            for sink in ("jsonl", "slack")
        ]
    finally:
        pipeline.close()


def test_fault_redis_dies_comes_back_with_or_without_its_data_and_hangs(make_redis: RedisFactory) -> None:
    server = make_redis(appendonly=True)
    client = redis_lib.Redis.from_url(server.url, socket_timeout=0.5)
    try:
        client.set("k", "v")
        server.kill()
        with pytest.raises(redis_lib.ConnectionError):
            client.get("k")
        server.restart()
        assert client.get("k") == b"v"  # fsynced to the append-only file before the reply
        server.restart(empty=True)
        assert client.get("k") is None
        server.hang()
        with pytest.raises(redis_lib.TimeoutError):
            client.get("k")
        server.resume()
        client.close()
        assert client.set("k", "w")
    finally:
        client.close()
