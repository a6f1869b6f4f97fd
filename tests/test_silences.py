"""Silences in Redis (real redis-server) and ``monitorx silence`` as an operator runs it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import redis

from monitorx.cli import main
from shared.config import parse_duration
from shared.keys import Keys
from shared.silences import SILENCE_RETENTION, Silence, SilenceStore, format_duration
from tests.helpers import free_port

T0 = 1_790_000_000.0
HOUR = 3600.0
DAY = 24 * HOUR
DELTA = {"check": "delta", "account": "BINANCE-AAZ12-UM", "venue": "binance", "severity": "warning"}
OKX = {"check": "okx_hedge", "account": "OKX-AAZ-TRADING", "venue": "okx", "severity": "critical"}


@pytest.fixture
def store(r: redis.Redis) -> SilenceStore:
    return SilenceStore(r, Keys())


def by_id(s: Silence) -> str:
    """Order of silences created at the same time."""
    return s.id


def add(store: SilenceStore, *matchers: str, hours: float = 2, now: float = T0) -> Silence:
    return store.add(matchers, hours * HOUR, "exchange maintenance", "alice", now, DAY)


# --- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0h", 0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "1.5h", "2 h", "1h 30m", "2hours"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "1m30s"), (86400, "1d"), (93784, "1d2h3m4s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- the store ---------------------------------------------------------------------------


def test_add_stores_one_hash_entry_with_canonical_matchers(store: SilenceStore, r: redis.Redis) -> None:
    s = add(store, "account=~BINANCE-.*", " check = delta ")
    assert s.matchers == ('account=~"BINANCE-.*"', 'check="delta"')
    assert (s.starts_at, s.ends_at, s.created_at) == (T0, T0 + 2 * HOUR, T0)
    assert (s.reason, s.by) == ("exchange maintenance", "alice")
    assert r.hkeys("mx:silences") == [s.id]
    assert Silence.model_validate_json(r.hget("mx:silences", s.id)) == s  # type: ignore[arg-type]
    assert store.get(s.id) == s
    assert store.list(T0) == [s]


def test_ids_are_unique(store: SilenceStore) -> None:
    ids = {add(store, "check=delta").id for _ in range(20)}
    assert len(ids) == 20


def test_the_prefix_is_respected(r: redis.Redis) -> None:
    SilenceStore(r, Keys("other:")).add(["check=delta"], HOUR, "why", "me", T0, DAY)
    assert r.keys("*") == ["other:silences"]


@pytest.mark.parametrize(
    ("matchers", "duration", "reason", "by", "problem"),
    [
        ([], HOUR, "why", "me", "at least one matcher"),
        ("check=delta", HOUR, "why", "me", "not one string"),
        (["check=delta", "not a matcher"], HOUR, "why", "me", "bad matcher 'not a matcher'"),
        (['account=~"("'], HOUR, "why", "me", "invalid regular expression"),
        (['desk=""'], HOUR, "why", "me", "would silence every alert"),
        (['desk=~".*"', 'team=""'], HOUR, "why", "me", "would silence every alert"),
        (["check=delta"], 0, "why", "me", "more than 0"),
        (["check=delta"], -HOUR, "why", "me", "more than 0"),
        (["check=delta"], float("nan"), "why", "me", "more than 0"),
        (["check=delta"], DAY + 1, "why", "me", "at most 1d"),
        (["check=delta"], HOUR, "", "me", "a reason is required"),
        (["check=delta"], HOUR, "  \n", "me", "a reason is required"),
        (["check=delta"], HOUR, "why", " ", "author"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(
    store: SilenceStore,
    r: redis.Redis,
    matchers: list[str],
    duration: float,
    reason: str,
    by: str,
    problem: str,
) -> None:
    with pytest.raises(ValueError) as caught:
        store.add(matchers, duration, reason, by, T0, DAY)
    assert problem in str(caught.value)
    assert r.exists("mx:silences") == 0


def test_the_maximum_duration_itself_is_allowed(store: SilenceStore) -> None:
    assert store.add(["check=delta"], DAY, "why", "me", T0, DAY).ends_at == T0 + DAY


def test_a_silence_with_one_value_requiring_matcher_is_accepted(store: SilenceStore) -> None:
    s = store.add(['desk=""', "check!=stale_data"], HOUR, "why", "me", T0, DAY)
    assert store.silencing(DELTA, T0) == [s]


def test_silencing_needs_every_matcher_to_match(store: SilenceStore) -> None:
    binance = add(store, "venue=binance")
    delta_okx = add(store, "check=delta", "venue=okx")
    critical = add(store, "severity=critical")
    assert store.silencing(DELTA, T0 + 1) == [binance]
    assert store.silencing(OKX, T0 + 1) == [critical]
    assert store.silencing({**DELTA, "venue": "okx"}, T0 + 1) == [delta_okx]
    assert store.silencing({**OKX, "check": "delta"}, T0 + 1) == sorted([delta_okx, critical], key=by_id)
    assert store.silencing({"check": "feed_down"}, T0 + 1) == []
    active = store.active(T0 + 1)
    assert {s.id for s in active} == {binance.id, delta_okx.id, critical.id}
    assert [s for s in active if s.mutes(OKX, T0 + 1)] == [critical]


def test_a_silence_is_active_from_its_start_until_its_end(store: SilenceStore) -> None:
    s = add(store, "check=delta", hours=2)
    assert store.silencing(DELTA, T0 - 1) == []
    assert s.state(T0 - 1) == "pending"
    assert store.silencing(DELTA, T0) == [s]
    assert store.silencing(DELTA, T0 + 2 * HOUR - 0.001) == [s]
    assert store.silencing(DELTA, T0 + 2 * HOUR) == []  # the alert is delivered from its end on
    assert s.state(T0 + 2 * HOUR) == "expired"
    assert store.list(T0 + 2 * HOUR) == []
    assert store.list(T0 + 2 * HOUR, include_expired=True) == [s]


def test_a_silence_is_seen_at_once_by_every_alerter(redis_url: str) -> None:
    operator = SilenceStore(redis.Redis.from_url(redis_url, decode_responses=True), Keys())
    alerters = [SilenceStore(redis.Redis.from_url(redis_url, decode_responses=True), Keys()) for _ in "ab"]
    assert all(a.silencing(DELTA, T0) == [] for a in alerters)
    s = add(operator, "account=BINANCE-AAZ12-UM")
    assert all(a.silencing(DELTA, T0) == [s] for a in alerters)
    assert operator.expire(s.id, T0 + 60)
    assert all(a.silencing(DELTA, T0 + 60) == [] for a in alerters)


def test_expire_ends_a_silence_now_and_is_idempotent(store: SilenceStore) -> None:
    s = add(store, "check=delta")
    assert store.expire(s.id, T0 + 600) is True
    ended = store.get(s.id)
    assert ended is not None and ended.ends_at == T0 + 600 and ended.starts_at == T0
    assert store.silencing(DELTA, T0 + 599) == [ended]
    assert store.silencing(DELTA, T0 + 600) == []
    assert store.expire(s.id, T0 + 700) is False
    assert store.get(s.id) == ended  # a second expire changes nothing
    assert store.expire("no-such-id", T0) is False
    assert store.list(T0 + 600) == []
    assert store.list(T0 + 600, include_expired=True) == [ended]


def test_expiring_a_pending_silence_makes_it_expired(store: SilenceStore) -> None:
    s = add(store, "check=delta", now=T0 + HOUR)
    assert store.expire(s.id, T0) is True
    ended = store.get(s.id)
    assert ended is not None and ended.starts_at == ended.ends_at == T0
    assert ended.state(T0) == "expired"
    assert store.silencing(DELTA, T0 + HOUR) == []


def test_expired_silences_are_dropped_after_the_retention(store: SilenceStore, r: redis.Redis) -> None:
    old = add(store, "check=delta", hours=1)
    live = add(store, "check=delta", hours=24)
    end = old.ends_at
    assert store.list(end + SILENCE_RETENTION - 1, include_expired=True) == sorted([old, live], key=by_id)
    assert r.hlen("mx:silences") == 2
    assert store.list(end + SILENCE_RETENTION, include_expired=True) == [live]
    assert r.hkeys("mx:silences") == [live.id]
    later = add(store, "check=delta", now=live.ends_at + SILENCE_RETENTION)  # add drops too
    assert r.hkeys("mx:silences") == [later.id]


def test_list_is_ordered_oldest_first(store: SilenceStore) -> None:
    second = add(store, "check=delta", now=T0 + 5)
    first = add(store, "check=delta", now=T0)
    assert store.list(T0 + 10) == [first, second]


def test_a_malformed_entry_mutes_nothing_and_breaks_nothing(
    store: SilenceStore, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = add(store, "check=delta")
    r.hset("mx:silences", "junk", "{not json")
    r.hset("mx:silences", "bad-matcher", good.model_dump_json().replace('check=\\"delta\\"', "check delta"))
    with caplog.at_level(logging.WARNING, logger="shared.silences"):
        assert store.silencing(DELTA, T0) == [good]
        assert store.list(T0) == [good]
        assert store.get("junk") is None
    assert "ignoring malformed silence junk" in caplog.text
    assert "ignoring malformed silence bad-matcher" in caplog.text


def test_a_silence_validates_its_own_fields() -> None:
    base = {"id": "x", "matchers": ["a=b"], "starts_at": T0, "ends_at": T0 + 1, "reason": "r", "by": "b"}
    base["created_at"] = T0
    assert Silence.model_validate(base).matchers == ('a="b"',)
    with pytest.raises(ValueError, match="at least one matcher"):
        Silence.model_validate({**base, "matchers": []})
    with pytest.raises(ValueError, match="ends_at is before starts_at"):
        Silence.model_validate({**base, "ends_at": T0 - 1})
    with pytest.raises(ValueError, match="Extra inputs"):
        Silence.model_validate({**base, "extra": 1})


# --- the command -------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("MONITORX_REDIS_URL", redis_url)
    monkeypatch.setenv("USER", "alice")
    for name in ("MONITORX_PREFIX", "MONITORX_SILENCE_MAX_HOURS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def run(*args: str) -> int:
    """``monitorx silence ...`` in this process; argparse's own exits become the return value."""
    try:
        return main(["silence", *args])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_cli_add_list_expire(
    env: pytest.MonkeyPatch, r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("add", "account=~BINANCE-.*", 'desk!="a b"', "--for", "2h", "--reason", "Binance upgrade") == 0
    out, err = capsys.readouterr()
    silence_id = out.strip()
    assert r.hkeys("mx:silences") == [silence_id]
    stored = SilenceStore(r, Keys()).get(silence_id)
    assert stored is not None and stored.by == "alice" and stored.ends_at - stored.starts_at == 2 * HOUR
    assert "silenced until" in err and 'account=~"BINANCE-.*", desk!="a b"' in err

    assert run("list") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "ENDS"]
    assert row.startswith(silence_id) and " active " in row
    assert re.search(r" \(in (2h|1h59m\d*s?)\) ", row)
    assert row.endswith("Binance upgrade") and " alice " in row

    assert run("expire", silence_id) == 0
    assert capsys.readouterr().out == f"expired {silence_id}\n"
    assert run("list") == 0
    assert capsys.readouterr().out == "no active silences\n"
    assert run("list", "--all") == 0
    assert " expired " in capsys.readouterr().out
    assert run("expire", silence_id) == 0
    assert "had already expired" in capsys.readouterr().out


