"""The alerter (router + one delivery loop per receiver) with the legacy sinks of the settings and
no route in the configuration: the default route, each alert its own message at once, exactly the
behaviour before routing existed. Against a real Redis and a local Slack stand-in that slack-sdk
really posts to."""

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
from collections.abc import Callable, Iterator, Sequence
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from pydantic import SecretStr
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from alerter import cli
from alerter.cli import Alerter, build_alerter
from alerter.notify import MessageRef, Notification, Receiver
from alerter.pace import PACE_INTERVAL as PACE
from alerter.receivers import (
    ConsoleReceiver,
    JsonlReceiver,
    SlackWebhookReceiver,
    WebhookReceiver,
    legacy_receivers,
)
from alerter.sinks import DeliveryError
from shared import keys as K
from shared.config import Config
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
    """Alert ``n``, emitted just now (so it is well inside the alerter's retry window), with the
    built-in labels the engine gives every alert (``engine.alerts.make_alert``), so each alert of
    the legacy default route is its own group, as in production."""
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
    merged = {**fields, **changes}
    builtin = {
        name: str(merged.get(name, "warning")) for name in ("check", "instance", "account", "severity")
    }
    if merged.get("keys"):
        builtin["key"] = ",".join(merged["keys"])
    return Alert.model_validate({**merged, "labels": {**builtin, **changes.get("labels", {})}})


def publish(r: redis_lib.Redis, alert: Alert) -> str:
    return str(r.xadd(KEYS.alerts, {"alert": alert.model_dump_json()}))


def jsonl_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pending(r: redis_lib.Redis, receiver: str) -> int:
    """Notices read from the receiver's ``notify`` stream and not acknowledged yet."""
    return int(r.xpending(KEYS.notify(receiver), K.DELIVER_GROUP)["pending"])


def routed(r: redis_lib.Redis) -> bool:
    """Every entry of the alerts stream read and acknowledged by the router."""
    groups: Any = r.xinfo_groups(KEYS.alerts)
    last = r.xinfo_stream(KEYS.alerts)["last-generated-id"]
    [route] = [g for g in groups if g["name"] == K.ROUTE_GROUP]
    return int(route["pending"]) == 0 and route["last-delivered-id"] == last


def marker(r: redis_lib.Redis, receiver: str, alert: Alert) -> str | None:
    """The receiver's delivery marker of the alert: ``sent``, ``dead`` or None (not told yet)."""
    value: Any = r.get(KEYS.sent(receiver, alert.id))
    return None if value is None else str(value)


def dead_entries(r: redis_lib.Redis) -> list[dict[str, str]]:
    entries: Any = r.xrange(KEYS.dead)
    return [fields for _, fields in entries]


def slack_receiver(standin: SlackStandin, **kwargs: Any) -> SlackWebhookReceiver:
    """The legacy ``.env`` Slack sink as ``legacy_receivers`` builds it (unpaced, as before),
    with a short in-process retry interval."""
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("paced", False)
    return SlackWebhookReceiver(SecretStr(standin.url()), timeout=5, **kwargs)


def make_alerter(
    r: redis_lib.Redis, receivers: Sequence[Receiver], consumer: str = "alert-test", **options: Any
) -> Alerter:
    """``build_alerter`` over the legacy default route (a Config without a route), started."""
    options.setdefault("retry_idle_ms", 100)
    options.setdefault("block_ms", 20)
    settings = AlertSettings(consumer=consumer)
    return build_alerter(r, settings, Config(), receivers, **options).start()


def started_at(alerter: Alerter, at: float) -> None:
    """As if the alerter had been running since ``at``."""
    for delivery in alerter.deliveries:
        delivery.started_at = at


def note(alert: Alert, receiver: str = "slack") -> Notification:
    """What the legacy default route hands a receiver for one new alert."""
    return Notification(f"test:{alert.id}", receiver, dict(alert.labels), (alert,), (alert,))


