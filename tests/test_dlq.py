"""``monitorx dlq`` against a real Redis, real alerters (router and delivery loops, the legacy
default route) and the Slack stand-in as the webhook. A replay goes through the whole pipeline
again: routing, grouping, and dedup against every receiver's delivery markers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from pydantic import SecretStr

from alerter.cli import Alerter, build_alerter
from alerter.notify import Receiver
from alerter.receivers import JsonlReceiver, WebhookReceiver
from alerter.service import ANY_SINK, DEAD, SENT
from monitorx.cli import main
from shared.config import Config
from shared.keys import Keys
from shared.models import Alert
from shared.settings import AlertSettings
from tests.helpers import free_port, wait_until
from tests.slack_standin import Reply, SlackStandin
from tests.test_alerter import make_alert

KEYS = Keys()
GONE = Reply(404, "no_service")


def publish(r: redis_lib.Redis, alert: Alert) -> None:
    r.xadd(KEYS.alerts, {"alert": alert.model_dump_json()})


def dead(r: redis_lib.Redis) -> list[tuple[str, dict[str, str]]]:
    entries: Any = r.xrange(KEYS.dead)
    return [(str(eid), dict(fields)) for eid, fields in entries]


def drained(r: redis_lib.Redis, stream: str) -> bool:
    """Every entry of ``stream`` read and acknowledged by each of its consumer groups."""
    groups: Any = r.xinfo_groups(stream)
    last = r.xinfo_stream(stream)["last-generated-id"]
    return bool(groups) and all(int(g["pending"]) == 0 and g["last-delivered-id"] == last for g in groups)


def settled(r: redis_lib.Redis, alerters: list[Alerter]) -> bool:
    """Every alert routed and every notice handled: the alerts stream and each receiver's notify
    stream drained, and no group waiting to be flushed."""
    for alerter in alerters:
        alerter.step()
    notify: list[str] = [KEYS.notify(d.receiver.name) for d in alerters[0].deliveries]
    return all(drained(r, s) for s in [KEYS.alerts, *notify]) and r.zcard(KEYS.groups) == 0


def step_until(r: redis_lib.Redis, alerters: list[Alerter], what: str) -> None:
    wait_until(lambda: settled(r, alerters), timeout=15, what=what)


class Clock:
    """The alerter's ``clock``, moved by the test (so ``failed_at`` is chosen)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MONITORX_REDIS_URL", redis_url)
    monkeypatch.delenv("MONITORX_PREFIX", raising=False)
    monkeypatch.delenv("MONITORX_SENT_TTL", raising=False)
    return monkeypatch


@pytest.fixture
def hook() -> Iterator[SlackStandin]:
    """The webhook receiver, answering 404 until the test fixes it."""
    with SlackStandin() as standin:
        standin.default = GONE
        yield standin


def alerters(
    r: redis_lib.Redis, receivers: list[Receiver], replicas: int = 1, clock: Any = time.time
) -> list[Alerter]:
    """``replicas`` alerters over the same receivers and the legacy default route, each its own
    consumer in the shared groups (as ``monitorx alert`` runs on several hosts)."""
    options: dict[str, Any] = {"retry_idle_ms": 100, "block_ms": 20, "clock": clock}
    return [
        build_alerter(r, AlertSettings(consumer=f"alert-{n}"), Config(), receivers, **options).start()
        for n in range(replicas)
    ]


