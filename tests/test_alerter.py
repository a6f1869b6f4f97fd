"""The alerter against a real Redis and a local Slack stand-in that slack-sdk really posts to."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from pydantic import SecretStr
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from alerter import cli
from alerter.service import Alerter, sink_group
from alerter.sinks import (
    ConsoleSink,
    DeliveryError,
    HttpWebhookSink,
    JsonlSink,
    Sink,
    SlackWebhookSink,
    build_sinks,
)
from shared import keys as K
from shared.keys import Keys
from shared.lifecycle import Stopper
from shared.models import Alert
from shared.settings import AlertSettings
from tests.helpers import free_port, wait_until
from tests.slack_standin import Reply, SlackStandin

KEYS = Keys()
FAST = FixedValueRetryIntervalCalculator(0.05)
REPO = Path(__file__).resolve().parent.parent


def make_alert(n: int = 1, **changes: Any) -> Alert:
    """Alert ``n``, emitted just now (so it is well inside the alerter's retry window)."""
    now = time.time()
    fields: dict[str, Any] = {
        "id": f"alert-{n:04d}",
        "check": "low_balance",
        "instance": "low_balance",
        "account": f"acct-{n}",
        "state": "firing",
        "title": f"Low balance on acct-{n}",
        "text": "Available balance 12.5 USDT is below 100 USDT.",
        "observed_at": now - 1.0,
        "emitted_at": now,
    }
    return Alert.model_validate({**fields, **changes})


def publish(r: redis_lib.Redis, alert: Alert) -> str:
    return str(r.xadd(KEYS.alerts, {"alert": alert.model_dump_json()}))


def jsonl_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pending(r: redis_lib.Redis, group: str = K.ALERT_GROUP) -> int:
    return int(r.xpending(KEYS.alerts, group)["pending"])


def dead_entries(r: redis_lib.Redis) -> list[dict[str, str]]:
    entries: Any = r.xrange(KEYS.dead)
    return [fields for _, fields in entries]


def slack_sink(standin: SlackStandin, **kwargs: Any) -> SlackWebhookSink:
    kwargs.setdefault("backoff", FAST)
    return SlackWebhookSink(SecretStr(standin.url()), timeout=5, **kwargs)


def make_alerter(r: redis_lib.Redis, sinks: list[Sink], **kwargs: Any) -> Alerter:
    kwargs.setdefault("retry_idle_ms", 100)
    kwargs.setdefault("block_ms", 20)
    return Alerter(r, KEYS, sinks, kwargs.pop("consumer", "alert-test"), **kwargs).start()


class FakeClock:
    """The alerter's ``clock``: time moves only when the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settle(r: redis_lib.Redis, group: str, idle_ms: int) -> None:
    """Until every pending entry of ``group`` has been idle ``idle_ms`` (so XAUTOCLAIM may take it)."""

    def idle_enough() -> bool:
        entries: Any = r.xpending_range(KEYS.alerts, group, min="-", max="+", count=1000)
        return all(int(e["time_since_delivered"]) >= idle_ms for e in entries)

    wait_until(idle_enough, timeout=5, interval=0.002, what=f"pending entries idle {idle_ms} ms")


def step_until(alerter: Alerter, predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """Run steps until ``predicate()`` holds (the loop ``while not stopped: step()``, with a deadline)."""
    return wait_until(lambda: alerter.step() >= 0 and predicate(), timeout=timeout, what=what)


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return tmp_path / "alerts.jsonl"


# -- delivery ------------------------------------------------------------------------------------


def test_delivers_to_jsonl_and_slack(r: redis_lib.Redis, slack: SlackStandin, jsonl: Path) -> None:
    alerter = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack)])
    alert = make_alert()
    publish(r, alert)
    step_until(alerter, lambda: pending(r) == 0 and slack.ok, what="delivery")

    [line] = jsonl_lines(jsonl)
    for key in ("id", "check", "account", "state", "text", "observed_at", "delivered_at"):
        assert key in line
    assert line["id"] == alert.id and line["state"] == "firing" and line["observed_at"] == alert.observed_at
    assert Alert.model_validate({k: v for k, v in line.items() if k != "delivered_at"}) == alert
    [post] = slack.ok
    body = post.json()
    assert alert.title in body["text"] and alert.text in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section"]
    assert alert.account in body["blocks"][1]["text"]["text"]
    assert r.get(KEYS.sent("jsonl", alert.id)) == "sent" and r.get(KEYS.sent("slack", alert.id)) == "sent"
    assert 0 < r.ttl(KEYS.sent("slack", alert.id)) <= 7 * 86400
    assert r.hget(KEYS.counters, K.COUNTER_DELIVERED) == "2"
    assert not r.exists(KEYS.attempts(alert.id))


def test_rate_limited_then_ok_posts_once(r: redis_lib.Redis, slack: SlackStandin, jsonl: Path) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "1"}))
    alerter = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack)])
    publish(r, make_alert())
    step_until(alerter, lambda: pending(r) == 0, what="delivery after the 429")

    assert [x.status for x in slack.received] == [429, 200]
    assert len(slack.ok) == 1 and len(jsonl_lines(jsonl)) == 1
    assert not r.exists(KEYS.dead)


def test_server_errors_then_ok_delivers_once(r: redis_lib.Redis, slack: SlackStandin) -> None:
    slack.script(Reply(500, "internal_error"), Reply(500, "internal_error"))
    alerter = make_alerter(r, [slack_sink(slack)])
    publish(r, make_alert())
    step_until(alerter, lambda: pending(r) == 0, what="delivery after two 500s")

    assert [x.status for x in slack.received] == [500, 500, 200]
    assert len(slack.ok) == 1
    assert r.hget(KEYS.counters, K.COUNTER_DELIVERED) == "1"


def test_slack_down_keeps_alerts_pending_while_jsonl_keeps_flowing(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    """Slack answers 500 for good: JSONL gets every alert at once; Slack's alerts stay pending,
    probed one per rest, and only once they are older than retry_for do they go to mx:dead."""
    slack.default = Reply(500, "internal_error")
    first = make_alert(1)
    clock = FakeClock(first.emitted_at)
    alerter = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack, server_retries=0)], clock=clock)
    publish(r, first)
    alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id]  # at once, Slack's failure aside
    assert pending(r) == 1 and r.hget(KEYS.attempts(first.id), "slack") == "1"

    later = [make_alert(n) for n in (2, 3)]
    for alert in later:
        publish(r, alert)
    alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, *(a.id for a in later)]
    assert len(slack.received) == 1 and pending(r) == 3  # Slack rests: no post per alert

    clock.now += 3600.0  # an hour of outage: every alert is now past retry_for
    for gone in (1, 2, 3):  # one probe per rest, each dead-letters the alert it tried
        clock.now += 30.0
        step_until(alerter, lambda: len(dead_entries(r)) == gone, what=f"dead letter {gone}")  # noqa: B023
    assert pending(r) == 0
    dead = {d["alert"]: d for d in dead_entries(r)}
    assert len(dead) == 3
    record = dead[first.model_dump_json()]
    assert record["sink"] == "slack" and record["attempts"] == "2" and "HTTP 500" in record["error"]
    assert "retry_for" in record["error"] and float(record["failed_at"]) > 0
    assert r.hget(KEYS.counters, K.COUNTER_DEAD) == "3"
    assert r.get(KEYS.sent("slack", first.id)) == "dead"
    assert len(slack.received) == 4 and not slack.ok
    assert len(jsonl_lines(jsonl)) == 3


def test_non_retryable_status_dead_letters_at_once(r: redis_lib.Redis, slack: SlackStandin) -> None:
    slack.script(Reply(404, "no_service"))
    alerter = make_alerter(r, [slack_sink(slack)])
    publish(r, make_alert())
    alerter.step()
    assert pending(r) == 0 and len(slack.received) == 1
    [dead] = dead_entries(r)
    assert dead["sink"] == "slack" and dead["attempts"] == "1" and "404 no_service" in dead["error"]
    assert "permanent" in dead["error"] and r.hget(KEYS.counters, K.COUNTER_DEAD) == "1"


def test_same_alert_twice_on_the_stream_is_posted_once(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    alerter = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack)])
    alert = make_alert()
    publish(r, alert)
    publish(r, alert)
    step_until(alerter, lambda: pending(r) == 0 and r.xlen(KEYS.alerts) == 2, what="both entries acked")
    alerter.step()
    assert len(slack.received) == 1 and len(jsonl_lines(jsonl)) == 1


def test_crash_between_sinks_does_not_repeat_the_sink_that_succeeded(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    slack.script(Reply(503, "unavailable"))
    first = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack, server_retries=0)], consumer="alert-1")
    publish(r, make_alert())
    first.step()
    assert len(jsonl_lines(jsonl)) == 1 and pending(r) == 1
    del first  # the process "dies" with the entry pending

    second = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack)], consumer="alert-1")
    step_until(second, lambda: pending(r) == 0, what="the restarted alerter to finish the entry")
    assert len(jsonl_lines(jsonl)) == 1
    assert [x.status for x in slack.received] == [503, 200]


def test_a_failing_sink_does_not_hold_up_later_alerts(r: redis_lib.Redis, jsonl: Path) -> None:
    """A sink that raises something unexpected is retried like a retryable error, never fatal."""

    class Broken:
        name = "webhook"

        def __init__(self) -> None:
            self.calls = 0

        def deliver(self, alert: Alert, delivered_at: float) -> None:
            self.calls += 1
            raise RuntimeError("bug in a sink")

    broken = Broken()
    alerter = make_alerter(r, [broken, JsonlSink(jsonl)], retry_idle_ms=60_000)
    for n in range(5):
        publish(r, make_alert(n))
    alerter.step()
    assert len(jsonl_lines(jsonl)) == 5
    assert broken.calls == 1  # resting after its failure: one try per retry period, not per alert
    assert pending(r) == 5


def test_invalid_entries_go_to_the_dead_stream(r: redis_lib.Redis, jsonl: Path) -> None:
    alerter = make_alerter(r, [JsonlSink(jsonl)])
    r.xadd(KEYS.alerts, {"alert": "{not json"})
    r.xadd(KEYS.alerts, {"alert": json.dumps({"id": "x"})})
    r.xadd(KEYS.alerts, {"something": "else"})
    publish(r, make_alert())
    alerter.step()
    dead = dead_entries(r)
    assert [d["sink"] for d in dead] == ["*", "*", "*"]
    assert all(d["error"].startswith("invalid alert") for d in dead)
    assert r.hget(KEYS.counters, K.COUNTER_DEAD) == "3"
    assert pending(r) == 0 and len(jsonl_lines(jsonl)) == 1


def test_deleted_pending_entries_are_acknowledged(r: redis_lib.Redis, slack: SlackStandin) -> None:
    slack.default = Reply(500, "down")
    alerter = make_alerter(r, [slack_sink(slack, server_retries=0)])
    entry_id = publish(r, make_alert())
    alerter.step()
    assert pending(r) == 1
    r.xdel(KEYS.alerts, entry_id)
    step_until(alerter, lambda: pending(r) == 0, what="the deleted entry to leave the pending list")


# -- rate limits, outages and restarts (issue 9) --------------------------------------------------


def test_retry_after_is_honoured_without_spending_an_attempt_or_holding_up_jsonl(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "10"}))
    first = make_alert(1)
    clock = FakeClock(first.emitted_at)
    alerter = make_alerter(r, [JsonlSink(jsonl), slack_sink(slack)], clock=clock, retry_idle_ms=1)
    publish(r, first)
    alerter.step()
    assert [x.status for x in slack.received] == [429]
    assert not r.hexists(KEYS.attempts(first.id), "slack")  # a 429 spends no attempt

    second = make_alert(2)
    publish(r, second)
    for _ in range(5):  # 9.9 s pass: JSONL delivers, Slack is not posted to inside the window
        clock.now += 1.98
        settle(r, K.ALERT_GROUP, 1)
        alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, second.id]
    assert [x.status for x in slack.received] == [429]
    assert not r.hexists(KEYS.attempts(first.id), "slack")

    clock.now = first.emitted_at + 10.0
    step_until(alerter, lambda: pending(r) == 0, what="both alerts on Slack after the window")
    assert [x.status for x in slack.received] == [429, 200, 200]
    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1, 1]
    assert not r.exists(KEYS.dead) and not r.exists(KEYS.attempts(first.id))


def test_a_429_without_retry_after_rests_the_sink_like_any_failure_but_spends_no_attempt(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    slack.script(Reply(429, "rate_limited"))
    alert = make_alert()
    clock = FakeClock(alert.emitted_at)
    alerter = make_alerter(r, [slack_sink(slack)], clock=clock, retry_idle_ms=2_000)
    publish(r, alert)
    alerter.step()
    assert [x.status for x in slack.received] == [429] and not r.exists(KEYS.attempts(alert.id))
    clock.now += 1.99  # the first rest is retry_idle_ms
    alerter.step()
    assert len(slack.received) == 1
    clock.now += 0.01
    alerter.step()  # the rest is over: its own pending entry goes out at once, no idle wait
    assert [x.status for x in slack.received] == [429, 200] and pending(r) == 0


def test_a_long_server_outage_loses_nothing_and_probes_once_per_rest(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    """40 rest periods of 500s (20 minutes of the alerter's time, far past the old 5 attempts),
    one probe per period, then Slack recovers: every alert is posted once, none is dead."""
    slack.default = Reply(500, "internal_error")
    alerts = [make_alert(n) for n in (1, 2, 3)]
    clock = FakeClock(alerts[-1].emitted_at)
    alerter = make_alerter(r, [slack_sink(slack, server_retries=0)], clock=clock, retry_idle_ms=1)
    for alert in alerts:
        publish(r, alert)
    for probe in range(1, 41):
        step_until(alerter, lambda: len(slack.received) >= probe, timeout=5, what=f"probe {probe}")  # noqa: B023
        settle(r, K.ALERT_GROUP, 1)
        alerter.step()  # the sink rests: nothing more is posted in this period
        assert len(slack.received) == probe
        clock.now += 30.0  # the longest rest (retry_max_ms, default 30 s)
    clock.now -= 29.0  # backoff is capped, never below half the cap once it got there
    settle(r, K.ALERT_GROUP, 1)
    alerter.step()
    assert len(slack.received) == 40 and pending(r) == 3 and not r.exists(KEYS.dead)
    assert r.hget(KEYS.attempts(alerts[0].id), "slack") is not None

    slack.default = Reply()
    clock.now += 30.0
    step_until(alerter, lambda: pending(r) == 0, what="every alert after Slack recovered")
    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1, 1, 1]
    assert not r.exists(KEYS.dead) and r.hget(KEYS.counters, K.COUNTER_DEAD) is None
    assert all(r.get(KEYS.sent("slack", a.id)) == "sent" for a in alerts)


def test_a_retryable_failure_past_retry_for_is_dead_lettered(
    r: redis_lib.Redis, slack: SlackStandin, caplog: pytest.LogCaptureFixture
) -> None:
    slack.default = Reply(503, "unavailable")
    young, old = make_alert(1), make_alert(2)
    clock = FakeClock(young.emitted_at + 3599.0)  # the default retry_for is an hour
    alerter = make_alerter(r, [slack_sink(slack, server_retries=0)], clock=clock)
    alerter.start()
    alerter.started_at = young.emitted_at  # the alerter ran when both were emitted
    publish(r, young)
    alerter.step()
    assert pending(r) == 1 and not r.exists(KEYS.dead)

    clock.now = old.emitted_at + 3600.0
    alerter = make_alerter(r, [slack_sink(slack, server_retries=0)], clock=clock, consumer="other")
    alerter.start()
    alerter.started_at = old.emitted_at
    publish(r, old)
    alerter.step()
    [dead] = dead_entries(r)
    assert dead["alert"] == old.model_dump_json() and dead["sink"] == "slack" and "HTTP 503" in dead["error"]
    assert dead["attempts"] == "1"
    assert r.get(KEYS.sent("slack", old.id)) == "dead" and r.hget(KEYS.counters, K.COUNTER_DEAD) == "1"
    assert any(rec.levelno == logging.ERROR and old.id in rec.getMessage() for rec in caplog.records)


def test_a_restarted_alerter_handles_its_own_pending_entries_at_once(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    slack.script(Reply(503, "unavailable"))
    first = make_alerter(r, [slack_sink(slack, server_retries=0)], consumer="alert-1", retry_idle_ms=600_000)
    publish(r, make_alert())
    first.step()
    assert pending(r) == 1 and [x.status for x in slack.received] == [503]
    del first  # the process "dies" with the entry pending; XAUTOCLAIM would wait 10 minutes

    second = make_alerter(r, [slack_sink(slack)], consumer="alert-1", retry_idle_ms=600_000)
    second.step()
    assert pending(r) == 0 and [x.status for x in slack.received] == [503, 200]


def test_after_a_reconnect_the_alerter_handles_its_own_pending_entries_at_once(
    r: redis_lib.Redis, jsonl: Path
) -> None:
    alerter = make_alerter(r, [JsonlSink(jsonl)], consumer="alert-1", retry_idle_ms=600_000)
    alerter.step()
    alert = make_alert()
    publish(r, alert)
    # read, then the connection dropped before it was handled: the entry is this consumer's
    r.xreadgroup(K.ALERT_GROUP, "alert-1", {KEYS.alerts: ">"}, count=10)
    assert pending(r) == 1
    alerter.start()  # what ride_out calls after a Redis error
    alerter.step()
    assert pending(r) == 0 and [x["id"] for x in jsonl_lines(jsonl)] == [alert.id]


@pytest.mark.parametrize("wipe", ["flushall", "group destroyed"])
def test_the_delivery_loop_survives_redis_coming_back_empty(
    r: redis_lib.Redis, jsonl: Path, wipe: str
) -> None:
    stopper = Stopper()
    group = sink_group("jsonl")
    alerter = Alerter(
        r, KEYS, [JsonlSink(jsonl)], "alert-1", block_ms=20, group=group, stopping=stopper.is_set
    )
    loop = threading.Thread(target=cli.run_all, args=([alerter], stopper), name="alerter-loop")
    loop.start()
    try:
        first, second = make_alert(1), make_alert(2)
        publish(r, first)
        wait_until(lambda: len(jsonl_lines(jsonl)) == 1, timeout=5, what="the first alert")
        if wipe == "flushall":
            r.flushall()
        else:
            r.xgroup_destroy(KEYS.alerts, group)
        publish(r, second)
        wait_until(lambda: len(jsonl_lines(jsonl)) >= 2, timeout=5, what="an alert after the wipe")
        wait_until(lambda: pending(r, group) == 0, timeout=5, what="the recreated group to be acknowledged")
        assert loop.is_alive()
    finally:
        stopper.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, second.id]  # the first not again


@pytest.mark.parametrize("header", ["10", "10.0", "Retry-After-as-date"])
def test_sinks_return_retry_after_to_the_alerter(slack: SlackStandin, header: str) -> None:
    now = time.time()
    value = formatdate(now + 10.0, usegmt=True) if header == "Retry-After-as-date" else header
    slack.script(
        Reply(429, "rate_limited", {"Retry-After": value}), Reply(429, "too many", {"Retry-After": value})
    )
    sinks: list[Sink] = [slack_sink(slack), HttpWebhookSink(SecretStr(slack.url("/hook")), timeout=5)]
    for sink in sinks:
        with pytest.raises(DeliveryError) as info:
            sink.deliver(make_alert(), now)
        error = info.value
        assert error.retryable and error.rate_limited and "HTTP 429" in error.message
        assert error.retry_after is not None and 9.0 <= error.retry_after <= 10.0
    assert len(slack.received) == 2  # slack-sdk did not sleep and post again


@pytest.mark.parametrize("header", [None, "soon", "-5", "nan"])
def test_a_429_without_a_usable_retry_after(slack: SlackStandin, header: str | None) -> None:
    slack.script(Reply(429, "rate_limited", {} if header is None else {"Retry-After": header}))
    with pytest.raises(DeliveryError) as info:
        slack_sink(slack).deliver(make_alert(), time.time())
    assert info.value.rate_limited and info.value.retry_after is None
    assert len(slack.received) == 1


# -- secrets -------------------------------------------------------------------------------------


def redis_value(r: redis_lib.Redis, key: str) -> Any:
    kind = r.type(key)
    if kind == "string":
        return r.get(key)
    if kind == "hash":
        return r.hgetall(key)
    return r.xrange(key) if kind == "stream" else kind


def redis_dump(r: redis_lib.Redis) -> str:
    """Every key and value, to search for a secret."""
    return "\n".join(f"{key} {redis_value(r, key)}" for key in r.scan_iter("*"))


def test_webhook_urls_never_logged_at_debug(
    r: redis_lib.Redis, slack: SlackStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("slack_sdk").setLevel(logging.DEBUG)
    secret = "/hooks/NOT-A-SLACK-PATTERN-s3cr3t"  # shared.lifecycle.redact does not know this shape
    closed = f"http://127.0.0.1:{free_port()}{secret}"
    slack.script(Reply(500, "x"), Reply(429, "x", {"Retry-After": "0"}), Reply(400, "invalid_payload"))
    sinks: list[Sink] = [
        SlackWebhookSink(SecretStr(slack.url(secret)), timeout=2, backoff=FAST, server_retries=1),
        SlackWebhookSink(SecretStr(closed), timeout=2, backoff=FAST),
        HttpWebhookSink(SecretStr(closed), timeout=2),
    ]
    for n, sink in enumerate(sinks):
        sink.name = f"sink{n}"
    alert = make_alert()
    clock = FakeClock(alert.emitted_at)
    alerter = make_alerter(r, sinks, clock=clock)
    publish(r, alert)
    alerter.step()  # sink0: 500, retried in slack-sdk, then 429; the others: connection refused
    clock.now += 3600.0  # past retry_for: the next failure of each sink is its last
    step_until(alerter, lambda: pending(r) == 0, what="every sink to give up")

    assert [x.status for x in slack.received] == [500, 429, 400]  # 400: not retryable, dead
    assert "s3cr3t" not in caplog.text
    assert all("s3cr3t" not in rec.getMessage() for rec in caplog.records)
    assert "<redacted>" in caplog.text  # the SDK's "Going to retry the same request: POST <url>"
    assert any(rec.levelno == logging.ERROR for rec in caplog.records)
    assert "s3cr3t" not in redis_dump(r)
    assert "s3cr3t" not in repr(sinks)


# -- sinks ---------------------------------------------------------------------------------------


def test_http_webhook_posts_the_alert_json(slack: SlackStandin) -> None:
    sink = HttpWebhookSink(SecretStr(slack.url("/hook")), timeout=5)
    alert = make_alert(labels={"desk": "asia"})
    sink.deliver(alert, 1_700_000_100.0)
    [post] = slack.received
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Idempotency-Key"] == alert.id
    assert post.json() == {**alert.model_dump(mode="json"), "delivered_at": 1_700_000_100.0}


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (429, True), (503, True)])
def test_http_webhook_errors(slack: SlackStandin, status: int, retryable: bool) -> None:
    slack.script(Reply(status, "no"))
    with pytest.raises(DeliveryError) as info:
        HttpWebhookSink(SecretStr(slack.url("/hook")), timeout=5).deliver(make_alert(), 0.0)
    assert info.value.retryable is retryable and f"HTTP {status}" in info.value.message


def test_http_webhook_connection_refused_is_retryable() -> None:
    sink = HttpWebhookSink(SecretStr(f"http://127.0.0.1:{free_port()}/hook"), timeout=2)
    with pytest.raises(DeliveryError) as info:
        sink.deliver(make_alert(), 0.0)
    assert info.value.retryable


def test_console_sink_is_readable() -> None:
    out = io.StringIO()
    ConsoleSink(out).deliver(make_alert(7, state="resolved"), 0.0)
    text = out.getvalue()
    assert text.startswith("[RESOLVED] warning low_balance account=acct-7")
    assert "Low balance on acct-7" in text and "12.5 USDT" in text


def test_build_sinks_from_settings(tmp_path: Path) -> None:
    settings = AlertSettings(
        console=True,
        alerts_jsonl=tmp_path / "a.jsonl",
        slack_webhook_url=SecretStr("https://hooks.example.invalid/x"),
        webhook_url=SecretStr("http://127.0.0.1:9/hook"),
    )
    assert [s.name for s in build_sinks(settings)] == ["console", "jsonl", "slack", "webhook"]
    assert build_sinks(AlertSettings()) == []
    with pytest.raises(ValueError, match="http") as info:
        build_sinks(AlertSettings(webhook_url=SecretStr("file:///etc/passwd")))
    assert "passwd" not in str(info.value)


# -- the process ---------------------------------------------------------------------------------


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "--console" in capsys.readouterr().out


@pytest.mark.parametrize(
    "env",
    [
        {"MONITORX_RETRY_FOR": "0"},
        {"MONITORX_RETRY_MAX_MS": "soon"},
        {"MONITORX_SLACK_WEBHOOK_URL": "ftp://nope"},
        {"MONITORX_REDIS_URL": "x"},
    ],
)
def test_cli_invalid_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # main() configures logging
    monkeypatch.setattr(root, "level", root.level)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "invalid setting" in capsys.readouterr().err


def start_alerter(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "alerter"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_sigterm_mid_delivery_then_restart_posts_each_alert_once(
    redis_url: str, r: redis_lib.Redis, slack: SlackStandin, jsonl: Path, tmp_path: Path
) -> None:
    alerts = [make_alert(n) for n in range(5)]
    for alert in alerts:
        publish(r, alert)
    slack.script(Reply(delay=3.0))  # the first post is slow: SIGTERM lands while it is in flight
    env = {
        "MONITORX_REDIS_URL": redis_url,
        "MONITORX_SLACK_WEBHOOK_URL": slack.url(),
        "MONITORX_ALERTS_JSONL": str(jsonl),
        "MONITORX_RETRY_IDLE_MS": "200",
        "MONITORX_LOG_LEVEL": "DEBUG",
    }
    log = tmp_path / "alerter.log"
    proc = start_alerter(env, log)
    try:
        wait_until(lambda: slack.in_flight or proc.poll() is not None, what="the slow post to start")
        assert proc.poll() is None, log.read_text()
        # the JSONL loop does not wait for Slack's slow post: it delivers everything meanwhile
        wait_until(lambda: len(jsonl_lines(jsonl)) == len(alerts), timeout=2.5, what="JSONL during the post")
        assert slack.in_flight
        started = time.monotonic()
        assert stop(proc) == 0
        assert time.monotonic() - started > 0.2  # it waited for the post in hand
        # the CLI runs one loop per sink: JSONL got everything, Slack's loop stopped after the post
        assert len(slack.ok) == 1 and pending(r, sink_group("slack")) == len(alerts) - 1
        assert pending(r, sink_group("jsonl")) == 0 and len(jsonl_lines(jsonl)) == len(alerts)

        proc = start_alerter(env, log)
        wait_until(
            lambda: pending(r, sink_group("slack")) == 0 or proc.poll() is not None,
            what="the rest after the restart",
        )
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1] * len(alerts)
    assert Counter(x["id"] for x in jsonl_lines(jsonl)) == Counter(a.id for a in alerts)
    output = log.read_text()
    assert "received SIGTERM" in output and "standin-secret-token" not in output


def test_a_hanging_slack_never_delays_the_other_sinks(
    redis_url: str, r: redis_lib.Redis, slack: SlackStandin, jsonl: Path, tmp_path: Path
) -> None:
    """The real process: Slack takes 4 s per post (as a hung endpoint does until its timeout),
    yet every alert reaches the JSONL sink at once, and Slack still gets each one exactly once."""
    alerts = [make_alert(n) for n in range(4)]
    slack.script(*[Reply(delay=4.0)] * 2)
    env = {
        "MONITORX_REDIS_URL": redis_url,
        "MONITORX_SLACK_WEBHOOK_URL": slack.url(),
        "MONITORX_ALERTS_JSONL": str(jsonl),
        "MONITORX_RETRY_IDLE_MS": "200",
    }
    proc = start_alerter(env, tmp_path / "alerter.log")
    try:
        for alert in alerts:
            publish(r, alert)
        wait_until(lambda: slack.in_flight, what="the first slow Slack post")
        wait_until(lambda: len(jsonl_lines(jsonl)) == len(alerts), timeout=3, what="JSONL while Slack hangs")
        assert len(slack.ok) == 0  # Slack is still on its first post: nothing waited for it
        wait_until(lambda: len(slack.ok) == len(alerts), timeout=40, what="Slack to catch up")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(Counter(post.json()["text"].splitlines()[0] for post in slack.ok).values()) == [1] * len(
        alerts
    )


def test_a_backlog_found_at_start_gets_the_whole_retry_window(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    """Alerts emitted long before the alerter started (it was down) are retried for retry_for from
    its start, not dead-lettered on their first failure."""
    slack.default = Reply(503, "unavailable")
    stale = make_alert(1)
    clock = FakeClock(stale.emitted_at + 7200.0)  # found two hours late
    alerter = make_alerter(r, [slack_sink(slack, server_retries=0)], clock=clock)
    publish(r, stale)
    alerter.step()
    assert pending(r) == 1 and not r.exists(KEYS.dead)
    clock.now += 3600.0
    step_until(alerter, lambda: bool(dead_entries(r)), what="the dead letter an hour after the start")
