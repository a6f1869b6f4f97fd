"""``monitorx backtest``: a recording replayed offline through the live checks, in virtual time."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from dispatcher.service import Dispatcher
from engine.checks import fmt, low_balance
from engine.plan import Plan, build
from engine.registry import Registry
from engine.state import KeyState, Policy, at_rest, step
from engine.store import RedisStore, evaluate_pair
from ingestor import frames
from ingestor.frames import parse_frame
from monitorx import cli
from monitorx import replay as replay_module
from monitorx.backtest import MAX_JOBS, PARALLEL_BYTES, ProgressBar, default_jobs, main
from monitorx.replay import Fired, Options, Replay, Stats, read_recording
from monitorx.replay_pool import ReplayPool, ShareFailed, stretches
from shared.config import parse
from shared.keys import COUNTER_COALESCED, COUNTER_EVALS, COUNTER_UNCHANGED, Keys
from shared.models import Alert, Snapshot, parse_number
from shared.redisio import Publisher, connect
from simulator.frames import FrameGenerator, Scenario, preset
from tests.golden.recordings import spoilt
from workers.context import Context
from workers.worker import make_worker

BASE = 1_700_000_000.0
"""Unix time of the first frame of the demo recordings (no report slot nearby)."""
LOW, OTHER = "BINANCE-AAZ01-UM", "BINANCE-AAZ02-UM"
DEMO_CONFIG = """
stale_after: 10
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*"]
    params: {thresholds: {USDT: 10000, USDC: 10000, BNB: 3}}
    cooldown: 300
  stale:
    check: stale_data
    accounts: ["BINANCE-*"]
    params: {max_age: 10}
    resolved: true
"""
AGREEMENT_CONFIG = """
stale_after: 10
checks:
  low:
    check: low_balance
    accounts: ["BINANCE-*"]
    cooldown: 300
  margin:
    check: margin_risk
    accounts: ["BINANCE-*"]
    params: {thresholds: {usdt_usdc_ratio_min: 0.6, usdt_usdc_ratio_max: 2.0}}
    cooldown: 10
  delta:
    check: delta
    accounts: ["BINANCE-*"]
    delay: 5
    cooldown: 15
  stale:
    check: stale_data
    accounts: ["BINANCE-*", "BINANCE-AAZ09-UM"]
    params: {max_age: 10}
    cooldown: 12
    resolved: true
