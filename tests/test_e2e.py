"""The whole pipeline, end to end, as separate processes: a real redis-server, the Galio simulator
(or a scripted WebSocket feed) on loopback, ``python -m ingestor|dispatcher|workers|alerter``
subprocesses, and a local HTTP server standing in for Slack that slack-sdk really posts to."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import CloseCode

from shared import keys as K
from simulator.frames import Scenario, binance_account, frame_at
from tests.pipeline import (
    ALERT_KEYS,
    KEYS,
    STOP_DEADLINE,
    Pipeline,
    leaks,
    posted_texts,
    redis_contents,
    rq_info,
    slack_text,
    stream_alert_ids,
    write_config,
)
from tests.slack_standin import Reply, SlackStandin

LOW = binance_account(1)
OKX = "OKX-AAZ-TRADING"
THRESHOLDS = {"USDT": 10000, "USDC": 10000, "BNB": 3}
LOW_TEXT = re.compile(r"USDT wallet balance \$(\d{1,3}(?:,\d{3})*\.\d{2}) is below the threshold \$10,000\b")

PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def pipelines(tmp_path: Path, redis_url: str) -> Iterator[PipelineFactory]:
    """Make pipelines on the test's Redis; every process of each is stopped at teardown."""
    made: list[Pipeline] = []

    def make(config: Path | None = None, **kwargs: Any) -> Pipeline:
        pipeline = Pipeline(tmp_path / f"run-{len(made) + 1}", redis_url, config, **kwargs)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


def config_file(tmp_path: Path, *, stale: float | None = 2.5, **low_balance: Any) -> Path:
    checks: dict[str, Any] = {
        "low-balance": {
            "check": "low_balance",
            "accounts": ["BINANCE-*"],
            "params": {"thresholds": THRESHOLDS},
            "cooldown": 300,
            **low_balance,
        }
    }
    if stale is not None:
        checks["stale"] = {
            "check": "stale_data",
            "accounts": ["*"],
            "params": {"max_age": stale},
            "resolved": True,
        }
    return write_config(tmp_path / "monitorx.yaml", checks, stale_after=stale or 60)


def low_figure(text: str) -> float:
    match = LOW_TEXT.search(text)
    assert match is not None, f"no USDT figure in the legacy format in {text!r}"
    return float(match.group(1).replace(",", ""))


def of(alerts: list[dict[str, Any]], check: str, account: str | None = None) -> list[dict[str, Any]]:
    return [a for a in alerts if a["check"] == check and (account is None or a["account"] == account)]


def assert_delivered_once(pipeline: Pipeline, slack: SlackStandin | None) -> list[dict[str, Any]]:
    """Every JSONL line is a complete alert record, no alert id is delivered twice, every alert
    on the stream was delivered, and each was posted to Slack exactly once."""
    alerts = pipeline.alerts()
    for record in alerts:
        assert set(ALERT_KEYS) <= record.keys(), record
        assert record["state"] in {"firing", "resolved"}, record
        assert record["delivered_at"] >= record["observed_at"] > 0, record
    ids = Counter(a["id"] for a in alerts)
    assert [i for i, n in ids.items() if n > 1] == [], "alert ids delivered twice to JSONL"
    assert set(ids) == set(stream_alert_ids(pipeline.r)), "JSONL and the alert stream disagree"
    if slack is not None:
        posted = Counter(posted_texts(slack))
        assert [t for t, n in posted.items() if n > 1] == [], "alerts posted twice to Slack"
        assert posted == Counter(slack_text(a) for a in alerts), "Slack posts and JSONL disagree"
    return alerts


def stop_everything(pipeline: Pipeline) -> None:
    """SIGTERM every running process; each must exit 0 within the deadline. The ingestor goes
    first, alone: Galio closing the connection as the ingestor's SIGTERM arrives is a known bug
    with its own test (test_ingestor_stops_when_galio_closes_as_sigterm_arrives)."""
    first = [c for c in pipeline.procs.running() if c is pipeline.ingestor]
    codes = pipeline.stop(first)
    codes += pipeline.stop(pipeline.procs.running())
    assert [(name, code) for name, code in codes if code != 0] == [], codes


# -- 1. the full pipeline --------------------------------------------------------------------------


