"""The delivery scenarios of issue 11 against real processes: ``python -m alerter`` started with a
YAML configuration (receivers, route tree, default inhibit rules), alerts written to the alerts
stream as the workers write them (``engine.alerts.make_alert``), Slack played by the stand-in
(``tests/slack_standin.py``) that the alerter's real ``WebClient`` talks to, operators' commands
run as ``python -m monitorx ...``.

What each test reads is what a desk would see: the stand-in's messages (as last updated) and its
log of calls (every ``chat.postMessage``/``chat.update``, with status and time), plus the
alerter's send log and counters in Redis.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from alerter.router import RECHECK
from monitorx.procs import Child
from shared import keys as K
from shared.models import Alert, AlertState, Severity
from tests.faults.harness import Pipelines
from tests.pipeline import KEYS, Pipeline, write_config
from tests.slack_standin import Call, Message, Reply, SlackStandin
from tests.test_delivery_stages import alert as stage_alert

log = logging.getLogger(__name__)

TOKEN_ENV = "SLACK_BOT_TOKEN"
"""The variable the configuration's ``token_env`` names (set to the stand-in's token)."""
HOOK_ENV = "DESK_HOOK_URL"
"""The variable a ``slack_webhook`` or ``webhook`` receiver's ``url_env`` names."""
POST = "chat.postMessage"
UPDATE = "chat.update"
ACCOUNT = re.compile(r"\*account\* `([^`]*)`")
CHECKS = {"low-balance": {"check": "low_balance", "accounts": ["BINANCE-*"]}}
"""The checks of every configuration here (the alerter only reads its delivery sections)."""
STARTUP = 30.0
"""Seconds an alerter may take to start and join its consumer groups on a busy machine."""


# -- configuration and processes ---------------------------------------------------------------------


def bot(slack: SlackStandin, channel: str) -> dict[str, Any]:
    """A ``slack_bot`` receiver posting to ``channel`` (an id) of the stand-in."""
    return {"slack_bot": {"token_env": TOKEN_ENV, "channel": channel, "api_url": slack.api_url()}}


def delivery_config(tmp_path: Path, receivers: Mapping[str, Any], route: Mapping[str, Any]) -> Path:
    """A native YAML configuration with ``receivers`` and ``route``; no ``inhibit_rules``, so the
    default rules apply (stale data inhibits the account's other alerts)."""
    top = {"receivers": dict(receivers), "route": dict(route)}
    return write_config(tmp_path / "delivery.yaml", CHECKS, **top)


def desk_env(slack: SlackStandin, **more: str) -> dict[str, str]:
    return {TOKEN_ENV: slack.token, **more}


def desk_pipeline(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path, route: Mapping[str, Any], **env: str
) -> tuple[Pipeline, str]:
    """A pipeline whose configuration has one ``slack_bot`` receiver, ``desk``, posting to the
    stand-in's channel ``desk``, and ``route``; the pipeline and that channel's id."""
    desk = slack.channel("desk")
    config = delivery_config(tmp_path, {"desk": bot(slack, desk)}, route)
    return pipelines(config, env=desk_env(slack, **env)), desk


def start_alerter(pipeline: Pipeline, consumer: str = "alert-1") -> Child:
    """``python -m alerter`` as consumer ``consumer``; returns once its router and every delivery
    loop read their streams (so an alert written now is routed at once)."""
    child = pipeline.procs.python("alerter", "alerter", [], env=pipeline.env({"MONITORX_CONSUMER": consumer}))
    pipeline.alerter = child
    pipeline.wait(lambda: "delivering to" in pipeline.procs.stderr(child), STARTUP, "the alerter to start")
    receivers = pipeline.procs.stderr(child).split("delivering to: ", 1)[1].split("\n", 1)[0].split(", ")
    streams = [(KEYS.alerts, K.ROUTE_GROUP), *((KEYS.notify(n), K.DELIVER_GROUP) for n in receivers)]
    for stream, group in streams:
        pipeline.wait(lambda: consumer in consumers(pipeline.r, stream, group), STARTUP, f"{stream} read")  # noqa: B023
    return child


def consumers(r: redis_lib.Redis, stream: str, group: str) -> list[str]:
    try:
        found: Any = r.xinfo_consumers(stream, group)
    except redis_lib.ResponseError:  # no such stream or group yet
        return []
    return [str(c["name"]) for c in found]


def kill(pipeline: Pipeline, child: Child) -> None:
    """SIGKILL: no handler runs, nothing is flushed or recorded."""
    pipeline.expect_exit([child])
    child.proc.send_signal(signal.SIGKILL)
    assert child.proc.wait(timeout=10) == -signal.SIGKILL