"""


def write_recording(
    path: Path, scenario: Scenario, seconds: float, hz: float = 5.0, base: float = BASE, repeat: int = 1
) -> Path:
    """A recording as ``monitorx ingest --record`` writes it; ``repeat`` sends each frame's
    figures ``repeat`` times in a row (a feed resending unchanged figures)."""
    generator = FrameGenerator(scenario)
    with path.open("w", encoding="utf-8") as f:
        for i in range(int(seconds * hz) + 1):
            text = generator.text((i // repeat) * repeat / hz)
            if text is not None:
                f.write(json.dumps({"received_at": base + i / hz, "frame": text}) + "\n")
    return path


def spoil(recording: Path, lines: range, account: str, key: str) -> None:
    """Replace one figure by junk in some lines of a recording."""
    records = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    for i in lines:
        frame = json.loads(records[i]["frame"])
        frame["pos"][account][key] = "junk"
        records[i]["frame"] = json.dumps(frame)
    recording.write_text("".join(json.dumps(rec) + "\n" for rec in records), encoding="utf-8")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def plan_of(text: str) -> Plan:
    return build(parse(text, "test.yaml"), Registry.discover())


def replay(plan: Plan, recording: Path, options: Options | None = None) -> tuple[list[Fired], Stats]:
    engine = Replay(plan, options or Options())
    fired = list(engine.run(read_recording(recording, engine.stats)))
    return fired, engine.stats


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def figure(t: float, account: str, key: str) -> float:
    """A figure of the simulated frame at ``t`` (seconds since start), parsed as the ingestor does."""
    frame = FrameGenerator(preset("demo", accounts=2, okx=False)).frame(t)
    assert frame is not None
    number, _ = parse_number(frame["pos"][account][key])
    assert number is not None
    return number


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """Demo scenario, 2 accounts at 5 Hz for 40 s: low balance from 3 s, no frames from 8 s to 28 s."""
    return write_recording(tmp_path / "demo.jsonl", preset("demo", accounts=2, okx=False), 40)


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "demo.yaml", DEMO_CONFIG)


# ---------------------------------------------------------------- the alerts, exactly


def test_low_balance_and_stale_data_alerts(
    capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path
) -> None:
    code, out, err = run_cli(
        capsys, "--config", str(demo_config), "--recording", str(demo), "--output", "jsonl"
    )
    assert code == 0
    got = [(a["at"], a["check"], a["account"], a["state"], a["text"]) for a in jsonl(out)]
    usdt = fmt.usd(figure(3.0, LOW, "USDTwalletBalance"))
    last = fmt.clock(BASE + 7.8)
    assert got == [
        (
            BASE + 3.0,
            "low_balance",
            LOW,
            "firing",
            f"• USDT wallet balance {usdt} is below the threshold $10,000",
        ),
        *[
            (
                BASE + 20.0,
                "stale_data",
                acc,
                "firing",
                f"No data for {acc} for 12s (limit 10s); last snapshot at {last}.",
            )
            for acc in (LOW, OTHER)
        ],
        *[(BASE + 28.0, "stale_data", acc, "resolved", "Back to normal: data.") for acc in (LOW, OTHER)],
    ]
    assert "101 frames" in err and "5 alerts: low_balance 1, stale_data 4" in err and "frames/s" in err


def test_jsonl_output_has_the_alert_fields(
    capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path
) -> None:
    _, out, _ = run_cli(capsys, "--config", str(demo_config), "--recording", str(demo), "--output", "jsonl")
    rows = jsonl(out)
    assert rows
    for row in rows:
        assert {"at", "check", "account", "state", "text", "instance", "title", "id"} <= row.keys()
        Alert.model_validate({k: v for k, v in row.items() if k != "at"})
    assert {row["instance"] for row in rows} == {"low", "stale"}


def test_table_output(capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path) -> None:
    code, out, _ = run_cli(capsys, "--config", str(demo_config), "--recording", str(demo))
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("TIME (UTC)") and len(lines) == 6
    assert lines[1].split()[:6] == ["2023-11-14", "22:13:23.000", "low_balance", LOW, "firing", "•"]
    assert "No data for BINANCE-AAZ01-UM for 12s" in lines[2]


def test_legacy_delta_fires_after_the_delay_and_repeats_after_the_cooldown(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, legacy_config: Path
) -> None:
    base = datetime(2024, 5, 1, 5, 59, tzinfo=UTC).timestamp()  # the 06:00 report slot at base + 60
    scenario = preset("steady", accounts=2, okx=False, delta_at=10.1)
    recording = write_recording(tmp_path / "delta.jsonl", scenario, 400, hz=4, base=base)
    code, out, _ = run_cli(
        capsys, "--config", str(legacy_config), "--recording", str(recording), "--output", "jsonl"
    )
    assert code == 0
    rows = jsonl(out)
    delta = [(a["at"], a["account"], a["state"]) for a in rows if a["check"] == "delta"]
    # first drifting frame at 10.25 s starts the 60 s delay; cooldown 300 s
    assert delta == [(base + 70.25, OTHER, "firing"), (base + 370.25, OTHER, "firing")]
    frame = FrameGenerator(scenario).frame(70.25)
    assert frame is not None
    legs = frame["pos"][OTHER]
    price = float(legs["BTCUSDTAvg-Price"])
    value = abs(abs(float(legs["BTCUSDT"]) * price) - abs(float(legs["BTCUSDC"]) * price))
    first = next(a["text"] for a in rows if a["check"] == "delta")
    head = f"{OTHER} BTCUSDT / BTCUSDC: delta ${value:.2f} is above the threshold 100 for 60s"
    assert first.splitlines()[0] == head
    # explicit accounts that never report go stale after stale_after (60 s), again after 300 s
    stale = [a["at"] for a in rows if a["check"] == "stale_data" and a["account"] == "BINANCE-AAZ13-UM"]
    assert stale == [base + 60, base + 360]
    reports = [(a["at"], a["observed_at"], a["title"]) for a in rows if a["check"] == "balance_report"]
    assert reports == [(base + 60, base + 60, "Balance report 06:00 UTC")]


# ---------------------------------------------------------------- input problems and options


def test_malformed_lines_and_frames_are_counted_not_fatal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo: Path, demo_config: Path
) -> None:
    lines = demo.read_text(encoding="utf-8").splitlines(keepends=True)
    extra = [
        "this is not JSON\n",
        json.dumps({"received_at": "soon", "frame": "{}"}) + "\n",
        json.dumps({"received_at": BASE + 1.1, "frame": "not json {"}) + "\n",
        json.dumps({"received_at": BASE + 1.3, "frame": json.dumps({"pos": {LOW: 5}})}) + "\n",
        "\n",
    ]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(lines[:6] + extra + lines[6:]), encoding="utf-8")
    args = ("--config", str(demo_config), "--output", "jsonl", "--recording")
    _, clean, _ = run_cli(capsys, *args, str(demo))
    code, out, err = run_cli(capsys, *args, str(broken))
    assert code == 0 and out == clean
    assert "103 frames" in err
    assert "2 malformed lines, 1 malformed frames, 1 quarantined accounts" in err


def test_from_and_until_select_the_frames(
    capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path
) -> None:
    start = datetime.fromtimestamp(BASE + 5, UTC).isoformat()
    until = datetime.fromtimestamp(BASE + 20, UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    code, out, err = run_cli(
        capsys, "--config", str(demo_config), "--recording", str(demo), "--output", "jsonl",
        "--from", start, "--until", until,
    )  # fmt: skip
    assert code == 0
    # the low balance (from 3 s) shows at the first frame inside the window; the pause starts at
    # 8 s and the window ends before frames return, so the replay ends at 7.8 s: nothing is stale
    assert [(a["at"], a["check"]) for a in jsonl(out)] == [(BASE + 5, "low_balance")]
    assert "15 frames (86 outside the window)" in err


def test_tick_option_moves_the_stale_alert(
    capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path
) -> None:
    _, out, _ = run_cli(
        capsys, "--config", str(demo_config), "--recording", str(demo), "--output", "jsonl", "--tick", "7"
    )
    stale = [a["at"] for a in jsonl(out) if a["check"] == "stale_data" and a["state"] == "firing"]
    assert stale == [BASE + 21, BASE + 21]  # ticks at 0, 7, 14, 21 s: the first one past 17.8 s


def test_missing_recording_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_config: Path
) -> None:
    code = cli.main(["backtest", "--config", str(demo_config), "--recording", str(tmp_path / "nope.jsonl")])
    assert code == 1
    assert "recording not found" in capsys.readouterr().err


def test_invalid_config_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path, demo: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", "checks:\n  x:\n    check: no_such_check\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["backtest", "--config", str(config), "--recording", str(demo)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "unknown check 'no_such_check'" in err


def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], demo: Path, demo_config: Path) -> None:
    for bad in (
        ["--from", "yesterday"],
        ["--tick", "0"],
        ["--output", "xml"],
        ["--jobs", "0"],
        ["--jobs", "x"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["--config", str(demo_config), "--recording", str(demo), *bad])
        assert exc.value.code == 2
    assert (
        main(["--config", str(demo_config), "--recording", str(demo), "--from", "20", "--until", "10"]) == 2
    )


# ---------------------------------------------------------------- agreement with the live runner


def live_tick(
    r: redis_lib.Redis, keys: Keys, plan: Plan, latest: dict[str, Snapshot], now: float, t0: float
) -> None:
    """What a dispatcher tick at ``now`` enqueues, run at once (``Dispatcher.tick``)."""
    for bound in plan.on_tick():
        accounts = {a for a in latest if bound.instance.covers(a)}
        if now - t0 >= plan.config.stale_after:
            accounts |= set(bound.instance.explicit_accounts)
        for account in sorted(accounts):
            evaluate_pair(RedisStore(r, keys), bound, account, latest.get(account), now, lambda at=now: at)


def live_alerts(r: redis_lib.Redis, plan: Plan, recording: Path, tick: float = 5.0) -> list[Alert]:
    """The same frames and ticks through the live parser and ``engine.store.evaluate_pair`` on Redis:
    every frame's snapshots, then the ticks every ``tick`` seconds from the first frame."""
    keys, seq = Keys("bt:"), itertools.count(1)
    records = list(read_recording(recording, Stats()))
    t0, done = records[0][0], 0
    latest: dict[str, Snapshot] = {}
    for t, text in records:
        while t0 + done * tick < t:
            live_tick(r, keys, plan, latest, t0 + done * tick, t0)
            done += 1
        for snap in parse_frame(text, t, seq.__next__).snapshots:
            latest[snap.account] = snap
            for bound in plan.for_snapshot(snap.account):
                evaluate_pair(RedisStore(r, keys), bound, snap.account, snap, t, lambda at=t: at)
    while t0 + done * tick <= records[-1][0]:
        live_tick(r, keys, plan, latest, t0 + done * tick, t0)
        done += 1
    return [Alert.model_validate_json(f["alert"]) for _, f in r.xrange(keys.alerts)]