class FakeClock:
    """The alerter's ``clock``: time moves only when the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settle(r: redis_lib.Redis, receiver: str, idle_ms: int) -> None:
    """Until every pending notice of ``receiver`` has been idle ``idle_ms`` (so XAUTOCLAIM may take it)."""

    def idle_enough() -> bool:
        entries: Any = r.xpending_range(KEYS.notify(receiver), K.DELIVER_GROUP, min="-", max="+", count=1000)
        return all(int(e["time_since_delivered"]) >= idle_ms for e in entries)

    wait_until(idle_enough, timeout=5, interval=0.002, what=f"pending notices idle {idle_ms} ms")


def step_until(
    alerter: Alerter, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> Any:
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
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack)])
    alert = make_alert()
    publish(r, alert)
    step_until(alerter, lambda: marker(r, "jsonl", alert) and marker(r, "slack", alert), what="delivery")

    [line] = jsonl_lines(jsonl)
    for key in ("id", "check", "account", "state", "text", "observed_at", "delivered_at"):
        assert key in line
    assert line["id"] == alert.id and line["state"] == "firing" and line["observed_at"] == alert.observed_at
    record = {k: v for k, v in line.items() if k not in ("delivered_at", "group_key")}
    assert Alert.model_validate(record) == alert
    assert line["group_key"].startswith('{}/{}:"jsonl":{')  # the default route's child to jsonl
    [post] = slack.ok
    body = post.json()
    assert alert.title in body["text"] and alert.text in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section"]
    assert alert.account in body["blocks"][1]["text"]["text"]
    assert marker(r, "jsonl", alert) == "sent" and marker(r, "slack", alert) == "sent"
    assert 0 < r.ttl(KEYS.sent("slack", alert.id)) <= 7 * 86400
    assert r.hget(KEYS.counters, K.COUNTER_DELIVERED) == "2"
    assert r.hget(KEYS.counters, K.COUNTER_NOTIFICATIONS) == "2"
    assert not r.exists(KEYS.attempts(alert.id))
    assert routed(r) and pending(r, "jsonl") == 0 and pending(r, "slack") == 0
    assert r.zcard(KEYS.groups) == 0 and not r.keys(KEYS.group("*"))  # a one-off alert: nothing left


def test_rate_limited_then_ok_posts_once(r: redis_lib.Redis, slack: SlackStandin, jsonl: Path) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "1"}))
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack)])
    alert = make_alert()
    publish(r, alert)
    step_until(alerter, lambda: marker(r, "slack", alert) == "sent", what="delivery after the 429")

    assert [x.status for x in slack.received] == [429, 200]
    assert slack.received[1].at - slack.received[0].at >= 0.95  # its Retry-After, as given
    assert len(slack.ok) == 1 and len(jsonl_lines(jsonl)) == 1
    assert pending(r, "slack") == 0 and not r.exists(KEYS.dead)


def test_server_errors_then_ok_delivers_once(r: redis_lib.Redis, slack: SlackStandin) -> None:
    slack.script(Reply(500, "internal_error"), Reply(500, "internal_error"))
    alerter = make_alerter(r, [slack_receiver(slack)])
    alert = make_alert()
    publish(r, alert)
    step_until(alerter, lambda: marker(r, "slack", alert) == "sent", what="delivery after two 500s")

    assert [x.status for x in slack.received] == [500, 500, 200]
    assert len(slack.ok) == 1 and pending(r, "slack") == 0
    assert r.hget(KEYS.counters, K.COUNTER_DELIVERED) == "1"


def test_slack_down_keeps_alerts_pending_while_jsonl_keeps_flowing(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    """Slack answers 500 for good: JSONL gets every alert at once; Slack's alerts stay pending
    (Slack rests, no post per alert), and only once they are older than retry_for do they go to
    mx:dead."""
    slack.default = Reply(500, "internal_error")
    first = make_alert(1)
    clock = FakeClock(first.emitted_at)
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack, server_retries=0)], clock=clock)
    publish(r, first)
    alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id]  # at once, Slack's failure aside
    assert pending(r, "slack") == 1 and r.hget(KEYS.attempts(first.id), "slack") == "1"

    later = [make_alert(n) for n in (2, 3)]
    for alert in later:
        publish(r, alert)
    alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, *(a.id for a in later)]
    assert len(slack.received) == 1  # Slack rests: no post per alert, its notices wait
    assert r.xlen(KEYS.notify("slack")) == 3 and not any(marker(r, "slack", a) for a in (first, *later))
    assert not r.exists(KEYS.dead)

    clock.now += 3601.0  # an hour of outage: every alert is now past retry_for

    def rest_over() -> bool:
        clock.now += 30.0  # past the longest rest (retry_max_ms)
        return len(dead_entries(r)) == 3

    step_until(alerter, rest_over, what="three dead letters")
    assert pending(r, "slack") == 0
    dead = {d["alert"]: d for d in dead_entries(r)}
    assert len(dead) == 3
    record = dead[first.model_dump_json()]
    assert record["sink"] == "slack" and record["attempts"] == "2" and "HTTP 500" in record["error"]
    assert "retry_for" in record["error"] and float(record["failed_at"]) > 0
    assert r.hget(KEYS.counters, K.COUNTER_DEAD) == "3"
    assert all(marker(r, "slack", a) == "dead" for a in (first, *later))
    assert len(slack.received) == 4 and not slack.ok
    assert len(jsonl_lines(jsonl)) == 3


def test_past_retry_for_a_down_receiver_is_still_probed_once_per_rest(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    """The legacy promise: an outage costs one probe per rest, also once the alerts are past
    retry_for (each probe dead-letters the alert it tried, then the receiver rests)."""
    slack.default = Reply(500, "internal_error")
    alerts = [make_alert(n) for n in (1, 2, 3)]
    clock = FakeClock(alerts[-1].emitted_at)
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], clock=clock)
    for alert in alerts:
        publish(r, alert)
    alerter.step()
    assert len(slack.received) == 1 and pending(r, "slack") == 3

    clock.now += 3600.0
    for gone in (1, 2, 3):
        clock.now += 30.0  # past any rest (retry_max_ms)
        step_until(alerter, lambda: len(dead_entries(r)) >= gone, what=f"dead letter {gone}")  # noqa: B023
        assert len(dead_entries(r)) == gone and len(slack.received) == 1 + gone


def test_non_retryable_status_dead_letters_at_once(r: redis_lib.Redis, slack: SlackStandin) -> None:
    slack.script(Reply(404, "no_service"))
    alerter = make_alerter(r, [slack_receiver(slack)])
    alert = make_alert()
    publish(r, alert)
    alerter.step()
    assert pending(r, "slack") == 0 and len(slack.received) == 1 and marker(r, "slack", alert) == "dead"
    [dead] = dead_entries(r)
    assert dead["sink"] == "slack" and dead["attempts"] == "1" and "404 no_service" in dead["error"]
    assert "permanent" in dead["error"] and r.hget(KEYS.counters, K.COUNTER_DEAD) == "1"
    assert json.loads(dead["alert"]) == alert.model_dump(mode="json")


def test_same_alert_twice_on_the_stream_is_posted_once(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    """Twice in one batch (the second changes no group), and once more after it was posted
    (the delivery markers say every receiver was told)."""
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack)])
    alert = make_alert()
    publish(r, alert)
    publish(r, alert)
    step_until(alerter, lambda: routed(r) and marker(r, "slack", alert), what="both entries routed")
    publish(r, alert)
    step_until(alerter, lambda: routed(r) and r.xlen(KEYS.alerts) == 3, what="the third entry routed")
    alerter.step()
    assert len(slack.received) == 1 and len(jsonl_lines(jsonl)) == 1
    assert pending(r, "slack") == 0 and pending(r, "jsonl") == 0


def test_an_entry_repeated_after_its_alert_was_notified_leaves_no_group_behind(
    r: redis_lib.Redis, jsonl: Path
) -> None:
    """The pitfalls' duplicate XADD (redis-py retries) and rerun job (rq) write an alert twice,
    seconds apart: the second copy changes nothing and leaves nothing in Redis. (Left behind, a
    one-off or resolved member would show up in every later message of a grouped route.)"""
    alerter = make_alerter(r, [JsonlReceiver(jsonl)])
    alert = make_alert()
    publish(r, alert)
    step_until(alerter, lambda: marker(r, "jsonl", alert), what="the first copy")
    assert not r.keys(KEYS.group("*"))
    publish(r, alert)
    step_until(alerter, lambda: routed(r), what="the second copy routed")
    alerter.step()
    assert len(jsonl_lines(jsonl)) == 1
    assert not r.keys(KEYS.group("*")) and r.zcard(KEYS.groups) == 0


def test_crash_between_receivers_does_not_repeat_the_receiver_that_succeeded(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    slack.script(Reply(503, "unavailable"))
    first = make_alerter(
        r, [JsonlReceiver(jsonl), slack_receiver(slack, server_retries=0)], consumer="alert-1"
    )
    alert = make_alert()
    publish(r, alert)
    first.step()
    assert len(jsonl_lines(jsonl)) == 1 and pending(r, "slack") == 1 and pending(r, "jsonl") == 0
    del first  # the process "dies" with Slack's notice pending

    second = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack)], consumer="alert-1")
    step_until(second, lambda: marker(r, "slack", alert) == "sent", what="the restarted alerter's post")
    assert len(jsonl_lines(jsonl)) == 1 and pending(r, "slack") == 0
    assert [x.status for x in slack.received] == [503, 200]


class Broken:
    """A receiver with a bug: every send raises something no receiver should."""

    name = "webhook"
    channel = ""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        self.calls += 1
        raise RuntimeError("bug in a receiver")


def test_a_failing_receiver_does_not_hold_up_later_alerts(r: redis_lib.Redis, jsonl: Path) -> None:
    """A receiver that raises something unexpected is retried like a retryable error, never fatal."""
    broken = Broken()
    alerter = make_alerter(r, [broken, JsonlReceiver(jsonl)], retry_idle_ms=60_000)
    alerts = [make_alert(n) for n in range(5)]
    for alert in alerts:
        publish(r, alert)
    alerter.step()
    assert len(jsonl_lines(jsonl)) == 5
    assert broken.calls == 1  # resting after its failure: one try per retry period, not per alert
    assert pending(r, "webhook") == 5 and pending(r, "jsonl") == 0
    assert marker(r, "webhook", alerts[0]) is None and not r.exists(KEYS.dead)


def test_a_receiver_s_failed_attempts_are_its_own(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    """Slack fails, then JSONL (another thread in the process, in any order) sends the same
    alert: Slack's count stays, so its dead letter and its logs say how often it was tried."""
    slack.default = Reply(500, "down")
    alert = make_alert()
    clock = FakeClock(alert.emitted_at)
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0), JsonlReceiver(jsonl)], clock=clock)
    publish(r, alert)
    alerter.step()
    assert len(slack.received) == 1 and marker(r, "jsonl", alert) == "sent"
    assert r.hget(KEYS.attempts(alert.id), "slack") == "1"