def monitorx(pipeline: Pipeline, *args: str) -> str:
    """``python -m monitorx ARGS`` with the pipeline's environment; its standard output (it
    must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "monitorx", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=pipeline.env(),
        cwd=pipeline.procs.workdir,
        check=False,
    )
    assert done.returncode == 0, f"monitorx {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


# -- alerts ------------------------------------------------------------------------------------------


def alert(
    account: str, check: str = "delta", state: AlertState = "firing", severity: Severity = "warning"
) -> Alert:
    """An alert as a worker emits it, now (its labels and fingerprint are the engine's)."""
    return stage_alert(account, check, state, severity, at=time.time())


def publish(r: redis_lib.Redis, alerts: Iterable[Alert]) -> float:
    """XADD every alert in one transaction (one storm frame); the time just before it."""
    pipe = r.pipeline(transaction=True)
    for a in alerts:
        pipe.xadd(KEYS.alerts, {"alert": a.model_dump_json()})
    at = time.time()
    pipe.execute()
    return at


# -- what Slack and Redis show -----------------------------------------------------------------------


def calls(slack: SlackStandin, channel: str, method: str = POST) -> list[Call]:
    """The successful calls of ``method`` to ``channel``, oldest first."""
    return [c for c in slack.calls if c.ok and c.method == method and c.channel == channel]


def top(slack: SlackStandin, channel: str) -> list[Message]:
    """The channel's messages (not thread replies), as last updated, oldest first."""
    return [m for m in slack.messages(channel) if m.thread_ts is None]


def accounts(message: Message) -> set[str]:
    """The accounts a group message lists (one section per account)."""
    return {a for b in message.blocks for a in ACCOUNT.findall(str(b.get("text", {}).get("text", "")))}


def header(message: Message) -> str:
    return str(message.blocks[0]["text"]["text"]) if message.blocks else ""


def showing(slack: SlackStandin, channel: str, account: str, check: str | None = None) -> list[Message]:
    """The channel's messages listing ``account`` (in a header naming ``check``, when given)."""
    return [
        m for m in top(slack, channel) if account in accounts(m) and (check is None or check in header(m))
    ]


def resolved(message: Message) -> bool:
    """The message says its incident is over: header and metadata."""
    payload = (message.metadata or {}).get("event_payload", {})
    return header(message).startswith("[RESOLVED]") and payload.get("resolved") is True


def sent(r: redis_lib.Redis, receiver: str | None = None) -> list[dict[str, str]]:
    """Successful notifications (the send log), oldest first."""
    entries: Any = r.xrange(KEYS.sendlog)
    return [f for _, f in entries if f["status"] == "sent" and receiver in (None, f["receiver"])]


def finished(r: redis_lib.Redis, receivers: Iterable[str]) -> bool:
    """Settled, and every group gone: all its alerts resolved and told."""
    return settled(r, receivers) and not r.keys(KEYS.group("*"))


def settled(r: redis_lib.Redis, receivers: Iterable[str]) -> bool:
    """Every alert routed and every notice handled: nothing pending or unread anywhere."""
    streams = [(KEYS.alerts, K.ROUTE_GROUP), *((KEYS.notify(n), K.DELIVER_GROUP) for n in receivers)]
    for stream, name in streams:
        groups: Any = r.xinfo_groups(stream)
        group = next((g for g in groups if g["name"] == name), None)
        last: Any = r.xrevrange(stream, count=1)
        newest = last[0][0] if last else "0-0"
        if group is None or int(group["pending"]) or group["last-delivered-id"] != newest:
            return False
    return True


def group_of(r: redis_lib.Redis, account: str, check: str) -> str | None:
    """The key of the scheduled group holding ``check`` on ``account`` (group_by check, account)."""
    keys: Any = r.zrange(KEYS.groups, 0, -1)
    return next((k for k in keys if f'account="{account}"' in k and f'check="{check}"' in k), None)


def looked_at_later(r: redis_lib.Redis, account: str, check: str, after: float) -> bool:
    """The group of ``check`` on ``account`` was flushed and is scheduled for a later look (not
    due any more): its alert was held back, not sent."""
    key = group_of(r, account, check)
    score = None if key is None else r.zscore(KEYS.groups, key)
    return score is not None and float(score) > after


def announce(request: pytest.FixtureRequest, text: str) -> None:
    """A figure for the reader: logged, and shown on the terminal when pytest runs with ``-s``."""
    log.warning("%s", text)
    if request.config.getoption("capture") == "no":
        reporter: Any = request.config.pluginmanager.getplugin("terminalreporter")
        reporter.write_line(text)


# -- scenarios ---------------------------------------------------------------------------------------

STORM = [f"BINANCE-S{i:02d}-UM" for i in range(12)]
GROUP_WAIT = 2.0


def test_a_storm_is_one_message_within_group_wait_then_the_same_message_turns_resolved(
    pipelines: Pipelines,
    slack: SlackStandin,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: Any,
) -> None:
    route = {"receiver": "desk", "group_by": ["check"], "group_wait": "2s", "group_interval": "1s"}
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route)
    start_alerter(pipeline)

    frame = publish(pipeline.r, (alert(a) for a in STORM))
    [post] = pipeline.wait(lambda: calls(slack, desk), GROUP_WAIT + 5, "the storm's message")
    figure = post.at - frame
    record_property("storm_seconds", round(figure, 3))
    announce(
        request,
        f"storm figure: 12 accounts, group_wait 2s -> one Slack message {figure:.3f} s after the XADD",
    )
    [message] = top(slack, desk)
    assert accounts(message) == set(STORM) and header(message) == "[FIRING 12] delta"
    assert GROUP_WAIT <= figure <= GROUP_WAIT + 1, f"the message came {figure:.2f} s after the storm"

    publish(pipeline.r, (alert(a, state="resolved") for a in STORM))
    pipeline.wait(lambda: resolved(top(slack, desk)[0]), 10, "the message updated to resolved")
    pipeline.wait(lambda: finished(pipeline.r, ["desk"]), 10, "every group resolved and told")
    [message] = top(slack, desk)
    assert accounts(message) == set(STORM) and message.ts == post.ts and message.edits == 1
    assert len(calls(slack, desk)) == 1, "another message was posted"
    assert [c.ts for c in calls(slack, desk, UPDATE)] == [post.ts]