def essence(alerts: list[Alert]) -> list[tuple[str, str, str, float, str]]:
    return [(a.check, a.account, a.state, a.observed_at, a.text) for a in alerts]


@pytest.mark.parametrize("jobs", [1, 2])
def test_backtest_agrees_with_the_live_runner(r: redis_lib.Redis, tmp_path: Path, jobs: int) -> None:
    """With and without the fast path (``jobs`` 2: evaluated ahead in other processes)."""
    plan = plan_of(AGREEMENT_CONFIG)
    scenario = preset("demo", accounts=2, okx=False, delta_at=2.0)
    recording = write_recording(tmp_path / "agree.jsonl", scenario, 45, repeat=2)
    spoil(recording, range(50, 56), OTHER, "USDTwalletBalance")  # 30 s to 31 s (lines 50-55): junk
    if jobs == 1:
        fired, stats = replay(plan, recording)
    else:
        with ReplayPool(plan, recording, Options(), jobs) as pool:
            fired, stats = list(pool.items()), pool.stats()
    live = live_alerts(r, plan, recording)
    assert {a.check for a in live} == {"low_balance", "margin_risk", "delta", "stale_data", "check_error"}
    assert [(a.state, a.account) for a in live if a.check == "check_error"] == [
        ("firing", OTHER),
        ("firing", OTHER),
        ("resolved", OTHER),
        ("resolved", OTHER),
    ]  # low balance and margin risk both read the junk balance
    assert essence([f.alert for f in fired]) == essence(live)
    assert [f.alert.id for f in fired] == [a.id for a in live]
    assert (stats.settled > 0) == (jobs > 1)