def test_full_pipeline_low_balance_stale_and_resolved(
    pipelines: PipelineFactory, slack: SlackStandin, tmp_path: Path
) -> None:
    # DEBUG everywhere: the level at which libraries log URLs and frames
    pipeline = pipelines(config_file(tmp_path), slack=slack, env={"MONITORX_LOG_LEVEL": "DEBUG"})
    pipeline.start_core(workers=2)
    pipeline.start_simulator(
        *("--scenario", "demo", "--hz", "10", "--low-at", "1", "--pause-at", "3", "--pause-for", "6")
    )
    accounts = [binance_account(n) for n in (1, 2, 3)] + [OKX]

    [low] = pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 20, "the low-balance alert")
    info = rq_info(pipeline.redis_url)  # while everything runs
    assert re.search(r"^monitorx\b", info, re.MULTILINE), info
    assert re.search(r"^2 workers, 1 queues", info, re.MULTILINE), info

    def stale_cycles() -> bool:
        alerts = pipeline.alerts()
        return all(
            [a["state"] for a in of(alerts, "stale_data", acc)] == ["firing", "resolved"] for acc in accounts
        )

    pipeline.wait(stale_cycles, 30, "stale_data firing then resolved on every account")
    pipeline.wait(
        lambda: pipeline.drained() and len(slack.ok) >= len(pipeline.alerts()), 15, "every alert on Slack"
    )
    stop_everything(pipeline)

    assert low["account"] == LOW and low["state"] == "firing"
    assert low_figure(low["text"]) < 10_000
    alerts = assert_delivered_once(pipeline, slack)
    assert slack_text(low) in posted_texts(slack)
    assert sorted({a["check"] for a in alerts}) == ["low_balance", "stale_data"], alerts
    for account in accounts:
        firing, resolved = of(alerts, "stale_data", account)
        assert firing["observed_at"] < resolved["observed_at"]
        assert account in firing["text"] and "limit 2.5s" in firing["text"]

    outputs = [(f"output of {c.name}", pipeline.procs.output(c)) for c in pipeline.procs.children]
    stored = [
        (f"redis {key!r}", blob.decode("utf-8", "replace"))
        for key, blob in redis_contents(pipeline.redis_url)
    ]
    found = leaks(
        [*outputs, *stored, ("rq info", info), ("jsonl", pipeline.jsonl.read_text())], pipeline.secrets
    )
    assert found == [], found


# -- 2. Slack trouble ------------------------------------------------------------------------------


def test_slack_rate_limit_and_server_error_still_deliver_each_alert_once(
    pipelines: PipelineFactory, slack: SlackStandin, tmp_path: Path
) -> None:
    slack.script(Reply(429, "rate_limited", {"Retry-After": "1"}), Reply(500, "internal_error"))
    # every Binance account is low on BNB from its first frame: three alerts at once
    config = config_file(tmp_path, stale=None, params={"thresholds": {**THRESHOLDS, "BNB": 100}})
    pipeline = pipelines(config, slack=slack)
    pipeline.start_core(workers=2)
    pipeline.start_simulator("--scenario", "steady", "--hz", "10")
    binance = [binance_account(n) for n in (1, 2, 3)]

    pipeline.wait(
        lambda: sorted(a["account"] for a in pipeline.alerts()) == binance, 20, "a low-BNB alert per account"
    )
    pipeline.wait(lambda: pipeline.drained() and len(slack.ok) >= 3, 20, "every alert on Slack")
    stop_everything(pipeline)

    assert [post.status for post in slack.received] == [429, 500, 200, 200, 200]
    alerts = assert_delivered_once(pipeline, slack)
    assert len(alerts) == 3
    assert all("BNB wallet balance" in a["text"] and "threshold 100" in a["text"] for a in alerts)
    assert pipeline.r.xlen(KEYS.dead) == 0


# -- 3. SIGTERM everywhere, and an alerter restarted mid-stream -------------------------------------