def test_a_retry_after_a_refused_send_is_not_counted_as_a_possible_duplicate(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    """Slack answered 503: nothing was posted, so the retry can duplicate nothing. Only a crash
    between a send and its record may (``notifications_maybe_duplicated``)."""
    slack.script(Reply(503, "unavailable"))
    alert = make_alert()
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)])
    publish(r, alert)
    step_until(alerter, lambda: marker(r, "slack", alert) == "sent", what="the post after the 503")
    assert [x.status for x in slack.received] == [503, 200]
    assert r.hget(KEYS.counters, K.COUNTER_MAYBE_DUPLICATED) is None


def test_invalid_entries_go_to_the_dead_stream(r: redis_lib.Redis, jsonl: Path) -> None:
    """The router dead-letters what it cannot read, for every receiver (sink ``*``)."""
    alerter = make_alerter(r, [JsonlReceiver(jsonl)])
    r.xadd(KEYS.alerts, {"alert": "{not json"})
    r.xadd(KEYS.alerts, {"alert": json.dumps({"id": "x"})})
    r.xadd(KEYS.alerts, {"something": "else"})
    publish(r, make_alert())
    alerter.step()
    dead = dead_entries(r)
    assert [d["sink"] for d in dead] == ["*", "*", "*"]
    assert all(d["error"].startswith("unreadable alert") for d in dead)
    assert [d["alert"] for d in dead[:2]] == ["{not json", json.dumps({"id": "x"})]
    assert r.hget(KEYS.counters, K.COUNTER_DEAD) == "3"
    assert routed(r) and len(jsonl_lines(jsonl)) == 1