def test_shared_between_processes_gives_the_same_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, legacy_config: Path
) -> None:
    base = datetime(2024, 5, 1, 5, 59, tzinfo=UTC).timestamp()
    scenario = preset("demo", accounts=4, okx=True, delta_at=5.0)
    recording = write_recording(tmp_path / "shared.jsonl", scenario, 120, base=base)
    args = ("--config", str(legacy_config), "--recording", str(recording), "--output", "jsonl")
    _, single, single_err = run_cli(capsys, *args)
    _, shared, shared_err = run_cli(capsys, *args, "--jobs", "2")
    checks = {a["check"] for a in jsonl(single)}
    assert {"low_balance", "margin_risk", "stale_data", "balance_report"} <= checks
    assert shared == single
    ahead = re.compile(r" \(([\d,]+) settled ahead\)")
    assert ahead.sub("", single_err).splitlines()[:2] == ahead.sub("", shared_err).splitlines()[:2]
    assert "(0 settled ahead)" in single_err and "(0 settled ahead)" not in shared_err


# ---------------------------------------------------------------- pieces


def test_progress_bar_redraws_at_most_every_interval() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(2**30, stream, interval=0.1, clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.01
        bar.update(i * 2**23)
    assert stream.getvalue().count("\r") == 10
    assert bar.render(2**29, 10.0).startswith("[" + "#" * 15 + "." * 15 + "]  50.0% 0.50/1.00 GiB 10s left")
    bar.clear()
    assert stream.getvalue().endswith("\r\033[K")


@pytest.mark.parametrize("jobs", [2, 3])
def test_evaluating_ahead_in_processes_gives_the_single_process_result(tmp_path: Path, jobs: int) -> None:
    """Stretches evaluated ahead apart and applied in order give every alert a single process gives,
    including the reports and the alerts whose snapshots are read again from the file."""
    plan = plan_of(AGREEMENT_CONFIG)
    base = datetime(2024, 5, 1, 5, 59, 50, tzinfo=UTC).timestamp()
    scenario = preset("demo", accounts=2, okx=False, delta_at=2.0)
    recording = write_recording(tmp_path / "pool.jsonl", scenario, 45, repeat=2, base=base)
    spoil(recording, range(50, 56), OTHER, "USDTwalletBalance")
    single, single_stats = replay(plan, recording)
    with ReplayPool(plan, recording, Options(), jobs) as pool:
        pooled = list(pool.items())
        stats = pool.stats()
    assert len(stretches(recording, jobs)) == jobs
    assert [f.alert for f in pooled] == [f.alert for f in single]
    assert {f.alert.check for f in single} >= {"low_balance", "delta", "check_error", "stale_data"}
    assert pool.frames.reads > 0  # snapshots were built from frames read again
    assert dataclasses.replace(stats, settled=0) == single_stats
    assert stats.settled > 0 and single_stats.settled == 0


def nasty(recording: Path) -> None:
    """Mix into a recording what a real one may hold (``tests.golden.recordings.spoilt``)."""
    records = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    recording.write_text("\n".join(spoilt(records)) + "\n", encoding="utf-8")


def test_evaluating_ahead_is_exact_on_a_nasty_recording(tmp_path: Path) -> None:
    plan = plan_of(AGREEMENT_CONFIG)
    scenario = preset("demo", accounts=2, okx=False, delta_at=2.0)
    recording = write_recording(tmp_path / "nasty.jsonl", scenario, 45, repeat=2)
    nasty(recording)
    single, single_stats = replay(plan, recording)
    with ReplayPool(plan, recording, Options(), 3) as pool:
        pooled = list(pool.items())
        stats = pool.stats()
    assert [f.alert for f in single] == [f.alert for f in pooled]
    assert dataclasses.replace(stats, settled=0) == single_stats
    assert (stats.bad_lines, stats.malformed_frames, stats.quarantined) == (1, 1, 1)
    assert any("\ud800" in f.alert.account for f in single)  # the odd account is evaluated too


def test_stretches_start_at_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"a" * 10 + b"\n" + b"b" * 3 + b"\n" + b"c\n")
    assert stretches(path, 1) == [(0, 17)]
    assert stretches(path, 2) == [(0, 11), (11, 17)]
    assert stretches(path, 4) == [(0, 11), (11, 15), (15, 17)]
    assert stretches(path, 40) == [(0, 11), (11, 15), (15, 17)]