def test_cli_by_overrides_user(
    env: pytest.MonkeyPatch, r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("add", "check=delta", "--for", "30m", "--reason", "noisy", "--by", "bob") == 0
    stored = SilenceStore(r, Keys()).get(capsys.readouterr().out.strip())
    assert stored is not None and stored.by == "bob" and stored.ends_at - stored.starts_at == 1800


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["add", "check=delta", "--for", "2h"], "--reason"),
        (["add", "check=delta", "--reason", "x"], "--for"),
        (["add", "--for", "2h", "--reason", "x"], "MATCHER"),
        (["add", "check=delta", "--for", "2x", "--reason", "x"], "must be a duration such as 90s"),
        (["add", "check=delta", "--for", "0s", "--reason", "x"], "more than 0"),
        (["add", "check=delta", "--for", "25h", "--reason", "x"], "longer than the maximum, 1d"),
        (["add", "check=delta", "--for", "2h", "--reason", " "], "a reason is required"),
        (["add", "check delta", "--for", "2h", "--reason", "x"], "bad matcher 'check delta'"),
        (["add", 'desk=""', "--for", "2h", "--reason", "x"], "would silence every alert"),
        (["expire", "no-such-id"], "no silence with id 'no-such-id'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_bad_input_exits_2_with_the_reason(
    env: pytest.MonkeyPatch, r: redis.Redis, capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    assert run(*args) == 2
    assert reason in capsys.readouterr().err
    assert r.exists("mx:silences") == 0


def test_cli_without_user_needs_by(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.delenv("USER")
    assert run("add", "check=delta", "--for", "2h", "--reason", "x") == 2
    assert "--by NAME" in capsys.readouterr().err


def test_cli_maximum_comes_from_the_setting(
    env: pytest.MonkeyPatch, r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("MONITORX_SILENCE_MAX_HOURS", "1")
    assert run("add", "check=delta", "--for", "2h", "--reason", "x") == 2
    assert "longer than the maximum, 1h (MONITORX_SILENCE_MAX_HOURS)" in capsys.readouterr().err
    env.setenv("MONITORX_SILENCE_MAX_HOURS", "72")
    assert run("add", "check=delta", "--for", "3d", "--reason", "x") == 0
    assert r.hlen("mx:silences") == 1
    env.setenv("MONITORX_SILENCE_MAX_HOURS", "0")
    assert run("list") == 2
    assert "MONITORX_SILENCE_MAX_HOURS" in capsys.readouterr().err


def test_cli_exits_1_when_redis_is_unreachable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("MONITORX_REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert run("list") == 1
    err = capsys.readouterr().err
    assert "Redis unreachable" in err and "s3cret" not in err
    assert run("add", "check=delta", "--for", "2h", "--reason", "x") == 1
    assert run("add", "check delta", "--for", "2h", "--reason", "x") == 2  # input is checked first