def test_a_channel_throttled_15s_with_retry_after_10_loses_nothing_repeats_nothing_and_keeps_the_pace(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    route = {"receiver": "desk", "group_by": ["check"], "group_wait": "1s", "group_interval": "1s"}
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route)
    start_alerter(pipeline)
    expected: dict[str, set[str]] = {"delta": set(), "low_balance": set(), "margin": set()}

    def wave(*pairs: tuple[str, str]) -> None:
        publish(pipeline.r, (alert(account, check) for check, account in pairs))
        for check, account in pairs:
            expected[check].add(account)

    def limited() -> list[Call]:
        return [c for c in slack.calls if c.status == 429]

    slack.throttle(15, retry_after=10, channel=desk)
    throttled_until = time.time() + 15  # a little after the stand-in's own end of it
    wave(("delta", "OKX-T1-SWAP"), ("delta", "OKX-T2-SWAP"))
    pipeline.wait(limited, 10, "the first 429")
    wave(("low_balance", "OKX-T3-SWAP"), ("low_balance", "OKX-T4-SWAP"), ("delta", "OKX-T5-SWAP"))
    pipeline.wait(lambda: len(limited()) >= 2, 15, "the retry after Retry-After, refused again")
    wave(("margin", "OKX-T6-SWAP"), ("low_balance", "OKX-T7-SWAP"))
    pipeline.wait(lambda: calls(slack, desk), 20, "the first message once the throttle is over")
    wave(("delta", "OKX-T8-SWAP"))  # joins a message already posted: an update

    def complete() -> bool:
        shown = {header(m).split()[-1]: accounts(m) for m in top(slack, desk)}
        return shown == expected and settled(pipeline.r, ["desk"])

    pipeline.wait(complete, 20, "every account in its group's message")
    assert len(calls(slack, desk)) == len(expected), "a group was posted twice"
    assert slack.max_per_second(desk) <= 1
    assert [c for c in limited() if c.at >= throttled_until] == [], "the alerter outran Slack's pace"
    assert [c for c in slack.calls if c.early] == [], "a call came before its Retry-After had passed"


def test_a_silenced_alert_is_posted_once_its_silence_is_expired(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    route = {"receiver": "desk", "group_by": ["check", "account"], "group_wait": "1s", "group_interval": "1s"}
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route)
    start_alerter(pipeline)
    muted, loud = "BINANCE-SIL-UM", "BINANCE-LOUD-UM"
    options = ("--for", "1h", "--reason", "maintenance", "--by", "qa")
    silence = monitorx(pipeline, "silence", "add", f'account="{muted}"', *options).strip()

    frame = publish(pipeline.r, [alert(muted), alert(loud)])
    pipeline.wait(lambda: showing(slack, desk, loud), 10, "the alert nobody silenced")
    pipeline.wait(
        lambda: looked_at_later(pipeline.r, muted, "delta", frame + 5), 10, "the silenced group held"
    )
    assert showing(slack, desk, muted) == [], "a silenced alert was posted"

    assert monitorx(pipeline, "silence", "expire", silence).startswith("expired")
    expired = time.time()
    [message] = pipeline.wait(lambda: showing(slack, desk, muted), RECHECK + 5, "the alert after its silence")
    [post] = [c for c in calls(slack, desk) if c.ts == message.ts]
    assert expired <= post.at <= expired + RECHECK + 2, f"posted {post.at - expired:.1f} s after the expiry"
    assert len(calls(slack, desk)) == 2