LOAD_POS_TEXTS = [
    '{"pos": {"A": {"x": 1.5, "y": "2"}}}',
    '{"pos": {"A": {"x": NaN, "y": Infinity, "z": -Infinity}}}',
    '{"pos": {"A": {"x": 1e400}}}',
    '{"pos": {"A": {"x": 12345678901234567890}}}',
    '{"pos": {"A\\ud800": {"x": 1}}}',
    '{"pos": {"A": {"x": 1}, "A": {"y": 2}}}',
    '{"pos": []}',
    '{"pos": null}',
    '{"other": 1}',
    "[1, 2]",
    "not json",
    "",
    '{"pos": {"A": 1}',
]


@pytest.mark.parametrize("text", LOAD_POS_TEXTS)
def test_fast_decoding_finds_what_the_live_parser_finds(text: str) -> None:
    expected = frames.load_pos(text)
    got = replay_module.load_pos(text)
    assert repr(got) == repr(expected)
    if expected[0] is not None:
        assert [list(obj) for obj in expected[0].values()] == [list(obj) for obj in (got[0] or {}).values()]


def test_an_integer_past_64_bits_decodes_to_the_same_figure() -> None:
    """The one documented difference of the fast decoder: the raw value is the float, not the int;
    the figure the checks read is the same."""
    text = '{"pos": {"A": {"x": 123456789012345678901234567890}}}'
    live, fast = frames.load_pos(text)[0], replay_module.load_pos(text)[0]
    assert live is not None and fast is not None
    assert parse_number(fast["A"]["x"]) == parse_number(live["A"]["x"]) == (1.2345678901234568e29, None)