def test_deleted_pending_entries_are_acknowledged(r: redis_lib.Redis, slack: SlackStandin) -> None:
    """An alerts entry the router had read and a notice the delivery loop had read, both
    deleted from their stream before they were handled: each is acknowledged, nothing fails."""
    slack.default = Reply(500, "down")
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], consumer="alert-1")
    publish(r, make_alert(1))
    alerter.step()
    assert pending(r, "slack") == 1
    notices: Any = r.xrange(KEYS.notify("slack"))
    [(notice_id, _)] = notices
    r.xdel(KEYS.notify("slack"), notice_id)

    entry_id = publish(r, make_alert(2))
    r.xreadgroup(K.ROUTE_GROUP, "alert-1", {KEYS.alerts: ">"}, count=10)  # read, never handled
    r.xdel(KEYS.alerts, entry_id)
    alerter.start()  # the router reads its own pending entries first
    step_until(alerter, lambda: routed(r) and pending(r, "slack") == 0, what="the deleted entries acked")
    assert len(slack.received) == 1  # nothing was left to send


# -- rate limits, outages and restarts (issue 9) --------------------------------------------------


def test_retry_after_is_honoured_without_spending_an_attempt_or_holding_up_jsonl(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "10"}))
    first = make_alert(1)
    clock = FakeClock(first.emitted_at)
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack)], clock=clock, retry_idle_ms=1)
    publish(r, first)
    alerter.step()
    assert [x.status for x in slack.received] == [429]
    assert not r.hexists(KEYS.attempts(first.id), "slack")  # a 429 spends no attempt

    second = make_alert(2)
    publish(r, second)
    for _ in range(5):  # 9.9 s pass: JSONL delivers, Slack is not posted to inside the window
        clock.now += 1.98
        settle(r, "slack", 1)
        alerter.step()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, second.id]
    assert [x.status for x in slack.received] == [429]
    assert not r.hexists(KEYS.attempts(first.id), "slack") and r.xlen(KEYS.notify("slack")) == 2
    assert marker(r, "slack", first) is None and marker(r, "slack", second) is None

    clock.now = first.emitted_at + 10.0
    step_until(
        alerter, lambda: marker(r, "slack", second) == "sent", what="both alerts on Slack after the window"
    )
    assert [x.status for x in slack.received] == [429, 200, 200]
    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1, 1]
    assert marker(r, "slack", first) == "sent" and pending(r, "slack") == 0
    assert not r.exists(KEYS.dead) and not r.exists(KEYS.attempts(first.id))