def test_stale_data_inhibits_the_accounts_other_alerts_until_it_resolves(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    route = {"receiver": "desk", "group_by": ["check", "account"], "group_wait": "1s", "group_interval": "1s"}
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route)  # the default inhibit rules
    start_alerter(pipeline)
    stale, fresh = "OKX-STALE-SWAP", "OKX-FRESH-SWAP"

    frame = publish(pipeline.r, [alert(stale, "stale_data"), alert(stale), alert(fresh)])
    pipeline.wait(lambda: showing(slack, desk, fresh, "delta"), 10, "the fresh account's alert")
    pipeline.wait(lambda: showing(slack, desk, stale, "stale_data"), 10, "the stale data alert")
    pipeline.wait(
        lambda: looked_at_later(pipeline.r, stale, "delta", frame + 5), 10, "the inhibited group held"
    )
    assert showing(slack, desk, stale, "delta") == [], "an alert on stale figures was posted"

    back = publish(pipeline.r, [alert(stale, "stale_data", "resolved")])
    [message] = pipeline.wait(
        lambda: showing(slack, desk, stale, "delta"), RECHECK + 5, "the alert uninhibited"
    )
    [post] = [c for c in calls(slack, desk) if c.ts == message.ts]
    assert back <= post.at <= back + RECHECK + 2, f"posted {post.at - back:.1f} s after the data came back"
    pipeline.wait(lambda: resolved(showing(slack, desk, stale, "stale_data")[0]), 10, "stale data resolved")
    assert len(calls(slack, desk)) == 3


def test_a_critical_alert_goes_to_the_second_channel_too_with_continue(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    desk, crit = slack.channel("desk"), slack.channel("desk-critical")
    route = {
        "receiver": "desk",
        "group_by": ["check"],
        "group_wait": "1s",
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "crit", "continue": True},
            {"receiver": "desk"},
        ],
    }
    receivers = {"desk": bot(slack, desk), "crit": bot(slack, crit)}
    pipeline = pipelines(delivery_config(tmp_path, receivers, route), env=desk_env(slack))
    start_alerter(pipeline)

    publish(pipeline.r, [alert("OKX-CRIT-SWAP", severity="critical"), alert("OKX-WARN-SWAP", "low_balance")])
    pipeline.wait(lambda: len(top(slack, desk)) == 2 and top(slack, crit), 10, "both channels")
    pipeline.wait(lambda: settled(pipeline.r, ["desk", "crit"]), 10, "every notice handled")
    assert [accounts(m) for m in top(slack, crit)] == [{"OKX-CRIT-SWAP"}]
    assert sorted(sorted(accounts(m)) for m in top(slack, desk)) == [["OKX-CRIT-SWAP"], ["OKX-WARN-SWAP"]]


def test_bot_mode_alerter_killed_between_post_and_record_adopts_its_message_after_restart(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    route = {"receiver": "desk", "group_by": ["check"], "group_wait": "1s"}
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route)
    first = start_alerter(pipeline)
    slack.write_delay = 5.0  # the post is stored, its reply held: the alerter cannot record it

    publish(pipeline.r, (alert(a) for a in STORM[:3]))
    pipeline.wait(lambda: top(slack, desk), 10, "the post stored by Slack")
    assert slack.in_flight == 1, "the reply already left: the kill would not be between post and record"
    kill(pipeline, first)
    slack.write_delay = 0.0
    second = start_alerter(pipeline)
    pipeline.wait(lambda: sent(pipeline.r, "desk") and settled(pipeline.r, ["desk"]), 20, "the record")

    assert len(calls(slack, desk)) == 1, "the message was posted twice"
    [message] = top(slack, desk)
    assert accounts(message) == set(STORM[:3]) and message.edits == 1
    assert "adopted message" in pipeline.procs.stderr(second)