def test_fast_decoding_reads_records_as_json_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = json.dumps({"pos": {LOW: {"USDTwalletBalance": float("nan"), "BNBwalletBalance": 1}}})
    lines = [
        json.dumps({"received_at": BASE, "frame": frame}),
        '{"received_at": NaN, "frame": "{}"}',
        '{"received_at": Infinity, "frame": "{}"}',
        '{"received_at": 1e400, "frame": "{}"}',
        '{"received_at": 17e8, "frame": "{\\"pos\\": {\\"A\\": {\\"x\\": NaN}}}"}',
        "   ",
        "[]",
        '{"received_at": true, "frame": "{}"}',
    ]
    path = tmp_path / "odd.jsonl"
    path.write_bytes(
        "\n".join(lines).encode() + b"\n" + json.dumps({"received_at": 1, "frame": "x"}).encode("utf-16")
    )
    fast_stats = Stats()
    fast = list(read_recording(path, fast_stats))
    monkeypatch.setattr(replay_module, "decode", json.loads)
    slow_stats = Stats()
    slow = list(read_recording(path, slow_stats))
    assert repr(fast) == repr(slow)
    assert fast_stats == slow_stats
    assert fast_stats.bad_lines == 5


def test_nan_figures_replay_as_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson refuses NaN, json reads it (then parse_number marks the value invalid): the replay
    falls back to json and evaluates the frame as the ingestor would."""
    recording = write_recording(tmp_path / "nan.jsonl", preset("demo", accounts=2, okx=False), 10)
    lines = recording.read_text(encoding="utf-8").splitlines()
    for i in range(5, 10):
        record = json.loads(lines[i])
        frame = json.loads(record["frame"])
        frame["pos"][OTHER]["USDTwalletBalance"] = float("nan")
        lines[i] = json.dumps({**record, "frame": json.dumps(frame)})
    recording.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plan = plan_of(AGREEMENT_CONFIG)
    fast, fast_stats = replay(plan, recording)
    monkeypatch.setattr(replay_module, "load_pos", frames.load_pos)
    slow, slow_stats = replay(plan, recording)
    assert [f.alert for f in fast] == [f.alert for f in slow]
    assert fast_stats == slow_stats
    assert any(f.alert.check == "check_error" for f in fast)


def test_jobs_auto_evaluates_large_recordings_ahead_in_processes(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"x\n")
    assert default_jobs(small) == 1
    large = tmp_path / "large.jsonl"
    with large.open("wb") as f:
        f.truncate(PARALLEL_BYTES)
    assert default_jobs(large) == max(1, min(os.cpu_count() or 1, MAX_JOBS))


def test_a_failing_process_fails_the_run(tmp_path: Path, demo: Path) -> None:
    """The screening processes rebuild the plan from the configuration; a check they cannot find
    (here one registered only in this process) makes them fail, and the run with them."""
    spec = dataclasses.replace(low_balance.SPEC, name="only_here")
    registry = Registry([*Registry.discover(plugins=False).specs.values(), spec])
    text = "checks:\n  mine:\n    check: only_here\n    accounts: ['BINANCE-*']\n"
    plan = build(parse(text, "mine.yaml"), registry)
    with ReplayPool(plan, demo, Options(), 2) as pool, pytest.raises(ShareFailed, match="failed"):
        list(pool.items())


def test_at_rest_is_a_clear_that_changes_nothing() -> None:
    """The replay's closed form agrees with the state machine on every kind of state."""
    times = (None, 0.0, 100.0)
    for since, last, firing, forget in itertools.product(times, times, (False, True), (False, True)):
        state = KeyState(since, last, firing)
        by_step = step(state, False, 500.0, Policy(None, 300.0, forget)) == (state, None)
        assert at_rest(state, forget) == by_step, (state, forget)