def test_sigterm_stops_every_process_cleanly_and_a_restarted_alerter_repeats_nothing(
    pipelines: PipelineFactory, slack: SlackStandin, tmp_path: Path
) -> None:
    # cooldown 0: account 1 alerts on every evaluation, a steady stream of distinct alerts
    pipeline = pipelines(config_file(tmp_path, stale=None, cooldown=0), slack=slack)
    pipeline.start_core(workers=2)
    simulator = pipeline.start_simulator(
        "--scenario", "steady", "--hz", "10", "--accounts", "2", "--low-at", "0"
    )
    ingestor, dispatcher, alerter = pipeline.ingestor, pipeline.dispatcher, pipeline.alerter
    assert ingestor is not None and dispatcher is not None and alerter is not None

    def more_than(n: int) -> Callable[[], bool]:
        return lambda: len(pipeline.alerts()) > n

    pipeline.wait(more_than(5), 20, "alerts flowing")
    assert pipeline.stop([alerter]) == [("alerter", 0)]
    restarted = pipeline.start_alerter()
    pipeline.wait(more_than(len(pipeline.alerts()) + 10), 20, "alerts flowing again after the restart")

    first, second = pipeline.workers
    assert pipeline.stop([first]) == [(first.name, 0)]  # mid-stream: a job may be in hand
    pipeline.wait(more_than(len(pipeline.alerts()) + 5), 20, "alerts flowing on the remaining worker")

    sessions = pipeline.procs.stderr(ingestor).count("Galio session")  # ended sessions so far
    assert pipeline.stop([simulator]) == [("simulator", 0)]  # streaming to the ingestor
    pipeline.wait(
        lambda: pipeline.procs.stderr(ingestor).count("Galio session") > sessions, 10, "the session to end"
    )
    assert pipeline.stop([ingestor]) == [("ingestor", 0)]  # in its reconnect loop
    # the rest at once, as `docker compose stop` does, with the tail of the work in flight
    codes = pipeline.stop([dispatcher, second, restarted])
    assert codes == [("dispatcher", 0), (second.name, 0), ("alerter", 0)]

    # whatever was left pending goes out once, and nothing twice, with a fresh alerter
    drain = pipelines(slack=slack)
    drain.jsonl = pipeline.jsonl
    drain.start_alerter()
    drain.wait(drain.drained, 20, "the stream to be drained")
    stop_everything(drain)
    alerts = assert_delivered_once(pipeline, slack)
    assert {a["account"] for a in alerts} == {LOW}
    assert pipeline.r.xlen(KEYS.dead) == 0


