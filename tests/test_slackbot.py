"""Slack bot mode against the Slack stand-in through the real ``slack_sdk.WebClient``: one message
per incident, updated in place, repeats in its thread, adoption after a lost record, errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from alerter import layout
from alerter.notify import MessageRef, Notification
from alerter.sinks import DeliveryError
from alerter.slackbot import GROUP_EVENT, SlackBotReceiver
from tests.helpers import free_port
from tests.slack_standin import TOKEN, Fault, Message, SlackStandin
from tests.test_layout import GROUP_KEY, group, make_alert, section_texts, storm

NOW = 1_700_000_100.0


@pytest.fixture
def fast() -> Iterator[SlackStandin]:
    """A stand-in without pacing, for tests about content (the receiver does not space either)."""
    with SlackStandin(min_interval=0.0) as standin:
        yield standin


def bot(
    standin: SlackStandin, channel: str = "alerts", token: str = TOKEN, **kwargs: Any
) -> SlackBotReceiver:
    """A receiver for channel ``channel`` (by id unless given as ``#name``)."""
    kwargs.setdefault("write_interval", 0.0 if standin.min_interval == 0 else 1.0)
    ident = channel if channel.startswith("#") else standin.channel(channel)
    return SlackBotReceiver("desk", SecretStr(token), ident, standin.api_url(), timeout=5, **kwargs)


def failure(receiver: SlackBotReceiver, n: Notification, ref: MessageRef | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        receiver.send(n, ref, NOW)
    return caught.value


def only(standin: SlackStandin) -> Message:
    [message] = [m for m in standin.messages("alerts") if m.thread_ts is None]
    return message


def replies(standin: SlackStandin, ts: str) -> list[Message]:
    return [m for m in standin.messages("alerts") if m.thread_ts == ts]


def header(message: Message) -> str:
    return str(message.blocks[0]["text"]["text"])


def payload(message: Message) -> dict[str, Any]:
    assert message.metadata is not None and message.metadata["event_type"] == GROUP_EVENT
    return dict(message.metadata["event_payload"])


def test_first_post_carries_the_group_metadata(fast: SlackStandin) -> None:
    n = group([make_alert(1), make_alert(2, severity="critical")])
    ref = bot(fast).send(n, None, NOW)
    message = only(fast)
    assert (ref.channel, ref.ts) == (fast.channel("alerts"), message.ts)
    assert payload(message) == {"group_key": GROUP_KEY, "version": 1, "resolved": False}
    text, blocks = layout.group_message(n)
    assert (message.text, list(message.blocks)) == (text, blocks)
    assert (
        ref.data["firing"] == sorted(a.fingerprint for a in n.alerts) and ref.data["severity"] == "critical"
    )
    assert [c.method for c in fast.calls] == ["conversations.history", "chat.postMessage"]


def test_changes_update_the_same_message_until_resolved(fast: SlackStandin) -> None:
    receiver = bot(fast)
    a1, a2, a3 = make_alert(1), make_alert(2), make_alert(3)
    ref = receiver.send(group([a1, a2]), None, NOW)
    ref = receiver.send(group([a1, a2, a3], new=[a3], version=2), ref, NOW)
    message = only(fast)
    assert (message.ts, message.edits, header(message)) == (ref.ts, 1, "[FIRING 3] delta")
    assert payload(message) == {"group_key": GROUP_KEY, "version": 2, "resolved": False}
    resolved = [make_alert(i, state="resolved") for i in (1, 2, 3)]
    last = receiver.send(group(resolved, version=3), ref, NOW)
    message = only(fast)
    assert (last.ts, message.edits, header(message)) == (ref.ts, 2, "[RESOLVED] delta")
    assert payload(message)["resolved"] is True and last.data["firing"] == []
    assert len(fast.messages("alerts")) == 1  # no reply: nothing repeated


def test_repeats_go_in_the_thread_at_most_one_write_per_second() -> None:
    with SlackStandin(min_interval=1.0) as slack:  # paced as Slack: a second write within 1 s is a 429
        receiver = bot(slack)
        a1, a2 = make_alert(1), make_alert(2)
        ref = receiver.send(group([a1, a2]), None, NOW)
        again = make_alert(1, event=300)  # a cooldown repeat: same fingerprint, a new event
        ref = receiver.send(group([again, a2], new=[again], version=2), ref, NOW)
        [cooldown] = replies(slack, ref.ts)
        assert not cooldown.reply_broadcast and cooldown.text.startswith(":repeat: *Still firing*")
        assert "BINANCE-AAZ01-UM" in cooldown.text and "BINANCE-AAZ02-UM" not in cooldown.text
        ref = receiver.send(group([again, a2], new=[], repeat=True, version=3), ref, NOW)
        cooldown, route = replies(slack, ref.ts)
        assert "BINANCE-AAZ01-UM" in route.text and "BINANCE-AAZ02-UM" in route.text
        assert only(slack).edits == 2 and payload(only(slack))["version"] == 3
        assert all(c.ok for c in slack.calls), slack.calls
        assert slack.max_per_second() == 1


def test_a_rise_in_severity_is_broadcast(fast: SlackStandin) -> None:
    receiver = bot(fast)
    ref = receiver.send(group([make_alert(1)]), None, NOW)
    worse = make_alert(1, severity="critical", event=300)
    ref = receiver.send(group([worse], new=[worse], version=2), ref, NOW)
    [loud] = replies(fast, ref.ts)
    assert loud.reply_broadcast and loud.text.startswith(":arrow_up: *Severity rose to critical*")
    joined = make_alert(2, severity="critical")  # critical already shown: no broadcast, no reply
    ref = receiver.send(group([worse, joined], new=[joined], version=3), ref, NOW)
    assert len(replies(fast, ref.ts)) == 1 and ref.data["severity"] == "critical"


def test_an_alert_joining_at_a_higher_severity_is_broadcast(fast: SlackStandin) -> None:
    receiver = bot(fast)
    a1 = make_alert(1, severity="info")
    ref = receiver.send(group([a1]), None, NOW)
    joined = make_alert(2, severity="warning")
    ref = receiver.send(group([joined, a1], new=[joined], version=2), ref, NOW)
    [loud] = replies(fast, ref.ts)
    assert loud.reply_broadcast and "BINANCE-AAZ02-UM" in loud.text and "BINANCE-AAZ01-UM" not in loud.text
    web = fast.messages("alerts")
    assert [m.reply_broadcast for m in web] == [False, True]


def test_a_post_whose_record_was_lost_is_adopted_not_posted_again(fast: SlackStandin) -> None:
    receiver = bot(fast)
    n = group([make_alert(1), make_alert(2)])
    first = receiver.send(n, None, NOW)
    grown = group([make_alert(1), make_alert(2), make_alert(3)])  # still the incident's first notification
    again = receiver.send(grown, None, NOW)  # the pipeline never recorded ``first``
    message = only(fast)
    assert (again.channel, again.ts) == (first.channel, first.ts) == (message.channel, message.ts)
    assert message.edits == 1 and header(message) == "[FIRING 3] delta"
    assert [c.method for c in fast.calls].count("chat.postMessage") == 1


def test_a_post_whose_reply_was_lost_is_adopted_on_retry(fast: SlackStandin) -> None:
    receiver = bot(fast)
    n = group([make_alert(1)])
    fast.fail("chat.postMessage", Fault(applied=True, disconnect=True))  # posted, reply lost
    assert failure(receiver, n).retryable
    ref = receiver.send(n, None, NOW)
    assert ref.ts == only(fast).ts and only(fast).edits == 1


def test_a_resolved_incident_is_not_adopted_by_the_next(fast: SlackStandin) -> None:
    receiver = bot(fast)
    old = receiver.send(group([make_alert(1)]), None, NOW)
    receiver.send(group([make_alert(1, state="resolved")], version=2), old, NOW)
    new = receiver.send(group([make_alert(1, event=900)]), None, NOW)  # the group fires again
    messages = [m for m in fast.messages("alerts") if m.thread_ts is None]
    assert new.ts != old.ts and [m.ts for m in messages] == [old.ts, new.ts]
    assert [payload(m)["resolved"] for m in messages] == [True, False]
    other = receiver.send(group([make_alert(2)], key='{}:"desk":{check="other"}'), None, NOW)
    assert other.ts not in (old.ts, new.ts)  # another group's message is never adopted


def test_only_an_incidents_first_notification_looks_for_a_message(fast: SlackStandin) -> None:
    receiver = bot(fast)
    receiver.send(group([make_alert(1)]), None, NOW)
    receiver.send(group([make_alert(1)], version=2), None, NOW)  # no ref past version 1: post
    assert len(fast.messages("alerts")) == 2
    assert [c.method for c in fast.calls].count("conversations.history") == 1


def test_a_deleted_message_is_posted_again(fast: SlackStandin) -> None:
    receiver = bot(fast)
    ref = receiver.send(group([make_alert(1)]), None, NOW)
    fast.fail("chat.update", Fault(status=200, error="message_not_found"))
    new = receiver.send(group([make_alert(1), make_alert(2)], new=[make_alert(2)], version=2), ref, NOW)
    assert new.ts != ref.ts and header(fast.messages("alerts")[-1]) == "[FIRING 2] delta"


def test_a_channel_by_name_posts_without_adoption(
    fast: SlackStandin, caplog: pytest.LogCaptureFixture
) -> None:
    ref = bot(fast, "#alerts").send(group([make_alert(1)]), None, NOW)
    assert ref.channel == fast.channel("alerts") and len(fast.messages("alerts")) == 1
    assert [c.method for c in fast.calls] == ["chat.postMessage"]
    assert "not an id" in caplog.text


def test_eighty_accounts_post_within_limits_with_the_rest_in_the_thread(fast: SlackStandin) -> None:
    receiver = bot(fast)
    n = storm(80)
    ref = receiver.send(n, None, NOW)
    assert all(c.ok for c in fast.calls), [c.error for c in fast.calls]  # the stand-in checks the limits
    message = only(fast)
    shown = len(section_texts(list(message.blocks))) - 1
    thread = replies(fast, ref.ts)
    assert [m.text for m in thread] == layout.overflow_text(n)
    listed = "\n".join(m.text for m in thread)
    for i in range(1, 81):
        assert listed.count(f"BINANCE-AAZ{i:02d}-UM*") == int(i > shown), i
    grown = group(storm(81).alerts, new=storm(81).alerts[-1:], version=2)  # one more left out
    ref = receiver.send(grown, ref, NOW)
    assert [m.text for m in replies(fast, ref.ts)] == [m.text for m in thread] + layout.overflow_text(grown)
    assert "BINANCE-AAZ81-UM" in replies(fast, ref.ts)[-1].text
    again = make_alert(1, event=300)  # a repeat of a shown account; the same accounts left out
    receiver.send(group([again, *grown.alerts[1:]], new=[again], version=3), ref, NOW)
    posted = len(thread) + len(layout.overflow_text(grown))
    assert len(replies(fast, ref.ts)) == posted + 1  # the repeat only, no new list
    assert replies(fast, ref.ts)[-1].text.startswith(":repeat:")


def test_rate_limit_is_retryable_with_retry_after(fast: SlackStandin) -> None:
    fast.throttle(seconds=30, retry_after=10, channel="alerts")
    error = failure(bot(fast), group([make_alert(1)]))
    assert (error.retryable, error.rate_limited, error.retry_after) == (True, True, 10.0)
    assert "HTTP 429" in error.message and fast.messages("alerts") == []


def test_pacing_429_on_the_post_carries_its_retry_after() -> None:
    with SlackStandin(min_interval=30.0, pace_retry_after=20) as slack:
        receiver = bot(slack)
        receiver.send(group([make_alert(1)]), None, NOW)
        error = failure(receiver, group([make_alert(2)], key="other"))
        assert (error.retryable, error.retry_after) == (True, 20.0)
        assert "chat.postMessage" in error.message


def test_invalid_auth_is_permanent_and_never_shows_the_token(
    fast: SlackStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("slack_sdk").setLevel(logging.DEBUG)
    secret = "xoxb-wrong-s3cr3t-token"
    receiver = bot(fast, token=secret)
    error = failure(receiver, group([make_alert(1)]))
    assert not error.retryable and "invalid_auth" in error.message
    assert "s3cr3t" not in error.message and "s3cr3t" not in repr(receiver)
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize(
    ("fault", "retryable"),
    [
        (Fault(status=500, error="internal_error"), True),
        (Fault(status=200, error="service_unavailable"), True),
        (Fault(status=200, error="channel_not_found"), False),
        (Fault(status=200, error="invalid_blocks"), False),
    ],
)
def test_slack_errors(fast: SlackStandin, fault: Fault, retryable: bool) -> None:
    fast.fail("chat.postMessage", fault)
    error = failure(bot(fast), group([make_alert(1)]))
    assert error.retryable is retryable and fault.error in error.message


def test_missing_history_scope_is_permanent_and_says_so(fast: SlackStandin) -> None:
    fast.fail("conversations.history", Fault(status=200, error="missing_scope"))
    error = failure(bot(fast), group([make_alert(1)]))
    assert (
        not error.retryable and "conversations.history" in error.message and "missing_scope" in error.message
    )


def test_an_unknown_channel_is_permanent(fast: SlackStandin) -> None:
    receiver = SlackBotReceiver("desk", SecretStr(TOKEN), "C0NOSUCH", fast.api_url(), write_interval=0)
    error = failure(receiver, group([make_alert(1)]))
    assert not error.retryable and "channel_not_found" in error.message


def test_connection_refused_is_retryable_without_the_token() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/"
    receiver = SlackBotReceiver("desk", SecretStr("xoxb-s3cr3t"), "C0123", url, timeout=2)
    error = failure(receiver, group([make_alert(1)]))
    assert error.retryable and "s3cr3t" not in error.message