# ---------------------------------------------------------------- agreement with the live pipeline

REPORT_BASE = datetime(2024, 5, 1, 5, 59, 50, tzinfo=UTC).timestamp()
"""Unix time of the first frame of the pipeline recording: the 06:00 UTC report slot is 10 s in."""
PIPELINE_CONFIG = (
    AGREEMENT_CONFIG
    + """  report:
    check: balance_report
    accounts: ["BINANCE-*"]
    schedule: ["0 */6 * * *"]
"""
)
UNSEEN = "BINANCE-AAZ09-UM"
"""An account the stale_data instance names explicitly and the feed never sends."""
NEVER = 1e9
"""Dispatcher ``tick_seconds`` longer than any recording: it ticks by itself only on its first step."""


def drop_account(recording: Path, account: str, start: float, end: float) -> None:
    """Leave ``account`` out of the frames received from ``start`` to before ``end`` seconds after
    the first frame (the feed stops sending it: a stale gap for that account alone)."""
    records = [json.loads(line) for line in recording.read_text(encoding="utf-8").splitlines()]
    t0 = records[0]["received_at"]
    for record in records:
        if start <= record["received_at"] - t0 < end:
            frame = json.loads(record["frame"])
            del frame["pos"][account]
            record["frame"] = json.dumps(frame)
    recording.write_text("".join(json.dumps(rec) + "\n" for rec in records), encoding="utf-8")


@dataclasses.dataclass
class VirtualClock:
    """The pipeline's clock in virtual time: the time of the frame or tick being processed."""

    now: float

    def __call__(self) -> float:
        return self.now


class LivePipeline:
    """The live components on one Redis, driven in virtual time: the ingestor's parser and
    publisher, a started Dispatcher and an RQ SimpleWorker run in burst mode after every frame and
    every tick, so each snapshot is evaluated before the next frame arrives (no latest-wins
    coalescing). Ticks every ``tick`` seconds from the first frame, as ``Replay`` runs them."""

    def __init__(self, url: str, plan: Plan, t0: float, tick: float) -> None:
        self.keys, self.t0, self.tick = Keys(), t0, tick
        self.clock = VirtualClock(t0)
        self.r = connect(url)
        self.dispatcher = Dispatcher(
            r=self.r, rq_connection=connect(url, decode=False), keys=self.keys, plan=plan,
            consumer="d1", block_ms=10, tick_seconds=NEVER, clock=self.clock, started_at=t0,
        ).start()  # fmt: skip
        context = Context(self.r, self.keys, plan, self.clock)
        self.worker = make_worker("simple", connect(url, decode=False), context)
        self.publisher = Publisher(self.r, self.keys)
        self.seq = itertools.count(1)
        self.ticks = 1
        """Ticks done: the dispatcher's first step ticks by itself at its clock, t0, after the
        first frame's jobs, which is when ``Replay`` runs its first tick."""

    def frame(self, t: float, text: str) -> None:
        """The ticks before ``t``, then the frame: parsed, published, dispatched, evaluated."""
        self.ticks_until(t, inclusive=False)
        self.clock.now = t
        self.publisher.publish(parse_frame(text, t, self.seq.__next__).snapshots)
        self.dispatcher.step()
        self.worker.work(burst=True, logging_level="WARNING")

    def ticks_until(self, t: float, inclusive: bool) -> None:
        """Every tick before ``t`` (or at ``t`` too): enqueued by the dispatcher, then evaluated."""
        while (now := self.t0 + self.ticks * self.tick) < t or (inclusive and now == t):
            self.ticks += 1
            self.clock.now = now
            self.dispatcher.tick(now)
            self.worker.work(burst=True, logging_level="WARNING")

    def alerts(self) -> list[Alert]:
        """Every alert on the alerts stream, in order."""
        entries: Any = self.r.xrange(self.keys.alerts)
        return [Alert.model_validate_json(f["alert"]) for _, f in entries]

    def counter(self, name: str) -> int:
        """A pipeline counter (``shared.keys``: ``COUNTER_*``)."""
        value: Any = self.r.hget(self.keys.counters, name)
        return int(value or 0)


