"""The Galio ingestor against a real Redis and real WebSocket servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_lib
from pydantic import AnyUrl, ValidationError
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, InvalidURI
from websockets.frames import Close
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from ingestor.backoff import BackoffPolicy, SessionOutcome, SilenceTimeout, backoff_delay, decide, is_healthy
from ingestor.cli import main
from ingestor.client import GalioClient, GiveUp
from ingestor.frames import SequenceClock
from ingestor.ingest import Ingestor
from ingestor.record import Recorder
from shared.keys import (
    COUNTER_FRAMES,
    COUNTER_INVALID_VALUES,
    COUNTER_MALFORMED,
    DISPATCH_GROUP,
    QUARANTINE_EXCERPT,
    Keys,
)
from shared.models import Snapshot
from shared.redisio import connect
from shared.settings import IngestSettings
from tests.helpers import free_port, wait_until

KEYS = Keys()
BINANCE = "BINANCE-AAZ01-UM"
OKX = "OKX-AAZ-TRADING"
PASSWORD = "s3cret-Pa55"


def latest(r: redis_lib.Redis, keys: Keys, account: str) -> Snapshot | None:
    """The newest snapshot of an account (``latest:{account}``), or None."""
    data = r.hget(keys.latest(account), "snapshot")
    return None if data is None else Snapshot.model_validate_json(cast(str, data))


def entries(r: redis_lib.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], r.xrange(stream))


def frame(**accounts: Any) -> str:
    return json.dumps({"pos": accounts})


GOOD_1 = json.dumps(
    {"pos": {BINANCE: {"BTCUSDT": 0.5, "USDTwalletBalance": "12000.5"}, OKX: {"ETH-USDT-SWAP": -30}}, "ts": 1}
)
GOOD_2 = json.dumps({"pos": {BINANCE: {"BTCUSDT": 0.75, "USDTwalletBalance": "11000"}}})


# --- a tiny Galio on loopback -------------------------------------------------------------------

Handler = Callable[[ServerConnection, "FeedServer"], None]


class FeedServer:
    """A websockets server in a thread that counts connections and keeps what clients sent."""

    def __init__(self, handler: Handler, reject: HTTPStatus | None = None) -> None:
        self.handler = handler
        self.reject = reject
        self.connections: list[float] = []
        self.received: list[str] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._server: Server | None = None

    def __enter__(self) -> FeedServer:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._process_request)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._thread.join(timeout=5)

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/feed"

    def count(self) -> int:
        with self._lock:
            return len(self.connections)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.connections.append(time.monotonic())
        return None if self.reject is None else ws.respond(self.reject, "no\n")

    def _handle(self, ws: ServerConnection) -> None:
        try:
            self.handler(ws, self)
        except ConnectionClosed:
            pass
        self.closed.set()

    def keep(self, message: str | bytes) -> None:
        with self._lock:
            self.received.append(message if isinstance(message, str) else message.decode())


def send_then_idle(frames: list[str], auth: bool = True, every: float = 0.0) -> Handler:
    """Read the auth frame (if any), send frames, then keep whatever else arrives until closed."""

    def handler(ws: ServerConnection, server: FeedServer) -> None:
        if auth:
            server.keep(ws.recv(timeout=5))
        for text in frames:
            ws.send(text)
            if every:
                time.sleep(every)
        for message in ws:
            server.keep(message)

    return handler


def close_after_auth(ws: ServerConnection, server: FeedServer) -> None:
    server.keep(ws.recv(timeout=5))
    ws.close(1008, "credentials refused")


def silent(ws: ServerConnection, server: FeedServer) -> None:
    for message in ws:
        server.keep(message)


# --- running the client in a test -----------------------------------------------------------------


def settings_for(uri: str, redis_url: str, **extra: Any) -> IngestSettings:
    values: dict[str, Any] = {"galio_uri": uri, "redis_url": redis_url, "backoff_min": 0.05, **extra}
    return IngestSettings(**values)


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def run_client(
    settings: IngestSettings,
    done: Callable[[], object],
    *,
    timeout: float = 10.0,
    ingestor: Ingestor | None = None,
    recorder: Recorder | None = None,
    what: str = "the client",
) -> None:
    """Run a GalioClient until ``done()`` holds, then stop it as SIGTERM would."""

    async def scenario() -> None:
        stop = asyncio.Event()
        target = ingestor or Ingestor(connect(str(settings.redis_url)), KEYS, stream_maxlen=1000)
        task = asyncio.create_task(GalioClient(settings, target, recorder=recorder).run(stop))
        try:
            await until(lambda: done() or task.done(), timeout, what)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


# --- session, auth, publishing --------------------------------------------------------------------


def test_auth_frame_sent_and_frames_reach_stream_and_latest(
    r: redis_lib.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handler = send_then_idle([GOOD_1, "junk between", GOOD_2])
    with FeedServer(handler) as server:
        settings = settings_for(server.uri, redis_url, galio_username="desk", galio_password=PASSWORD)
        run_client(settings, lambda: r.hget(KEYS.counters, COUNTER_FRAMES) == "3")
    assert server.received == [json.dumps({"username": "desk", "password": PASSWORD})]
    assert r.xlen(KEYS.snapshots) == 3
    assert [g["name"] for g in r.xinfo_groups(KEYS.snapshots)] == [DISPATCH_GROUP]
    binance = latest(r, KEYS, BINANCE)
    assert binance is not None and binance.values["BTCUSDT"] == 0.75
    assert binance.raw == {"BTCUSDT": 0.75, "USDTwalletBalance": "11000"}
    okx = latest(r, KEYS, OKX)
    assert okx is not None and okx.values["ETH-USDT-SWAP"] == -30
    assert r.hget(KEYS.counters, COUNTER_MALFORMED) == "1"
    assert not [rec for rec in caplog.records if PASSWORD in rec.getMessage() and "server" not in rec.name]


def test_no_auth_frame_without_username(r: redis_lib.Redis, redis_url: str) -> None:
    with FeedServer(send_then_idle([GOOD_2], auth=False)) as server:
        run_client(settings_for(server.uri, redis_url), lambda: r.exists(KEYS.latest(BINANCE)))
    assert server.received == []


# --- frame handling (synchronous) -----------------------------------------------------------------


@pytest.fixture
def ingestor(redis_url: str) -> Ingestor:
    return Ingestor(connect(redis_url), KEYS, stream_maxlen=1000)


def ingest(ingestor: Ingestor, text: str, received_at: float) -> bool:
    """Parse one frame, then write everything pending to Redis; True when all of it is written."""
    ingestor.accept(text, received_at)
    return ingestor.flush()


def test_malformed_frames_are_quarantined_and_good_ones_still_published(
    ingestor: Ingestor, r: redis_lib.Redis
) -> None:
    long_junk = "x" * 2000
    frames = [
        GOOD_1,
        long_junk,
        "[1, 2]",
        '{"pos": 5}',
        '{"other": {}}',
        frame(**{OKX: 7, BINANCE: {"BTCUSDT": "junk", "ETHUSDT": None, "USDTwalletBalance": True}}),
        GOOD_2,
    ]
    published = [ingest(ingestor, text, 1000.0 + i) for i, text in enumerate(frames)]
    assert all(published)
    quarantine = [fields for _, fields in entries(r, KEYS.quarantine)]
    assert len(quarantine) == 5
    assert quarantine[0]["excerpt"] == long_junk[:QUARANTINE_EXCERPT]
    assert quarantine[0]["reason"].startswith("not JSON") and quarantine[0]["received_at"] == "1001.0"
    assert "pos is a int" in quarantine[2]["reason"] and quarantine[3]["reason"] == "pos missing"
    assert OKX in quarantine[4]["reason"] and json.loads(quarantine[4]["excerpt"]) == {OKX: 7}
    assert [f["account"] for _, f in entries(r, KEYS.snapshots)] == [BINANCE, OKX, BINANCE, BINANCE]
    counters = r.hgetall(KEYS.counters)
    assert counters[COUNTER_FRAMES] == "7" and counters[COUNTER_MALFORMED] == "5"
    assert counters[COUNTER_INVALID_VALUES] == "2"  # "junk" and True; null is absent, not invalid
    newest = latest(r, KEYS, BINANCE)
    assert newest is not None and newest.observed_at == 1006.0 and newest.values["BTCUSDT"] == 0.75


def test_hostile_values_never_raise(ingestor: Ingestor, r: redis_lib.Redis) -> None:
    nasty = [
        "",
        "null",
        '"pos"',
        "[" * 100_000,
        '{"pos": {"A-B-C": {"BIG": 1' + "0" * 400 + "}}}",
        '{"pos": {"A-B-C": {"N": NaN, "L": [1], "D": {"x": 1}}}}',
        b"\xff\xfe".decode("utf-8", errors="replace"),
    ]
    for i, text in enumerate(nasty):
        ingest(ingestor, text, 2000.0 + i)
    assert r.hget(KEYS.counters, COUNTER_FRAMES) == str(len(nasty))
    assert int(r.xlen(KEYS.quarantine)) + int(r.xlen(KEYS.snapshots)) >= len(nasty)


def test_older_snapshot_never_overwrites_newer_latest(ingestor: Ingestor, r: redis_lib.Redis) -> None:
    ingest(ingestor, frame(**{BINANCE: {"BTCUSDT": 2}}), 2000.0)
    ingest(ingestor, frame(**{BINANCE: {"BTCUSDT": 1}}), 1000.0)
    snap = latest(r, KEYS, BINANCE)
    assert snap is not None and snap.observed_at == 2000.0 and snap.values["BTCUSDT"] == 2
    seqs = [int(f["seq"]) for _, f in entries(r, KEYS.snapshots)]
    assert len(seqs) == 2 and seqs[1] > seqs[0]


def test_sequence_numbers_increase_across_restarts(redis_url: str, r: redis_lib.Redis) -> None:
    first = Ingestor(connect(redis_url), KEYS, stream_maxlen=1000)
    ingest(first, GOOD_1, 100.0)
    second = Ingestor(connect(redis_url), KEYS, stream_maxlen=1000)  # a restarted process
    ingest(second, GOOD_1, 100.0)
    seqs = [int(f["seq"]) for _, f in entries(r, KEYS.snapshots)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    clock = SequenceClock(now_us=lambda: 5)  # a clock that stands still or steps back
    assert [clock.next() for _ in range(3)] == [5, 6, 7]


def test_stream_trimmed_periodically_but_never_past_unread_entries(
    redis_url: str, r: redis_lib.Redis
) -> None:
    ingestor = Ingestor(connect(redis_url), KEYS, stream_maxlen=5, trim_every=10)
    for i in range(30):
        ingest(ingestor, frame(**{BINANCE: {"BTCUSDT": i}}), 100.0 + i)
    assert r.xlen(KEYS.snapshots) == 30  # the dispatch group has read nothing yet
    r.xreadgroup(DISPATCH_GROUP, "c1", {KEYS.snapshots: ">"}, count=30)
    r.xack(KEYS.snapshots, DISPATCH_GROUP, *[i for i, _ in entries(r, KEYS.snapshots)])
    for i in range(10):
        ingest(ingestor, frame(**{BINANCE: {"BTCUSDT": i}}), 200.0 + i)
    assert 5 <= r.xlen(KEYS.snapshots) <= 10


def test_redis_down_keeps_newest_frames_and_publishes_when_back(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    ingestor = Ingestor(connect(url), KEYS, stream_maxlen=1000, max_pending=2)
    for i in range(2):  # each attempt costs redis-py's own retries (about 0.7 s)
        assert not ingest(ingestor, frame(**{BINANCE: {"BTCUSDT": i}, OKX: {"X": i}}), 100.0 + i)
    assert ingestor.pending == 2  # 4 snapshots coalesced to the newest of each account
    with redis_server(port, tmp_path):
        assert ingestor.flush()
        r = redis_lib.Redis.from_url(url, decode_responses=True)
        snap = latest(r, KEYS, BINANCE)
        assert snap is not None and snap.values["BTCUSDT"] == 1
        assert r.hget(KEYS.counters, COUNTER_FRAMES) == "2" and r.xlen(KEYS.snapshots) == 2
        assert ingestor.pending == 0


@contextlib.contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[None]:
    binary = shutil.which("redis-server")
    assert binary is not None
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_lib.Redis(port=port)

    def ready() -> bool:
        with contextlib.suppress(redis_lib.ConnectionError):
            return bool(client.ping())
        return False

    try:
        wait_until(ready, timeout=10, what="the second redis-server")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- reconnect policy (pure) ----------------------------------------------------------------------

POLICY = BackoffPolicy(minimum=0.1, maximum=2.0, stable_after=10.0)


def test_backoff_grows_then_caps() -> None:
    upper = [backoff_delay(POLICY, n, rand=lambda: 1.0) for n in range(1, 9)]
    assert upper == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    assert backoff_delay(POLICY, 10_000, rand=lambda: 1.0) == 2.0


def test_backoff_jitter_bounds() -> None:
    for n in range(1, 12):
        base = min(2.0, 0.1 * 2 ** (n - 1))
        low = max(0.1, base / 2)
        assert backoff_delay(POLICY, n, rand=lambda: 0.0) == pytest.approx(low)
        samples = [backoff_delay(POLICY, n) for _ in range(200)]
        assert all(low - 1e-9 <= s <= base + 1e-9 for s in samples)
    assert len({backoff_delay(POLICY, 5) for _ in range(20)}) > 1  # jittered


def test_backoff_resets_only_after_a_healthy_session() -> None:
    closed = ConnectionClosedOK(Close(1000, ""), Close(1000, ""), rcvd_then_sent=True)
    cases = [
        (SessionOutcome(frames=5, duration=10.0), 1),  # healthy: reset
        (SessionOutcome(frames=0, duration=60.0), 5),  # long but silent
        (SessionOutcome(frames=9, duration=1.0), 5),  # frames but short (closed soon after auth)
        (SessionOutcome(), 5),  # handshake failed
    ]
    for outcome, failures in cases:
        assert is_healthy(outcome, POLICY) == (failures == 1)
        assert decide(closed, outcome, 4, POLICY).failures == failures


def test_retry_decision_table() -> None:
    def status(code: int, headers: dict[str, str] | None = None) -> InvalidStatus:
        return InvalidStatus(Response(code, "", Headers(headers or {})))

    unhealthy = SessionOutcome()
    for exc in (status(401), status(403), status(429), status(503), OSError("refused"), TimeoutError()):
        decision = decide(exc, unhealthy, 0, POLICY)
        assert decision.retry and decision.failures == 1 and 0.1 <= decision.delay <= 2.0
    assert decide(status(401), unhealthy, 0, POLICY).level == logging.ERROR
    assert decide(SilenceTimeout("quiet"), unhealthy, 0, POLICY).level == logging.WARNING
    assert decide(status(429, {"Retry-After": "1.5"}), unhealthy, 0, POLICY).delay >= 1.5
    assert decide(status(429, {"Retry-After": "3600"}), unhealthy, 0, POLICY).delay == 2.0
    for fatal in (
        InvalidURI("http://u:p@h", "scheme isn't ws or wss"),
        ValueError("ssl"),
        RuntimeError("bug"),
    ):
        decision = decide(fatal, unhealthy, 3, POLICY)
        assert not decision.retry and "u:p" not in decision.reason


# --- reconnect policy against real servers ------------------------------------------------------

WINDOW = 2.0


@pytest.mark.parametrize("behaviour", ["close_after_auth", "http_401"])
def test_server_that_refuses_sees_growing_delays(behaviour: str, redis_url: str) -> None:
    reject = HTTPStatus.UNAUTHORIZED if behaviour == "http_401" else None
    with FeedServer(close_after_auth, reject=reject) as server:
        settings = settings_for(
            server.uri, redis_url, backoff_min=0.1, backoff_max=5.0, galio_username="u", galio_password="p"
        )
        first: list[float] = []

        def window_over() -> bool:
            if not first and server.count():
                first.append(server.connections[0])
            return bool(first) and time.monotonic() > first[0] + WINDOW

        run_client(settings, window_over, timeout=WINDOW + 5, what="the measuring window")
    times = [t for t in server.connections if t <= first[0] + WINDOW]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Delays 0.1, [0.1, 0.2], [0.2, 0.4], [0.4, 0.8], [0.8, 1.6]: 5 or 6 connections in 2 s.
    assert 4 <= len(times) <= 6, gaps
    assert gaps[-1] >= 0.19 and gaps[-1] > gaps[0], gaps


def test_watchdog_reconnects_a_silent_server(redis_url: str) -> None:
    with FeedServer(silent) as server:
        settings = settings_for(server.uri, redis_url, silence_timeout=0.3)
        run_client(settings, lambda: server.count() >= 2, timeout=5, what="a second connection")
        assert server.closed.wait(2), "the client closed the silent session"


class SlowRedisIngestor(Ingestor):
    """Every write takes 0.5 s, as with an overloaded Redis."""

    def flush(self) -> bool:
        time.sleep(0.5)
        return super().flush()


def test_slow_redis_does_not_trip_the_watchdog(redis_url: str, r: redis_lib.Redis) -> None:
    frames = [frame(**{BINANCE: {"BTCUSDT": i}}) for i in range(12)]
    with FeedServer(send_then_idle(frames, auth=False, every=0.1)) as server:
        settings = settings_for(server.uri, redis_url, silence_timeout=0.4)
        slow = SlowRedisIngestor(connect(redis_url), KEYS, stream_maxlen=1000)

        def all_written() -> bool:
            snap = latest(r, KEYS, BINANCE)
            return snap is not None and snap.values["BTCUSDT"] == 11

        run_client(settings, all_written, ingestor=slow, timeout=10, what="the last frame in Redis")
    assert server.count() == 1
    assert r.hget(KEYS.counters, COUNTER_FRAMES) == "12"


def test_invalid_uri_is_refused_by_the_settings(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="ws:// or wss://"):
        settings_for("http://127.0.0.1:9/feed", redis_url)


def test_invalid_uri_gives_up_if_it_gets_past_the_settings(redis_url: str) -> None:
    good = settings_for("ws://127.0.0.1:9/feed", redis_url)
    settings = good.model_copy(update={"galio_uri": AnyUrl("http://127.0.0.1:9/feed")})  # unvalidated
    with pytest.raises(GiveUp, match="InvalidURI"):
        run_client(settings, lambda: False, timeout=5)


# --- recording ------------------------------------------------------------------------------------


def test_recording_keeps_the_exact_text(tmp_path: Path, r: redis_lib.Redis, redis_url: str) -> None:
    frames = [GOOD_1, "not json \u00e9\U0001f600", '{ "pos" :{"OKX-AAZ-TRADING":{"X":"1e3"}} }\n', GOOD_2]
    path = tmp_path / "rec" / "frames.jsonl"
    path.parent.mkdir()
    before = time.time()
    with FeedServer(send_then_idle(frames, auth=False)) as server, Recorder(path) as recorder:
        run_client(
            settings_for(server.uri, redis_url),
            lambda: r.hget(KEYS.counters, COUNTER_FRAMES) == "4",
            recorder=recorder,
        )
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["frame"] for line in lines] == frames
    assert all(before <= line["received_at"] <= time.time() for line in lines)


# --- the process ----------------------------------------------------------------------------------


def test_sigterm_stops_the_process_promptly(tmp_path: Path, redis_url: str, r: redis_lib.Redis) -> None:
    record = tmp_path / "frames.jsonl"
    stderr = tmp_path / "stderr.log"
    with FeedServer(send_then_idle([GOOD_1])) as server, stderr.open("wb") as err:
        env = {
            **os.environ,
            "MONITORX_REDIS_URL": redis_url,
            "MONITORX_GALIO_URI": server.uri,
            "MONITORX_GALIO_USERNAME": "desk",
            "MONITORX_GALIO_PASSWORD": PASSWORD,
            "MONITORX_LOG_LEVEL": "DEBUG",
        }
        root = Path(__file__).resolve().parent.parent
        cmd = [sys.executable, "-m", "ingestor", "--record", str(record)]
        proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=err)
        try:
            wait_until(lambda: r.exists(KEYS.latest(OKX)), timeout=15, what="the first snapshot")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert time.monotonic() - started < 3
        finally:
            if proc.poll() is None:
                proc.kill()
        assert server.closed.wait(2), "the websocket was closed"
    assert json.loads(record.read_text())["frame"] == GOOD_1
    log_text = stderr.read_text()
    assert "SIGTERM" in log_text and PASSWORD not in log_text


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--record" in capsys.readouterr().out


def test_cli_invalid_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MONITORX_SILENCE_TIMEOUT", "-1")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "MONITORX_SILENCE_TIMEOUT" in capsys.readouterr().err
    monkeypatch.delenv("MONITORX_SILENCE_TIMEOUT")
    with pytest.raises(SystemExit) as exit_info:
        main(["--uri", "not a url"])
    assert exit_info.value.code == 2 and "galio_uri" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_cli_refuses_an_invalid_uri_at_start(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("MONITORX_REDIS_URL", redis_url)
    with pytest.raises(SystemExit) as refused:  # the settings refuse it at start: exit 2
        main(["--uri", "http://127.0.0.1:9/feed"])
    assert refused.value.code == 2
    assert main(["--record", "/nonexistent/dir/frames.jsonl"]) == 2