def dlq(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``monitorx dlq ...`` in this process: exit status (argparse's exits included), out, err."""
    try:
        code = main(["dlq", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """The table's data rows, split on runs of two spaces or more."""
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["ENTRY", "FAILED", "AT"]
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines]


def webhook(hook: SlackStandin) -> WebhookReceiver:
    return WebhookReceiver(SecretStr(hook.url("/hook")), timeout=5)


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-alerter", "two-replicas"])
def test_replay_after_the_webhook_is_fixed_reaches_only_the_sink_that_gave_up(
    env: pytest.MonkeyPatch,
    r: redis_lib.Redis,
    hook: SlackStandin,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    replicas: int,
) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    running = alerters(r, [JsonlReceiver(jsonl), webhook(hook)], replicas)
    alert = make_alert()
    publish(r, alert)
    step_until(r, running, "the alert handled by every sink")
    [(entry_id, fields)] = dead(r)
    assert fields["sink"] == "webhook" and "404" in fields["error"]
    assert r.get(KEYS.sent("webhook", alert.id)) == DEAD
    assert r.get(KEYS.sent("jsonl", alert.id)) == SENT

    code, out, _ = dlq(capsys, "list")
    assert code == 0
    [row] = rows(out)
    assert row[0] == entry_id and row[2:7] == ["webhook", "low_balance", "acct-1", "firing", "1"]
    assert row[1] == datetime.fromtimestamp(float(fields["failed_at"]), UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert "404" in row[7]

    hook.default = Reply()  # fixed
    code, out, _ = dlq(capsys, "replay", entry_id)
    assert code == 0
    assert f"replayed {entry_id} (low_balance acct-1 firing, alert {alert.id}) to webhook" in out
    assert dead(r) == [] and r.exists(KEYS.sent("webhook", alert.id), KEYS.attempts(alert.id)) == 0
    assert r.get(KEYS.sent("jsonl", alert.id)) == SENT
    replayed: Any = r.xrange(KEYS.alerts)
    assert [Alert.model_validate_json(f["alert"]) for _, f in replayed] == [alert, alert]

    step_until(r, running, "the replayed alert handled by every sink")
    assert [json.loads(p.body)["id"] for p in hook.ok] == [alert.id]  # exactly once, after the fix
    assert len(jsonl.read_text().splitlines()) == 1  # the sink that had delivered: nothing twice
    assert r.get(KEYS.sent("webhook", alert.id)) == SENT and dead(r) == []

    code, _, err = dlq(capsys, "replay", entry_id)
    assert code == 2 and f"no dead-letter entry {entry_id}" in err


def test_replay_of_an_alert_that_still_fires_reaches_the_sink_that_gave_up(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, hook: SlackStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    """The common case after an outage: a balance alert (with its key, as every check's alerts
    have) still firing when the operator replays its dead letter."""
    running = alerters(r, [webhook(hook)])
    alert = make_alert(keys=("USDT",))
    publish(r, alert)
    step_until(r, running, "the alert dead-lettered")
    [(entry_id, _)] = dead(r)
    hook.default = Reply()
    assert dlq(capsys, "replay", entry_id)[0] == 0
    step_until(r, running, "the replayed alert handled")
    assert [json.loads(p.body)["id"] for p in hook.ok] == [alert.id]
    assert r.get(KEYS.sent("webhook", alert.id)) == SENT and dead(r) == []


def test_replaying_a_firing_dead_letter_after_the_alert_resolved_does_not_make_it_fire_again(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, hook: SlackStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    """The webhook gets the replayed alert, as the operator asked, and what fires stays as the
    engine left it: resolved (so, with the default inhibit rule, a replayed ``stale_data`` cannot
    mute its account's alerts for good)."""
    running = alerters(r, [webhook(hook)])
    firing = make_alert(keys=("USDT",))
    publish(r, firing)
    step_until(r, running, "the firing alert dead-lettered")
    [(entry_id, _)] = dead(r)
    hook.default = Reply()
    resolved = make_alert(keys=("USDT",), id="alert-0001-resolved", state="resolved")
    publish(r, resolved)
    step_until(r, running, "the resolution delivered")
    assert r.hlen(KEYS.firing) == 0 and r.get(KEYS.sent("webhook", resolved.id)) == SENT

    assert dlq(capsys, "replay", entry_id)[0] == 0
    step_until(r, running, "the replayed alert handled")
    assert [json.loads(p.body)["id"] for p in hook.ok] == [resolved.id, firing.id]
    assert r.hlen(KEYS.firing) == 0
    assert not r.keys(KEYS.group("*"))  # the incident is over: no group left holding it


def test_list_newest_first_with_a_limit(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, hook: SlackStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq(capsys, "list")[1] == "no dead letters\n"
    running = alerters(r, [webhook(hook)])
    for n in (1, 2, 3):
        publish(r, make_alert(n))
    step_until(r, running, "three dead letters")
    code, out, _ = dlq(capsys, "list")
    assert code == 0 and [row[4] for row in rows(out)] == ["acct-3", "acct-2", "acct-1"]
    code, out, err = dlq(capsys, "list", "--limit", "2")
    assert [row[4] for row in rows(out)] == ["acct-3", "acct-2"] and "2 of 3 dead letters shown" in err


def test_purge_before_removes_only_older_entries(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, hook: SlackStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    running = alerters(r, [webhook(hook)], clock=clock)
    t0 = clock.now
    for n, at in ((1, t0 - 7200), (2, t0 - 3600), (3, t0)):
        clock.now = at
        publish(r, make_alert(n))
        step_until(r, running, f"alert {n} dead-lettered")
    assert len(dead(r)) == 3

    cut = datetime.fromtimestamp(t0 - 5400, UTC).strftime("%Y-%m-%dT%H:%M:%S")  # ISO, no offset: UTC
    code, out, _ = dlq(capsys, "purge", "--before", cut)
    assert code == 0 and out.startswith("purged 1 dead letter(s)")
    assert [json.loads(f["alert"])["account"] for _, f in dead(r)] == ["acct-2", "acct-3"]

    code, out, _ = dlq(capsys, "purge", "--before", str(t0 - 1))  # unix seconds
    assert code == 0 and out.startswith("purged 1 ")
    assert [json.loads(f["alert"])["account"] for _, f in dead(r)] == ["acct-3"]

    for bad in (["purge"], ["purge", "--all"], ["purge", "--before", "yesterday"]):
        code, _, err = dlq(capsys, *bad)
        assert code == 2 and err
    assert len(dead(r)) == 1


def test_invalid_alerts_are_listed_but_never_replayed(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, hook: SlackStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    running = alerters(r, [webhook(hook)])
    r.xadd(KEYS.alerts, {"alert": "{not json"})
    publish(r, make_alert(2))
    step_until(r, running, "both entries dead-lettered")
    [(invalid_id, invalid), (valid_id, _)] = dead(r)
    assert invalid["sink"] == ANY_SINK

    code, out, _ = dlq(capsys, "list")
    by_id = {row[0]: row for row in rows(out)}
    assert by_id[invalid_id][2:6] == [ANY_SINK, "?", "?", "?"] and "unreadable alert" in by_id[invalid_id][7]

    code, _, err = dlq(capsys, "replay", valid_id, invalid_id)  # all or nothing when named
    assert code == 2 and "cannot be replayed" in err
    assert [eid for eid, _ in dead(r)] == [invalid_id, valid_id] and r.xlen(KEYS.alerts) == 2

    hook.default = Reply()
    code, out, err = dlq(capsys, "replay", "--all")
    assert code == 0 and f"replayed {valid_id} " in out and "1 dead letter(s) replayed" in out
    assert f"kept {invalid_id} (unreadable alert, sink *)" in err
    assert [eid for eid, _ in dead(r)] == [invalid_id]
    step_until(r, running, "the replayed alert delivered")
    assert [json.loads(p.body)["account"] for p in hook.ok] == ["acct-2"]
    assert [eid for eid, _ in dead(r)] == [invalid_id]  # not dead-lettered a second time


def test_bad_input_exits_2_and_changes_nothing(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    r.xadd(
        KEYS.dead,
        {
            "alert": make_alert().model_dump_json(),
            "sink": "webhook",
            "error": "x",
            "attempts": 1,
            "failed_at": repr(time.time()),
        },
    )
    before = dead(r)
    cases = [
        (["replay"], "one of the arguments ID --all is required"),
        (["replay", "1-0", "--all"], "not allowed with"),
        (["replay", "abc"], "not a dead-letter entry id"),
        (["replay", before[0][0], "1-0"], "no dead-letter entry 1-0"),
        (["list", "--limit", "0"], "must be a number >= 1"),
        (["purge", "--before", "nan"], "not a finite number"),
        (["frobnicate"], "invalid choice"),
    ]
    for args, reason in cases:
        code, _, err = dlq(capsys, *args)
        assert (code, reason in err) == (2, True), (args, err)
    assert dead(r) == before and r.exists(KEYS.alerts) == 0


def test_exits_1_when_redis_is_unreachable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("MONITORX_REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    for args in (["list"], ["replay", "--all"], ["purge", "--before", "0"]):
        code, _, err = dlq(capsys, *args)
        assert code == 1 and "Redis unreachable" in err and "s3cret" not in err
    assert dlq(capsys, "replay", "abc")[0] == 2  # input is checked first


def test_purge_and_replay_all_page_through_long_streams(
    env: pytest.MonkeyPatch, r: redis_lib.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """More entries than one page (dlqcmd.PAGE): none left behind, none handled twice."""
    pipe = r.pipeline(transaction=False)
    for n in range(1, 1_102):
        record = {"alert": make_alert(n).model_dump_json(), "sink": "webhook", "error": "HTTP 404"}
        pipe.xadd(KEYS.dead, {**record, "attempts": 1, "failed_at": repr(1_000.0 + n)})
    pipe.execute()
    code, out, _ = dlq(capsys, "purge", "--before", "1551")
    assert code == 0 and out.startswith("purged 550 ") and r.xlen(KEYS.dead) == 551
    code, out, _ = dlq(capsys, "replay", "--all")
    assert code == 0 and out.endswith("551 dead letter(s) replayed\n")
    accounts: Any = [json.loads(f["alert"])["account"] for _, f in r.xrange(KEYS.alerts)]
    assert accounts == [f"acct-{n}" for n in range(551, 1_102)] and r.xlen(KEYS.dead) == 0
