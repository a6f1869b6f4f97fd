"""The Slack stand-in against the real ``slack_sdk.WebClient``: what it stores, refuses, paces
and logs, and how WebClient's own retry handlers behave against it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.models.metadata import Metadata

from tests.helpers import wait_until
from tests.slack_standin import TOKEN, Call, Fault, SlackStandin, max_per_window


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


@pytest.fixture
def fast() -> Iterator[SlackStandin]:
    """A stand-in without pacing, for tests about content."""
    with SlackStandin(min_interval=0.0) as standin:
        yield standin


def client(standin: SlackStandin, token: str = TOKEN, **kwargs: Any) -> WebClient:
    """A WebClient with no retry handlers unless given: every failure reaches the caller."""
    return WebClient(
        token=token, base_url=standin.api_url(), retry_handlers=kwargs.pop("retry_handlers", []), **kwargs
    )


def refused(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_auth_test_checks_the_bearer_token(slack: SlackStandin) -> None:
    assert client(slack).auth_test()["bot_id"] == "B0STANDIN"
    assert refused(client(slack, token="xoxb-wrong").auth_test).response["error"] == "invalid_auth"
    assert refused(WebClient(base_url=slack.api_url()).auth_test).response["error"] == "not_authed"
    assert [(c.method, c.status, c.error) for c in slack.calls] == [
        ("auth.test", 200, None),
        ("auth.test", 200, "invalid_auth"),
        ("auth.test", 200, "not_authed"),
    ]


def test_post_stores_the_message_and_returns_channel_id_and_ts(slack: SlackStandin) -> None:
    meta = Metadata(event_type="monitorx_group", event_payload={"group": "g1", "version": 1})
    reply = client(slack).chat_postMessage(
        channel="#alerts", text="fallback", blocks=[section("hi")], metadata=meta
    )
    [stored] = slack.messages("alerts")
    assert reply["channel"] == slack.channel("alerts") == stored.channel and stored.channel.startswith("C")
    assert reply["ts"] == stored.ts and reply["message"]["ts"] == stored.ts
    assert stored.text == "fallback" and stored.blocks == (section("hi"),)
    assert stored.metadata == {"event_type": "monitorx_group", "event_payload": {"group": "g1", "version": 1}}
    [call] = slack.calls
    assert (call.method, call.channel, call.status, call.ts) == (
        "chat.postMessage",
        stored.channel,
        200,
        stored.ts,
    )


def test_update_edits_in_place_and_needs_the_channel_id(fast: SlackStandin) -> None:
    web = client(fast)
    posted = web.chat_postMessage(channel="alerts", text="firing", blocks=[section("12 accounts")])
    channel, ts = posted["channel"], posted["ts"]
    updated = web.chat_update(channel=channel, ts=ts, text="resolved")
    assert updated["ts"] == ts and updated["message"]["text"] == "resolved"
    [stored] = fast.messages(channel)
    assert (stored.text, stored.blocks, stored.edits) == ("resolved", (section("12 accounts"),), 1)
    assert (
        refused(lambda: web.chat_update(channel="alerts", ts=ts, text="x")).response["error"]
        == "channel_not_found"
    )
    assert refused(lambda: web.chat_update(channel=channel, ts="1.000001", text="x")).response["error"] == (
        "message_not_found"
    )
    assert fast.messages(channel)[0].edits == 1


def test_history_is_newest_first_with_metadata_only_on_request(fast: SlackStandin) -> None:
    web = client(fast)
    channel = fast.channel("alerts")
    meta = {"event_type": "monitorx_group", "event_payload": {"group": "g"}}
    ts = [web.chat_postMessage(channel=channel, text=f"m{i}", metadata=meta)["ts"] for i in range(3)]
    plain = web.conversations_history(channel=channel)
    assert [m["ts"] for m in plain["messages"]] == ts[::-1]
    assert all("metadata" not in m for m in plain["messages"])
    full = web.conversations_history(channel=channel, include_all_metadata=True, limit=2)
    assert [m["metadata"] for m in full["messages"]] == [meta, meta] and full["has_more"] is True
    rest = web.conversations_history(channel=channel, cursor=full["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["m0"] and rest["has_more"] is False
    assert [m["ts"] for m in web.conversations_history(channel=channel, oldest=ts[0])["messages"]] == ts[
        :0:-1
    ]
    assert (
        refused(lambda: web.conversations_history(channel="alerts")).response["error"] == "channel_not_found"
    )


def test_malformed_arguments_are_refused_not_dropped(fast: SlackStandin) -> None:
    web = client(fast)
    channel = web.chat_postMessage(channel="alerts", text="m")["channel"]
    bad = refused(lambda: web.conversations_history(channel=channel, oldest="yesterday")).response
    assert (bad.status_code, bad["error"]) == (200, "invalid_arguments")
    blocks = refused(lambda: web.chat_postMessage(channel=channel, text="t", blocks="[not json")).response
    assert blocks["error"] == "invalid_arguments" and len(fast.messages(channel)) == 1
    wait_until(lambda: fast.in_flight == 0, 5, what="every request finished")


def test_threads_and_broadcast_replies(fast: SlackStandin) -> None:
    web = client(fast)
    parent = web.chat_postMessage(channel="alerts", text="group")
    channel = parent["channel"]
    web.chat_postMessage(channel=channel, thread_ts=parent["ts"], text="repeat")
    loud = web.chat_postMessage(channel=channel, thread_ts=parent["ts"], text="worse", reply_broadcast=True)
    history = web.conversations_history(channel=channel)["messages"]
    assert [m["text"] for m in history] == ["worse", "group"]
    assert history[1]["reply_count"] == 2 and history[0]["thread_ts"] == parent["ts"]
    assert [(m.text, m.thread_ts, m.reply_broadcast) for m in fast.messages(channel)] == [
        ("group", None, False),
        ("repeat", parent["ts"], False),
        ("worse", parent["ts"], True),
    ]
    assert loud["message"]["subtype"] == "thread_broadcast"
    no_parent = refused(lambda: web.chat_postMessage(channel=channel, thread_ts="1.000001", text="x"))
    assert no_parent.response["error"] == "thread_not_found"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(
    ("blocks", "text", "error"),
    [
        ([section("x")] * 51, "t", "invalid_blocks"),
        ([section("x" * 3001)], "t", "invalid_blocks"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "t", "invalid_blocks"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "t", "invalid_blocks"),
        (None, "x" * 40_001, "msg_too_long"),
        (None, "", "no_text"),
    ],
)
def test_over_limit_content_is_refused_and_not_stored(
    fast: SlackStandin, blocks: list[dict[str, Any]] | None, text: str, error: str
) -> None:
    web = client(fast)
    answer = refused(lambda: web.chat_postMessage(channel="alerts", text=text, blocks=blocks)).response
    assert (answer.status_code, answer["error"]) == (200, error)
    assert fast.messages("alerts") == []
    if error == "invalid_blocks":
        assert answer["errors"] and "json-pointer:/blocks" in answer["errors"][0]


def test_content_at_the_limits_is_accepted(fast: SlackStandin) -> None:
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}
    blocks = [header, section("x" * 3000)] + [section("y")] * 48
    client(fast).chat_postMessage(channel="alerts", text="x" * 40_000, blocks=blocks)
    assert len(fast.messages("alerts")[0].blocks) == 50


def test_a_write_within_min_interval_is_429_per_channel() -> None:
    with SlackStandin(min_interval=30.0, pace_retry_after=20) as slack:  # wide: no race with the clock
        web = client(slack)
        first = web.chat_postMessage(channel="alerts", text="1")
        limited = refused(
            lambda: web.chat_update(channel=first["channel"], ts=first["ts"], text="2")
        ).response
        assert (limited.status_code, limited["error"]) == (429, "ratelimited")
        assert limited.headers["Retry-After"] == "20"
        web.chat_postMessage(channel="critical", text="other channel is not held up")
        assert refused(lambda: web.chat_postMessage(channel="alerts", text="3")).response.status_code == 429
        statuses = [(c.status, c.early) for c in slack.calls]
        assert statuses == [(200, False), (429, False), (200, False), (429, True)]
        assert slack.max_per_second() == 1 and len(slack.messages()) == 2


def test_pacing_lets_the_next_write_through_after_the_interval() -> None:
    with SlackStandin(min_interval=0.2) as slack:
        web = client(slack)
        first = web.chat_postMessage(channel="alerts", text="1")
        wait_until(lambda: time.time() >= slack.calls[-1].at + 0.25, 2, what="the interval")
        web.chat_update(channel=first["channel"], ts=first["ts"], text="2")
        assert [c.status for c in slack.calls] == [200, 200]


def test_throttle_forces_429_with_its_retry_after_on_one_channel(fast: SlackStandin) -> None:
    fast.throttle(seconds=30, retry_after=10, channel="alerts")
    web = client(fast)
    for _ in range(2):
        answer = refused(lambda: web.chat_postMessage(channel="alerts", text="x")).response
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "10")
    assert web.chat_postMessage(channel="critical", text="y")["ok"]
    assert [(c.status, c.early) for c in fast.calls] == [(429, False), (429, True), (200, False)]
    assert fast.messages("alerts") == [] and len(fast.messages("critical")) == 1


def test_webclient_does_not_retry_a_429_by_default(fast: SlackStandin) -> None:
    """slack-sdk's default retry handlers cover connection errors only."""
    fast.throttle(seconds=30, retry_after=10)
    error = refused(lambda: WebClient(token=TOKEN, base_url=fast.api_url()).auth_test())
    assert error.response.status_code == 429 and error.response.headers["Retry-After"] == "10"
    assert len(fast.calls) == 1