def test_a_429_without_retry_after_rests_the_receiver_like_any_failure_but_spends_no_attempt(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    slack.script(Reply(429, "rate_limited"))
    alert = make_alert()
    clock = FakeClock(alert.emitted_at)
    alerter = make_alerter(r, [slack_receiver(slack)], clock=clock, retry_idle_ms=2_000)
    publish(r, alert)
    alerter.step()
    assert [x.status for x in slack.received] == [429] and not r.exists(KEYS.attempts(alert.id))
    clock.now += 1.99  # the first rest is retry_idle_ms
    alerter.step()
    assert len(slack.received) == 1
    clock.now += 0.01
    alerter.step()  # the rest is over: its own pending notice goes out at once, no idle wait
    assert [x.status for x in slack.received] == [429, 200] and pending(r, "slack") == 0
    assert marker(r, "slack", alert) == "sent"


def test_a_paced_slack_receiver_posts_once_per_pace_of_the_alerter_clock_and_jsonl_is_not_held(
    r: redis_lib.Redis, slack: SlackStandin, jsonl: Path
) -> None:
    """A Slack webhook receiver of the configuration's ``receivers:`` (paced, unlike the legacy
    ``.env`` sink) posts at most once per PACE of the alerter's clock; the other alerts wait
    their turn (none dropped) and JSONL, which has no rate, gets everything at once."""
    alerts = [make_alert(n) for n in (1, 2, 3)]
    clock = FakeClock(alerts[-1].emitted_at)
    alerter = make_alerter(r, [JsonlReceiver(jsonl), slack_receiver(slack, paced=True)], clock=clock)
    for alert in alerts:
        publish(r, alert)
    t0 = clock.now
    alerter.step()
    assert len(jsonl_lines(jsonl)) == 3 and len(slack.ok) == 1
    clock.now = t0 + PACE - 0.05
    alerter.step()
    assert len(slack.ok) == 1 and pending(r, "slack") == 2
    clock.now = t0 + PACE
    alerter.step()
    assert len(slack.ok) == 2
    clock.now = t0 + PACE + PACE
    alerter.step()
    assert len(slack.ok) == 3 and pending(r, "slack") == 0
    assert r.hget(KEYS.counters, K.COUNTER_DELIVERED) == "6" and not r.exists(KEYS.dead)


def test_a_long_server_outage_loses_nothing_and_probes_once_per_rest(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    """40 rest periods of 500s (20 minutes of the alerter's time, far past the old 5 attempts),
    one probe per period, then Slack recovers: every alert is posted once, none is dead."""
    slack.default = Reply(500, "internal_error")
    alerts = [make_alert(n) for n in (1, 2, 3)]
    clock = FakeClock(alerts[-1].emitted_at)
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], clock=clock, retry_idle_ms=1)
    for alert in alerts:
        publish(r, alert)
    for probe in range(1, 41):
        step_until(alerter, lambda: len(slack.received) >= probe, timeout=5, what=f"probe {probe}")  # noqa: B023
        settle(r, "slack", 1)
        alerter.step()  # the receiver rests: nothing more is posted in this period
        assert len(slack.received) == probe
        clock.now += 30.0  # the longest rest (retry_max_ms, default 30 s)
    clock.now -= 29.0  # backoff is capped, never below half the cap once it got there
    settle(r, "slack", 1)
    alerter.step()
    assert len(slack.received) == 40 and pending(r, "slack") == 3 and not r.exists(KEYS.dead)
    assert r.hget(KEYS.attempts(alerts[0].id), "slack") is not None

    slack.default = Reply()
    clock.now += 30.0
    step_until(
        alerter,
        lambda: all(marker(r, "slack", a) == "sent" for a in alerts),
        what="every alert after Slack recovered",
    )
    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1, 1, 1] and pending(r, "slack") == 0
    assert not r.exists(KEYS.dead) and r.hget(KEYS.counters, K.COUNTER_DEAD) is None