def test_webhook_mode_alerter_killed_between_post_and_record_repeats_at_most_once_and_counts_it(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    receivers = {"desk": {"slack_webhook": {"url_env": HOOK_ENV}}}
    route = {"receiver": "desk", "group_by": ["check"], "group_wait": "1s"}
    env = {HOOK_ENV: slack.url("/services/T0/B0/scenario-hook")}
    pipeline = pipelines(delivery_config(tmp_path, receivers, route), env=env)
    first = start_alerter(pipeline)
    slack.script(Reply(200, delay=4.0))  # Slack takes the post, answers late

    publish(pipeline.r, (alert(a) for a in STORM[:3]))
    pipeline.wait(lambda: slack.in_flight == 1, 10, "the post in Slack's hands")
    kill(pipeline, first)
    pipeline.wait(lambda: slack.ok, 10, "Slack to accept the dead alerter's post")
    start_alerter(pipeline)
    pipeline.wait(lambda: sent(pipeline.r, "desk") and settled(pipeline.r, ["desk"]), 20, "the record")

    posts = slack.ok
    duplicates = len(posts) - 1
    counted = int(pipeline.r.hget(KEYS.counters, K.COUNTER_MAYBE_DUPLICATED) or 0)
    assert 1 <= len(posts) <= 2, f"{len(posts)} posts of one notification"
    assert counted >= duplicates, f"{duplicates} duplicate(s), {counted} counted"
    assert len({p.body for p in posts}) == 1 and all(a.encode() in posts[0].body for a in STORM[:3])


def test_two_replicas_one_killed_mid_storm_lose_nothing_and_repeat_nothing(
    pipelines: Pipelines, slack: SlackStandin, tmp_path: Path
) -> None:
    route = {"receiver": "desk", "group_by": ["check"], "group_wait": "2s", "group_interval": "1s"}
    # a peer takes a dead replica's notice over after 4 s idle: longer than one send (3 s here)
    pipeline, desk = desk_pipeline(pipelines, slack, tmp_path, route, MONITORX_RETRY_IDLE_MS="4000")
    replicas = {name: start_alerter(pipeline, name) for name in ("alert-a", "alert-b")}
    slack.write_delay = 3.0

    publish(pipeline.r, (alert(a) for a in STORM))
    pipeline.wait(lambda: top(slack, desk), GROUP_WAIT + 5, "the storm's post stored by Slack")
    pending: Any = pipeline.r.xpending_range(KEYS.notify("desk"), K.DELIVER_GROUP, "-", "+", 10)
    [owner] = {str(p["consumer"]) for p in pending}
    kill(pipeline, replicas.pop(owner))
    slack.write_delay = 0.0
    [(survivor, child)] = replicas.items()
    pipeline.wait(lambda: sent(pipeline.r, "desk") and settled(pipeline.r, ["desk"]), 20, "the takeover")
    assert len(calls(slack, desk)) == 1, f"posted twice (killed {owner}, {survivor} took over)"
    assert "adopted message" in pipeline.procs.stderr(child)

    publish(pipeline.r, (alert(a, state="resolved") for a in STORM))
    pipeline.wait(lambda: resolved(top(slack, desk)[0]), 10, "the message updated to resolved")
    pipeline.wait(lambda: finished(pipeline.r, ["desk"]), 10, "every group resolved and told")
    [message] = top(slack, desk)
    assert len(calls(slack, desk)) == 1 and accounts(message) == set(STORM)


def test_a_dead_letter_of_a_404_webhook_is_delivered_once_by_dlq_replay_after_the_fix(
    pipelines: Pipelines, tmp_path: Path
) -> None:
    with SlackStandin() as hook:
        hook.default = Reply(404, "no such hook")
        receivers = {"ops": {"webhook": {"url_env": HOOK_ENV}}}
        route = {"receiver": "ops", "group_by": ["check"], "group_wait": "0s"}
        env = {HOOK_ENV: hook.url("/hooks/ops-scenario")}
        pipeline = pipelines(delivery_config(tmp_path, receivers, route), env=env)
        start_alerter(pipeline)

        sent_alert = alert("OKX-DLQ-SWAP")
        publish(pipeline.r, [sent_alert])
        pipeline.wait(lambda: pipeline.r.xlen(KEYS.dead) == 1, 10, "the dead letter")
        hook.default = Reply(200)
        assert "1 dead letter(s) replayed" in monitorx(pipeline, "dlq", "replay", "--all")
        pipeline.wait(lambda: hook.ok, 15, "the replayed alert delivered")
        pipeline.wait(lambda: settled(pipeline.r, ["ops"]), 10, "every notice handled")

        assert [p.status for p in hook.received] == [404, 200]
        assert hook.ok[0].headers.get("Idempotency-Key") == sent_alert.id
        assert pipeline.r.xlen(KEYS.dead) == 0
