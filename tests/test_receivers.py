"""The console, JSONL, webhook and Slack-webhook receivers (real files, real HTTP to the stand-in),
and building receivers from the configuration and from the legacy settings."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from alerter import layout
from alerter.receivers import (
    ConsoleReceiver,
    JsonlReceiver,
    SlackWebhookReceiver,
    WebhookReceiver,
    build_receiver,
    legacy_receivers,
)
from alerter.sinks import (
    DeliveryError,
    SlackWebhookSink,
    alert_record,
    format_console,
    slack_message,
)
from alerter.slackbot import SlackBotReceiver
from shared.config import Receiver as ReceiverConfig
from shared.settings import AlertSettings
from tests.slack_standin import TOKEN, Reply, SlackStandin
from tests.test_layout import GROUP_KEY, group, make_alert

NOW = 1_700_000_100.0
FAST = FixedValueRetryIntervalCalculator(0.05)
SECRET_PATH = "/services/T0000TEST/B0000TEST/s3cr3t"


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin(min_interval=0.0) as standin:
        yield standin


def slack_receiver(standin: SlackStandin) -> SlackWebhookReceiver:
    return SlackWebhookReceiver(SecretStr(standin.url(SECRET_PATH)), 5, "slack", backoff=FAST)


def failure(receiver: WebhookReceiver | SlackWebhookReceiver, alerts_n: int = 1) -> DeliveryError:
    n = group([make_alert(i) for i in range(1, alerts_n + 1)])
    with pytest.raises(DeliveryError) as caught:
        receiver.send(n, None, NOW)
    return caught.value


# -- console and jsonl ---------------------------------------------------------------------------


def test_console_writes_the_new_alerts_in_order_or_all_on_a_repeat() -> None:
    out = io.StringIO()
    receiver = ConsoleReceiver(stream=out)
    a1, a2, a3 = make_alert(1), make_alert(2), make_alert(3, state="resolved")
    assert receiver.send(group([a1, a2, a3], new=[a3, a2]), None, NOW) is None
    assert out.getvalue() == format_console(a3) + format_console(a2)
    out.seek(0), out.truncate()
    receiver.send(group([a1, a2], new=[], repeat=True), None, NOW)
    assert out.getvalue() == format_console(a1) + format_console(a2)
    assert (receiver.name, receiver.channel) == ("console", "")


def test_console_failure_is_retryable() -> None:
    out = io.StringIO()
    out.close()
    with pytest.raises(DeliveryError) as caught:
        ConsoleReceiver(stream=out).send(group([make_alert(1)]), None, NOW)
    assert caught.value.retryable


def test_jsonl_appends_one_record_per_alert_with_the_group_key(tmp_path: Path) -> None:
    path = tmp_path / "out" / "alerts.jsonl"
    receiver = JsonlReceiver(path, "archive")
    a1, a2 = make_alert(1), make_alert(2)
    receiver.send(group([a1, a2]), None, NOW)
    receiver.send(group([a1, a2], new=[], repeat=True), None, NOW + 1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [(a1, NOW), (a2, NOW), (a1, NOW + 1), (a2, NOW + 1)]
    assert lines == [{**alert_record(a, t), "group_key": GROUP_KEY} for a, t in expected]
    receiver.send(group([a1], new=[]), None, NOW)  # nothing to post: nothing written
    assert len(path.read_text().splitlines()) == 4


def test_jsonl_unwritable_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        JsonlReceiver(tmp_path).send(group([make_alert(1)]), None, NOW)  # a directory
    assert caught.value.retryable and str(tmp_path) in caught.value.message


# -- webhook -------------------------------------------------------------------------------------


def test_webhook_posts_each_alert_as_today(slack: SlackStandin) -> None:
    receiver = WebhookReceiver(SecretStr(slack.url("/hook")), 5, "ops")
    a1, a2 = make_alert(1), make_alert(2, state="resolved")
    assert receiver.send(group([a1, a2]), None, NOW) is None
    assert [p.json() for p in slack.received] == [alert_record(a1, NOW), alert_record(a2, NOW)]
    assert [p.headers["Idempotency-Key"] for p in slack.received] == [a1.id, a2.id]
    assert (receiver.name, receiver.channel) == ("ops", "")


def test_webhook_failing_midway_raises_and_the_retry_repeats_the_key(slack: SlackStandin) -> None:
    receiver = WebhookReceiver(SecretStr(slack.url("/hook")), 5)
    slack.script(Reply(200), Reply(503, "busy"))
    n = group([make_alert(1), make_alert(2)])
    with pytest.raises(DeliveryError) as caught:
        receiver.send(n, None, NOW)
    assert caught.value.retryable and "HTTP 503" in caught.value.message
    receiver.send(n, None, NOW)  # the pipeline's retry: the first alert again, same key
    keys = [p.headers["Idempotency-Key"] for p in slack.received]
    assert keys == [n.alerts[0].id, n.alerts[1].id, n.alerts[0].id, n.alerts[1].id]


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after"),
    [(Reply(404, "no"), False, None), (Reply(429, "slow", {"Retry-After": "7"}), True, 7.0)],
)
def test_webhook_errors(
    slack: SlackStandin, reply: Reply, retryable: bool, retry_after: float | None
) -> None:
    slack.script(reply)
    error = failure(WebhookReceiver(SecretStr(slack.url("/hook")), 5))
    assert (error.retryable, error.retry_after) == (retryable, retry_after)


# -- slack webhook -------------------------------------------------------------------------------


def test_slack_webhook_single_alert_is_exactly_todays_message(slack: SlackStandin) -> None:
    alert = make_alert(1, text="Balance <low> & falling")
    SlackWebhookSink(SecretStr(slack.url(SECRET_PATH)), 5).deliver(alert, NOW)
    receiver = slack_receiver(slack)
    receiver.send(group([make_alert(2), alert], new=[alert]), None, NOW)  # one new alert
    receiver.send(group([alert], new=[], repeat=True), None, NOW)  # a route repeat of one alert
    legacy, new, repeat = slack.received
    assert new.body == legacy.body == repeat.body
    text, blocks = slack_message(alert)
    assert new.json()["text"] == text and new.json()["blocks"] == blocks


def test_slack_webhook_several_alerts_are_one_group_message(slack: SlackStandin) -> None:
    n = group([make_alert(i) for i in range(1, 13)])
    assert slack_receiver(slack).send(n, None, NOW) is None
    [post] = slack.received
    text, blocks = layout.group_message(n, thread=False)
    assert post.json()["text"] == text and post.json()["blocks"] == blocks
    assert blocks[0]["text"]["text"] == "[FIRING 12] delta"


def test_slack_webhook_channel_is_a_hash_never_the_url(slack: SlackStandin) -> None:
    receiver = slack_receiver(slack)
    other = SlackWebhookReceiver(SecretStr(slack.url("/services/T1/B1/other")), 5)
    assert receiver.channel.startswith("webhook:") and "s3cr3t" not in receiver.channel
    assert receiver.channel != other.channel and receiver.channel == slack_receiver(slack).channel
    assert "s3cr3t" not in repr(receiver)


def test_slack_webhook_rate_limit_and_refusal(slack: SlackStandin) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "12"}), Reply(404, "no_service"))
    limited = failure(slack_receiver(slack), 2)
    assert (limited.retryable, limited.rate_limited, limited.retry_after) == (True, True, 12.0)
    gone = failure(slack_receiver(slack))
    assert not gone.retryable and "no_service" in gone.message and "s3cr3t" not in gone.message


# -- building ------------------------------------------------------------------------------------


def test_build_receiver_for_each_kind(tmp_path: Path, slack: SlackStandin) -> None:
    env = {"HOOK": slack.url("/hook"), "SLACK_HOOK": slack.url(SECRET_PATH), "BOT": TOKEN}
    configs = {
        "out": {"console": None},
        "archive": {"jsonl": {"path": str(tmp_path / "a.jsonl")}},
        "ops": {"webhook": {"url_env": "HOOK"}},
        "legacy": {"slack_webhook": {"url_env": "SLACK_HOOK"}},
        "desk": {
            "slack_bot": {"token_env": "BOT", "channel": slack.channel("desk"), "api_url": slack.api_url()}
        },
    }
    built = {
        name: build_receiver(name, ReceiverConfig.model_validate(raw), env) for name, raw in configs.items()
    }
    kinds = [ConsoleReceiver, JsonlReceiver, WebhookReceiver, SlackWebhookReceiver, SlackBotReceiver]
    assert [type(r) for r in built.values()] == kinds
    assert all(r.name == name for name, r in built.items())
    assert built["desk"].channel == slack.channel("desk")
    ref = built["desk"].send(group([make_alert(1)]), None, NOW)  # the bot really reaches the stand-in
    assert ref is not None and [m.ts for m in slack.messages("desk")] == [ref.ts]


def test_build_receiver_names_an_unset_secret(slack: SlackStandin) -> None:
    config = ReceiverConfig.model_validate({"slack_bot": {"token_env": "MX_BOT_TOKEN", "channel": "C1"}})
    with pytest.raises(ValueError, match=r"receivers\.desk\.slack_bot\.token_env: .*MX_BOT_TOKEN"):
        build_receiver("desk", config, {"MX_BOT_TOKEN": ""})
    hook = ReceiverConfig.model_validate({"webhook": {"url_env": "HOOK"}})
    with pytest.raises(ValueError, match="http") as caught:
        build_receiver("ops", hook, {"HOOK": "file:///etc/s3cr3t"})
    assert "s3cr3t" not in str(caught.value)


def test_legacy_receivers_are_named_and_ordered_as_the_sinks(tmp_path: Path) -> None:
    settings = AlertSettings(
        console=True,
        alerts_jsonl=tmp_path / "a.jsonl",
        slack_webhook_url=SecretStr("https://hooks.example.invalid/x"),
        webhook_url=SecretStr("http://127.0.0.1:9/hook"),
    )
    names = [r.name for r in legacy_receivers(settings)]
    assert names == ["console", "jsonl", "slack", "webhook"]
    kinds = [ConsoleReceiver, JsonlReceiver, SlackWebhookReceiver, WebhookReceiver]
    assert [type(r) for r in legacy_receivers(settings)] == kinds
    assert legacy_receivers(AlertSettings()) == []
    only_jsonl = legacy_receivers(AlertSettings(alerts_jsonl=tmp_path / "b.jsonl"))
    assert [r.name for r in only_jsonl] == ["jsonl"]


def test_the_legacy_jsonl_sink_writes_the_lines_it_always_wrote(tmp_path: Path) -> None:
    [sink] = legacy_receivers(AlertSettings(alerts_jsonl=tmp_path / "a.jsonl"))
    alert = make_alert(1)
    sink.send(group([alert]), None, 1_700_000_000.0)
    [line] = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert line == alert_record(alert, 1_700_000_000.0)