def test_a_retryable_failure_past_retry_for_is_dead_lettered(
    r: redis_lib.Redis, slack: SlackStandin, caplog: pytest.LogCaptureFixture
) -> None:
    slack.default = Reply(503, "unavailable")
    young, old = make_alert(1), make_alert(2)
    clock = FakeClock(young.emitted_at + 3599.0)  # the default retry_for is an hour
    options: dict[str, Any] = {"clock": clock, "retry_idle_ms": 600_000}  # no reclaim of the peer's
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], **options)
    started_at(alerter, young.emitted_at)  # the alerter ran when both were emitted
    publish(r, young)
    alerter.step()
    assert pending(r, "slack") == 1 and not r.exists(KEYS.dead)

    clock.now = old.emitted_at + 3600.0
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], consumer="other", **options)
    started_at(alerter, old.emitted_at)
    publish(r, old)
    alerter.step()
    [dead] = dead_entries(r)
    assert dead["alert"] == old.model_dump_json() and dead["sink"] == "slack" and "HTTP 503" in dead["error"]
    assert dead["attempts"] == "1"
    assert marker(r, "slack", old) == "dead" and r.hget(KEYS.counters, K.COUNTER_DEAD) == "1"
    assert marker(r, "slack", young) is None  # still the first alerter's, still pending
    assert any(rec.levelno == logging.ERROR and old.id in rec.getMessage() for rec in caplog.records)


def test_a_restarted_alerter_handles_its_own_pending_entries_at_once(
    r: redis_lib.Redis, slack: SlackStandin
) -> None:
    slack.script(Reply(503, "unavailable"))
    first = make_alerter(
        r, [slack_receiver(slack, server_retries=0)], consumer="alert-1", retry_idle_ms=600_000
    )
    alert = make_alert()
    publish(r, alert)
    first.step()
    assert pending(r, "slack") == 1 and [x.status for x in slack.received] == [503]
    del first  # the process "dies" with the notice pending; XAUTOCLAIM would wait 10 minutes

    second = make_alerter(r, [slack_receiver(slack)], consumer="alert-1", retry_idle_ms=600_000)
    second.step()
    assert pending(r, "slack") == 0 and [x.status for x in slack.received] == [503, 200]
    assert marker(r, "slack", alert) == "sent"


def test_after_a_reconnect_the_alerter_handles_its_own_pending_entries_at_once(
    r: redis_lib.Redis, jsonl: Path
) -> None:
    """At both stages: an alerts entry the router had read, and a notice the delivery loop had
    read, when the connection dropped before they were handled."""
    alerter = make_alerter(r, [JsonlReceiver(jsonl)], consumer="alert-1", retry_idle_ms=600_000)
    alerter.step()
    first, second = make_alert(1), make_alert(2)
    publish(r, first)
    r.xreadgroup(K.ROUTE_GROUP, "alert-1", {KEYS.alerts: ">"}, count=10)
    assert not routed(r)
    alerter.start()  # what ride_out calls after a Redis error
    alerter.step()
    assert routed(r) and [x["id"] for x in jsonl_lines(jsonl)] == [first.id]

    publish(r, second)
    alerter.router.step()  # routed: a notice on jsonl's stream
    r.xreadgroup(K.DELIVER_GROUP, "alert-1", {KEYS.notify("jsonl"): ">"}, count=10)
    assert pending(r, "jsonl") == 1
    alerter.start()
    alerter.step()
    assert pending(r, "jsonl") == 0 and [x["id"] for x in jsonl_lines(jsonl)] == [first.id, second.id]


@pytest.mark.parametrize("wipe", ["flushall", "route group destroyed", "delivery group destroyed"])
def test_the_delivery_loop_survives_redis_coming_back_empty(
    r: redis_lib.Redis, jsonl: Path, wipe: str
) -> None:
    stopper = Stopper()
    alerter = build_alerter(
        r,
        AlertSettings(consumer="alert-1"),
        Config(),
        [JsonlReceiver(jsonl)],
        stopping=stopper.is_set,
        block_ms=20,
    )
    loop = threading.Thread(target=cli.run, args=(alerter, stopper), name="alerter-loop")
    loop.start()
    try:
        first, second = make_alert(1), make_alert(2)
        publish(r, first)
        wait_until(lambda: len(jsonl_lines(jsonl)) == 1, timeout=5, what="the first alert")
        if wipe == "flushall":
            r.flushall()
        elif wipe == "route group destroyed":
            r.xgroup_destroy(KEYS.alerts, K.ROUTE_GROUP)
        else:
            r.xgroup_destroy(KEYS.notify("jsonl"), K.DELIVER_GROUP)
        publish(r, second)
        wait_until(lambda: len(jsonl_lines(jsonl)) >= 2, timeout=5, what="an alert after the wipe")
        wait_until(
            lambda: routed(r) and pending(r, "jsonl") == 0,
            timeout=5,
            what="the recreated groups acknowledged",
        )
        assert loop.is_alive()
    finally:
        stopper.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    assert [x["id"] for x in jsonl_lines(jsonl)] == [first.id, second.id]  # the first not again