def test_rate_limit_retry_handler_sleeps_retry_after_then_retries_once(fast: SlackStandin) -> None:
    """RateLimitErrorRetryHandler sleeps int(Retry-After) + up to 1 s in the calling thread."""
    fast.throttle(seconds=0.5, retry_after=1)
    start = time.monotonic()
    client(fast, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]).auth_test()
    assert time.monotonic() - start >= 1.0
    assert [(c.status, c.early) for c in fast.calls] == [(429, False), (200, False)]


def test_a_lost_reply_is_posted_twice_by_webclients_default_retry(fast: SlackStandin) -> None:
    """The default ConnectionErrorRetryHandler retries a post whose reply was lost."""
    fast.fail("chat.postMessage", Fault(applied=True, disconnect=True))
    WebClient(token=TOKEN, base_url=fast.api_url()).chat_postMessage(channel="alerts", text="once?")
    assert [m.text for m in fast.messages("alerts")] == ["once?", "once?"]
    assert [c.status for c in fast.calls] == [0, 200]


def test_without_retry_handlers_a_lost_reply_reaches_the_caller(fast: SlackStandin) -> None:
    fast.fail("chat.postMessage", Fault(applied=True, disconnect=True))
    with pytest.raises(ConnectionError):
        client(fast).chat_postMessage(channel="alerts", text="once")
    assert [m.text for m in fast.messages("alerts")] == ["once"]