def frozen(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_ingestor_stops_when_galio_closes_as_sigterm_arrives(pipelines: PipelineFactory) -> None:
    """Galio going away just as the ingestor is told to stop (say both restart in one deploy)."""
    healthy = frame_at(Scenario(accounts=1, okx=False), 0.0)
    with ScriptedFeed([json.dumps(healthy)]) as feed:
        pipeline = pipelines(galio_uri=feed.uri, auth=False)
        ingestor = pipeline.start_ingestor()
        pipeline.wait(lambda: pipeline.r.hget(KEYS.counters, K.COUNTER_FRAMES) == "1", 20, "the frame")
        # Both events are made to wait for the same turn of the ingestor's event loop: freeze it,
        # close the connection (close frame and FIN), send SIGTERM, thaw it.
        pipeline.expect_exit([ingestor])
        ingestor.proc.send_signal(signal.SIGSTOP)
        pipeline.wait(lambda: frozen(ingestor.proc.pid), 5, "the ingestor to be frozen")
        feed.close_abruptly()
        ingestor.proc.send_signal(signal.SIGTERM)
        ingestor.proc.send_signal(signal.SIGCONT)

        def after_sigterm() -> str:
            return pipeline.procs.stderr(ingestor).partition("received SIGTERM")[2]

        def reconnected() -> bool:
            log = after_sigterm()
            return "connected to" in log or log.count("Galio session") > 1

        pipeline.wait(lambda: not ingestor.alive or reconnected(), STOP_DEADLINE, "the ingestor to exit")
        assert not reconnected(), f"the ingestor went on after SIGTERM:{after_sigterm()}"
        assert ingestor.proc.wait(timeout=STOP_DEADLINE) == 0


# -- 4. malformed frames ---------------------------------------------------------------------------


class ScriptedFeed:
    """A WebSocket server (websockets' asyncio server, on its own loop in a thread) that sends a
    scripted list of text frames to its first client, then keeps the connection open."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.connections: list[ServerConnection] = []
        self.sent = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), daemon=True
        )

    def __enter__(self) -> ScriptedFeed:
        self._thread.start()
        assert self._ready.wait(10), "the scripted feed did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def close_abruptly(self) -> None:
        """Close every connection as a server process that exits does: a close frame (1001), then
        the TCP connection at once, without waiting for the closing handshake."""
        asyncio.run_coroutine_threadsafe(self._close_abruptly(), self._loop).result(timeout=10)

    async def _close_abruptly(self) -> None:
        for ws in self.connections:
            ws.protocol.send_close(CloseCode.GOING_AWAY)
            for data in ws.protocol.data_to_send():
                ws.transport.write(data)
            ws.transport.close()
            await asyncio.wait_for(ws.wait_closed(), 5)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, ping_interval=None) as server:
            self.port = int(server.sockets[0].getsockname()[1])
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        if len(self.connections) == 1:
            for text in self.frames:
                await ws.send(text)
                self.sent += 1
        await ws.wait_closed()


def test_malformed_frames_are_quarantined_and_the_next_good_frame_alerts(
    pipelines: PipelineFactory, tmp_path: Path
) -> None:
    healthy = frame_at(Scenario(accounts=1, okx=False), 0.0)
    low = frame_at(Scenario(accounts=1, okx=False, low_at=0.0), 0.1)
    assert healthy is not None and low is not None
    script = [
        json.dumps(healthy),
        "not json",
        json.dumps({"pos": 5}),
        json.dumps({"pos": {LOW: 7}}),
        json.dumps(low),
    ]
    with ScriptedFeed(script) as feed:
        pipeline = pipelines(config_file(tmp_path, stale=None), galio_uri=feed.uri, auth=False)
        pipeline.start_core(workers=1)
        [alert] = pipeline.wait(lambda: of(pipeline.alerts(), "low_balance"), 20, "the low-balance alert")
        pipeline.wait(pipeline.drained, 10, "the alerter to finish")

        assert feed.sent == len(script)
        assert len(feed.connections) == 1, "the ingestor reconnected: a junk frame ended its session"
        assert pipeline.ingestor is not None and pipeline.ingestor.alive
        quarantined: Any = pipeline.r.xrange(KEYS.quarantine)
        reasons = [fields["reason"] for _, fields in quarantined]
        assert len(reasons) == 3, quarantined
        assert reasons[0].startswith("not JSON")
        assert reasons[1] == "pos is a int, not an object"
        assert LOW in reasons[2] and "not an object" in reasons[2]
        assert [fields["excerpt"] for _, fields in quarantined][:2] == script[1:3]
        counters = pipeline.r.hgetall(KEYS.counters)
        assert counters[K.COUNTER_MALFORMED] == "3"
        assert counters[K.COUNTER_FRAMES] == "5"
        assert counters[K.COUNTER_SNAPSHOTS] == "2"
        stop_everything(pipeline)

    assert alert["account"] == LOW and low_figure(alert["text"]) < 10_000
    assert [a["id"] for a in pipeline.alerts()] == [alert["id"]]


# -- 5. the legacy configuration, unchanged --------------------------------------------------------


def test_legacy_features_json_runs_as_is(pipelines: PipelineFactory, legacy_config: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "monitorx", "config", "show", str(legacy_config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    delta = "aaz_binance_delta_check:all:BINANCE-AAZ02-UM"
    assert re.search(
        rf"^{re.escape(delta)}\n  check=delta accounts=BINANCE-AAZ02-UM delay=60 ", shown.stdout, re.M
    )

    pipeline = pipelines(legacy_config)
    pipeline.start_core(workers=2)
    pipeline.start_simulator(
        *("--scenario", "steady", "--accounts", "13", "--hz", "2"),
        *("--low-at", "0.5", "--low-account", "1", "--delta-at", "0.5", "--delta-account", "2"),
    )
    [low] = pipeline.wait(
        lambda: of(pipeline.alerts(), "low_balance", LOW), 30, "the legacy low-balance alert"
    )
    assert low["instance"] == "aaz_binance_low_balance_check"
    assert re.search(
        r"USDT wallet balance \$\d,\d{3}\.\d{2} is below the threshold \$10,000$", low["text"], re.M
    )

    # the delta pair of account 2 drifts: its 60 s delay clock is running (state pending, not firing)
    state_key = KEYS.state(delta, "BINANCE-AAZ02-UM")
    assert state_key == "mx:state:aaz_binance_delta_check:all:BINANCE-AAZ02-UM:BINANCE-AAZ02-UM"

    def pending_btc() -> dict[str, Any] | None:
        raw = pipeline.r.hget(state_key, "BTCUSDT/BTCUSDC")
        return None if raw is None else dict(json.loads(str(raw)))

    pending = pipeline.wait(pending_btc, 20, "the delta check to start its delay clock")
    assert pending is not None
    assert pending["since"] is not None and pending["firing"] is False and pending["last_alert"] is None
    # the other delta pairs ran too, and are healthy
    pipeline.wait(lambda: int(pipeline.r.hget(KEYS.counters, K.COUNTER_EVALS) or 0) > 100, 20, "evaluations")
    for n in (1, 3, 13):
        healthy = pipeline.r.hgetall(
            KEYS.state(f"aaz_binance_delta_check:all:{binance_account(n)}", binance_account(n))
        )
        assert not any(json.loads(v).get("since") for k, v in healthy.items() if k != "_now"), (n, healthy)
    pipeline.wait(pipeline.drained, 15, "the alerter to finish")
    stop_everything(pipeline)

    alerts = assert_delivered_once(pipeline, None)
    assert of(alerts, "delta") == []
    assert of(alerts, "check_error") == [], "a legacy check failed on simulated data"
    assert int(pipeline.r.hget(KEYS.counters, K.COUNTER_CHECK_ERRORS) or 0) == 0