@pytest.mark.parametrize("header", ["10", "10.0", "Retry-After-as-date"])
def test_receivers_return_retry_after_to_the_alerter(slack: SlackStandin, header: str) -> None:
    now = time.time()
    value = formatdate(now + 10.0, usegmt=True) if header == "Retry-After-as-date" else header
    slack.script(
        Reply(429, "rate_limited", {"Retry-After": value}), Reply(429, "too many", {"Retry-After": value})
    )
    receivers: list[Receiver] = [
        slack_receiver(slack),
        WebhookReceiver(SecretStr(slack.url("/hook")), timeout=5),
    ]
    for receiver in receivers:
        with pytest.raises(DeliveryError) as info:
            receiver.send(note(make_alert(), receiver.name), None, now)
        error = info.value
        assert error.retryable and error.rate_limited and "HTTP 429" in error.message
        assert error.retry_after is not None and 9.0 <= error.retry_after <= 10.0
    assert len(slack.received) == 2  # slack-sdk did not sleep and post again


@pytest.mark.parametrize("header", [None, "soon", "-5", "nan"])
def test_a_429_without_a_usable_retry_after(slack: SlackStandin, header: str | None) -> None:
    slack.script(Reply(429, "rate_limited", {} if header is None else {"Retry-After": header}))
    with pytest.raises(DeliveryError) as info:
        slack_receiver(slack).send(note(make_alert()), None, time.time())
    assert info.value.rate_limited and info.value.retry_after is None
    assert len(slack.received) == 1


# -- secrets -------------------------------------------------------------------------------------


def redis_value(r: redis_lib.Redis, key: str) -> Any:
    kind = r.type(key)
    if kind == "string":
        return r.get(key)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "zset":
        return r.zrange(key, 0, -1, withscores=True)
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
    receivers: list[Receiver] = [
        SlackWebhookReceiver(SecretStr(slack.url(secret)), 2, "sink0", backoff=FAST, server_retries=1),
        SlackWebhookReceiver(SecretStr(closed), 2, "sink1", backoff=FAST),
        WebhookReceiver(SecretStr(closed), 2, "sink2"),
    ]
    alert = make_alert()
    clock = FakeClock(alert.emitted_at)
    alerter = make_alerter(r, receivers, clock=clock)
    publish(r, alert)
    alerter.step()  # sink0: 500, retried in slack-sdk, then 429; the others: connection refused
    clock.now += 3600.0  # past retry_for: the next failure of each receiver is its last
    step_until(
        alerter,
        lambda: all(marker(r, x.name, alert) == "dead" for x in receivers),
        what="every receiver to give up",
    )

    assert [x.status for x in slack.received] == [500, 429, 400]  # 400: not retryable, dead
    assert "s3cr3t" not in caplog.text
    assert all("s3cr3t" not in rec.getMessage() for rec in caplog.records)
    assert "<redacted>" in caplog.text  # the SDK's "Going to retry the same request: POST <url>"
    assert any(rec.levelno == logging.ERROR for rec in caplog.records)
    assert r.keys(KEYS.pace("*"))  # the pace keys name a hash of the URL, not the URL
    assert "s3cr3t" not in redis_dump(r)
    assert "s3cr3t" not in repr(receivers) and all("s3cr3t" not in x.channel for x in receivers)


# -- receivers -----------------------------------------------------------------------------------


def test_http_webhook_posts_the_alert_json(slack: SlackStandin) -> None:
    receiver = WebhookReceiver(SecretStr(slack.url("/hook")), timeout=5)
    alert = make_alert(labels={"desk": "asia"})
    assert receiver.send(note(alert, "webhook"), None, 1_700_000_100.0) is None
    [post] = slack.received
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Idempotency-Key"] == alert.id
    assert post.json() == {**alert.model_dump(mode="json"), "delivered_at": 1_700_000_100.0}


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (404, False), (429, True), (503, True)])
def test_http_webhook_errors(slack: SlackStandin, status: int, retryable: bool) -> None:
    slack.script(Reply(status, "no"))
    with pytest.raises(DeliveryError) as info:
        WebhookReceiver(SecretStr(slack.url("/hook")), timeout=5).send(
            note(make_alert(), "webhook"), None, 0.0
        )
    assert info.value.retryable is retryable and f"HTTP {status}" in info.value.message