def test_a_scripted_error_is_not_applied(fast: SlackStandin) -> None:
    fast.fail("chat.postMessage", times=2)
    web = client(fast)
    for _ in range(2):
        assert refused(lambda: web.chat_postMessage(channel="alerts", text="x")).response.status_code == 500
    web.chat_postMessage(channel="alerts", text="x")
    assert len(fast.messages("alerts")) == 1 and [c.status for c in fast.calls] == [500, 500, 200]


def test_write_delay_holds_the_reply_after_storing(fast: SlackStandin) -> None:
    fast.write_delay = 2.0
    done = threading.Event()

    def post() -> None:
        client(fast).chat_postMessage(channel="alerts", text="held")
        done.set()

    threading.Thread(target=post, daemon=True).start()
    wait_until(lambda: fast.messages("alerts"), 5, what="the stored message")
    assert not done.is_set() and fast.calls[-1].status == 200  # stored and logged, reply not sent
    assert done.wait(10)


def test_webhook_posts_are_logged_as_calls(slack: SlackStandin) -> None:
    from urllib.request import urlopen

    with urlopen(slack.url(), data=b'{"text": "hi"}', timeout=5) as answer:
        assert answer.status == 200
    [call] = slack.calls
    assert (call.method, call.channel, call.ok) == (
        "webhook",
        "/services/T0000TEST/B0000TEST/standin-secret-token",
        True,
    )
    assert len(slack.received) == 1 and slack.max_per_second(call.channel) == 1


def test_max_per_window_counts_successful_writes_per_channel() -> None:
    def at(t: float, channel: str = "C1", status: int = 200, method: str = "chat.postMessage") -> Call:
        return Call(t, method, channel, status)

    calls = [
        at(0.0),
        at(0.5),
        at(1.0),
        at(1.2),
        at(1.3, status=429),
        at(1.4, "C2"),
        at(1.45, method="auth.test"),
    ]
    assert max_per_window(calls) == 3  # 0.5, 1.0, 1.2
    assert max_per_window(calls, "C2") == 1
    assert max_per_window(calls, window=0.5) == 2  # 1.0 and 1.2; 0.5 apart is another window
    assert max_per_window([at(0.0), at(1.0), at(2.0)]) == 1
    assert max_per_window([]) == 0