def test_the_backtest_agrees_with_the_live_pipeline_on_ticks_a_stale_gap_and_a_report_slot(
    redis_url: str, tmp_path: Path
) -> None:
    """The real ingestor parser and publisher, dispatcher and RQ worker on Redis, in virtual time
    and one frame at a time, send the alerts the backtest finds (in one process and in two), with
    the same ids: ticks, a stale gap of one account and its recovery, and a report slot."""
    plan, options = plan_of(PIPELINE_CONFIG), Options(tick=5.0)
    scenario = preset("demo", accounts=2, okx=False, delta_at=2.0, pause_at=None)
    recording = write_recording(tmp_path / "pipeline.jsonl", scenario, 45, hz=2.5, repeat=2, base=REPORT_BASE)
    drop_account(recording, OTHER, 15.0, 30.0)  # last seen at 14.8 s, stale from 25 s, back at 30 s
    single, stats = replay(plan, recording, options)
    with ReplayPool(plan, recording, options, 2) as pool:
        pooled = list(pool.items())
    records = list(read_recording(recording, Stats()))
    live = LivePipeline(redis_url, plan, records[0][0], options.tick)
    live.frame(*records[0])
    midnight = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert live.r.get(live.keys.slot("report")) == repr(midnight)  # the tick at t0 ran: 00:00 skipped
    for t, text in records[1:]:
        live.frame(t, text)
    live.ticks_until(records[-1][0], inclusive=True)
    got = live.alerts()
    assert [f.alert for f in pooled] == [f.alert for f in single]
    assert essence(got) == essence([f.alert for f in single])
    assert [a.id for a in got] == [f.alert.id for f in single]
    assert got == [f.alert for f in single]  # every field: emitted at the same virtual moment too
    assert {"low_balance", "stale_data", "balance_report"} <= {a.check for a in got}
    stale = [(a.account, a.state, a.observed_at - REPORT_BASE) for a in got if a.check == "stale_data"]
    assert [(state, at) for account, state, at in stale if account == OTHER] == [
        ("firing", 25.0),
        ("resolved", 30.0),
    ]
    # an explicit account that never reports is due stale_after (10 s) after monitoring started
    # (the first frame), then again after the cooldown (12 s), on ticks
    assert [(state, at) for account, state, at in stale if account == UNSEEN] == [
        ("firing", 10.0),
        ("firing", 25.0),
        ("firing", 40.0),
    ]
    slot = REPORT_BASE + 10
    assert [(a.observed_at, a.title) for a in got if a.check == "balance_report"] == [
        (slot, "Balance report 06:00 UTC")
    ]
    assert live.ticks == stats.ticks
    skipped, coalesced = live.counter(COUNTER_UNCHANGED), live.counter(COUNTER_COALESCED)
    assert skipped > 0  # the gate held for the frames that repeat the figures
    # the dispatcher's first step ticks at t0 and finds the first frame's stale_data jobs still
    # queued: latest wins (the same evaluation time, so nothing is lost); nothing else coalesces
    assert coalesced == 2
    assert live.counter(COUNTER_EVALS) + skipped + coalesced == stats.evaluations