def test_http_webhook_connection_refused_is_retryable() -> None:
    receiver = WebhookReceiver(SecretStr(f"http://127.0.0.1:{free_port()}/hook"), timeout=2)
    with pytest.raises(DeliveryError) as info:
        receiver.send(note(make_alert(), "webhook"), None, 0.0)
    assert info.value.retryable


def test_console_receiver_is_readable() -> None:
    out = io.StringIO()
    ConsoleReceiver(stream=out).send(note(make_alert(7, state="resolved"), "console"), None, 0.0)
    text = out.getvalue()
    assert text.startswith("[RESOLVED] warning low_balance account=acct-7")
    assert "Low balance on acct-7" in text and "12.5 USDT" in text


def test_build_receivers_from_settings(tmp_path: Path) -> None:
    settings = AlertSettings(
        console=True,
        alerts_jsonl=tmp_path / "a.jsonl",
        slack_webhook_url=SecretStr("https://hooks.example.invalid/x"),
        webhook_url=SecretStr("http://127.0.0.1:9/hook"),
    )
    names = ["console", "jsonl", "slack", "webhook"]
    assert [x.name for x in legacy_receivers(settings)] == names
    assert [x.channel for x in legacy_receivers(settings)] == ["", "", "", ""]  # unpaced, as before
    assert [x.name for x in cli.receivers_of(Config(), settings)] == names  # no route: the settings'
    assert legacy_receivers(AlertSettings()) == []
    with pytest.raises(ValueError, match="http") as info:
        legacy_receivers(AlertSettings(webhook_url=SecretStr("file:///etc/passwd")))
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


def told(r: redis_lib.Redis, receiver: str, alerts: list[Alert]) -> int:
    """How many of ``alerts`` the receiver has a ``sent`` marker for."""
    return sum(marker(r, receiver, a) == "sent" for a in alerts)


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
        # one loop per receiver: JSONL got everything, Slack's loop stopped after the post in hand
        assert len(slack.ok) == 1 and told(r, "slack", alerts) == 1
        assert routed(r) and pending(r, "jsonl") == 0 and told(r, "jsonl", alerts) == len(alerts)
        assert r.xlen(KEYS.notify("slack")) == len(alerts)  # one notice per alert, the rest waiting

        proc = start_alerter(env, log)
        wait_until(
            lambda: told(r, "slack", alerts) == len(alerts) or proc.poll() is not None,
            what="the rest after the restart",
        )
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert pending(r, "slack") == 0
    posted = Counter(post.json()["text"].splitlines()[0] for post in slack.ok)
    assert sorted(posted.values()) == [1] * len(alerts)
    assert Counter(x["id"] for x in jsonl_lines(jsonl)) == Counter(a.id for a in alerts)
    output = log.read_text()
    assert "received SIGTERM" in output and "standin-secret-token" not in output


def test_a_hanging_slack_never_delays_the_other_receivers(
    redis_url: str, r: redis_lib.Redis, slack: SlackStandin, jsonl: Path, tmp_path: Path
) -> None:
    """The real process: Slack takes 4 s per post (as a hung endpoint does until its timeout),
    yet every alert reaches the JSONL receiver at once, and Slack still gets each one exactly once."""
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
    alerter = make_alerter(r, [slack_receiver(slack, server_retries=0)], clock=clock)
    publish(r, stale)
    alerter.step()
    assert pending(r, "slack") == 1 and not r.exists(KEYS.dead)
    clock.now += 3599.0
    step_until(alerter, lambda: len(slack.received) >= 2, what="a probe just inside the window")
    assert not r.exists(KEYS.dead) and marker(r, "slack", stale) is None
    clock.now += 1.0
    step_until(alerter, lambda: bool(dead_entries(r)), what="the dead letter an hour after the start")
    assert marker(r, "slack", stale) == "dead"


def test_a_full_batch_leaves_the_router_and_the_delivery_loop_behind(r: redis_lib.Redis, jsonl: Path) -> None:
    alerter = make_alerter(r, [JsonlReceiver(jsonl)])
    router, delivery = alerter.router, alerter.deliveries[0]
    router.batch = delivery.batch = 2
    for n in (1, 2, 3):
        publish(r, make_alert(n))
    router.step()
    assert router.behind  # 2 of 3 read: its loop does not wait out the batch window
    router.step()
    assert not router.behind
    delivery.step()
    assert delivery.behind and len(jsonl_lines(jsonl)) == 2
    delivery.step()
    assert not delivery.behind and len(jsonl_lines(jsonl)) == 3
