"""The ``feed_down`` alert of the ingestor: the pure state machine and the reasons first, then
real WebSocket servers on loopback and a real Redis.

Each scenario runs :func:`ingestor.client.run` with short intervals set through the settings, and
a real dispatcher beside it (the ingestor puts its feed alerts on the snapshots stream; the
dispatcher forwards them), and reads what reached ``mx:alerts`` and the feed's status hash
``mx:feed:{name}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as redis_lib
from pydantic import ValidationError
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidMessage, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from dispatcher.service import Dispatcher
from engine.plan import load_plan
from ingestor.backoff import SessionOutcome, SilenceTimeout
from ingestor.client import display_uri, run
from ingestor.health import FeedHealth, FeedStatus, duration, reason_of
from shared.keys import COUNTER_ALERTS, Keys
from shared.lifecycle import Stopper
from shared.models import Alert, alert_id
from shared.redisio import Outage, connect, ride_out
from shared.settings import IngestSettings
from simulator.server import SimulatorConfig, SimulatorServer
from tests.helpers import alerts_of, free_port
from tests.test_ingestor import FeedServer, redis_server, silent, until

T = TypeVar("T")
KEYS = Keys()
FEED = "galio"
INSTANCE = f"feed_down:{FEED}"
DOWN_AFTER = 1.0
PASSWORD = "right-Pa55word"
WRONG = "wrong-Pa55word"


# --- the state machine (pure) -----------------------------------------------------------------------

START = 1000.0
WHERE = "ws://galio.example:8765/feed"


def health(down_after: float = 10.0) -> FeedHealth:
    return FeedHealth(FEED, WHERE, down_after, START)


def test_quiet_from_the_start_fires_once_after_down_after() -> None:
    h = health()
    assert h.evaluate(START + 9.9) == [] and h.status.state == "up"
    [alert] = h.evaluate(START + 10.0)
    assert_firing(alert, "no frame for 10s")
    assert alert.id == alert_id(INSTANCE, FEED, "feed_down", "firing", repr(START))
    assert alert.observed_at == alert.emitted_at == START + 10.0
    assert WHERE in alert.text and "1970-01-01 00:16:40 UTC" in alert.text  # since when
    for t in range(11, 40):  # failures and evaluations while down: nothing more
        h.failure("connection refused", START + t)
        assert h.evaluate(START + t + 0.5) == []
    assert h.status.state == "down" and h.status.since == START


def test_frames_keep_it_up_and_silence_counts_from_the_last_frame() -> None:
    h = health()
    for t in (3.0, 6.0, 9.0, 12.0):
        h.frame(START + t)
        assert h.evaluate(START + t + 0.5) == []
    assert h.evaluate(START + 21.9) == []
    [alert] = h.evaluate(START + 22.0)
    assert alert.id == alert_id(INSTANCE, FEED, "feed_down", "firing", repr(START + 12.0))


def test_the_reason_is_the_latest_failure_since_the_last_frame() -> None:
    h = health()
    h.failure("connection refused", START + 1)
    h.frame(START + 2)  # a frame clears the reason of the failures before it
    h.failure("HTTP 503 at handshake", START + 3)
    h.failure("bad credentials (auth rejected)", START + 4)
    [alert] = h.evaluate(START + 12)
    assert alert.labels["reason"] == "bad credentials (auth rejected)"
    assert alert.text.endswith("(10s): bad credentials (auth rejected).")
    assert h.status.reason == "bad credentials (auth rejected)"


def test_an_open_session_without_frames_reads_as_connected_but_silent() -> None:
    h = health()
    h.connected(START + 1)
    [alert] = h.evaluate(START + 10)
    assert alert.labels["reason"] == "connected but silent for 9s"
    h2 = health()
    h2.connected(START + 1)
    h2.failure("connected but silent for 30s", START + 31)  # the watchdog ended that session
    h2.connected(START + 32)
    assert h2.evaluate(START + 40)[0].labels["reason"] == "connected but silent for 30s"


def test_first_frame_after_down_resolves_once_with_the_same_down_since() -> None:
    h = health()
    [firing] = h.evaluate(START + 10)
    h.frame(START + 20.5)
    h.frame(START + 21.0)
    [resolved] = h.evaluate(START + 21.2)
    assert resolved.state == "resolved" and resolved.severity == "info"
    assert resolved.title == f"Resolved: feed_down on {FEED}" and resolved.keys == ("feed",)
    assert resolved.id == alert_id(INSTANCE, FEED, "feed_down", "resolved", repr(START))
    assert resolved.id != firing.id
    assert resolved.observed_at == START + 20.5 and resolved.emitted_at == START + 21.2
    assert "flow again" in resolved.text and "down for 20.5s" in resolved.text
    assert h.evaluate(START + 25) == [] and h.status.state == "up"
    assert h.status == FeedStatus("up", "", START + 20.5, START + 21.2)
    [again] = h.evaluate(START + 31.0)  # quiet again: a new outage, since the last frame
    assert again.id == alert_id(INSTANCE, FEED, "feed_down", "firing", repr(START + 21.0))


def test_an_adopted_outage_never_fires_again_and_a_frame_resolves_it() -> None:
    h = health()
    assert h.adopt(FeedStatus("down", "connection refused", 900.0, 930.0))
    assert h.evaluate(START + 60) == [] and h.status.state == "down"
    h.frame(START + 61)
    [resolved] = h.evaluate(START + 61.5)
    assert resolved.id == alert_id(INSTANCE, FEED, "feed_down", "resolved", repr(900.0))
    assert "connection refused" in resolved.text and "down for 2m 41s" in resolved.text
    up = health()
    assert not up.adopt(FeedStatus("up", "", 900.0, 930.0)) and up.status.state == "up"
    fired = health()
    fired.evaluate(START + 10)
    assert not fired.adopt(FeedStatus("down", "x", 900.0, 930.0)), "its own outage stands"
    late = health()
    late.frame(START + 1)  # a frame came while the status was being read
    assert late.adopt(FeedStatus("down", "x", 900.0, 930.0))
    assert [a.state for a in late.evaluate(START + 1.5)] == ["resolved"]


def test_status_hash_fields_read_back_exactly() -> None:
    status = FeedStatus("down", "connection refused", 1_700_000_000.123456, 1_700_000_030.5)
    assert FeedStatus.from_fields(status.fields()) == status
    assert FeedStatus.from_fields({}) is None
    assert FeedStatus.from_fields({"state": "sideways", "since": "1"}) is None
    assert FeedStatus.from_fields({"state": "down", "since": "soon"}) is None


def test_reasons_in_plain_words() -> None:
    def status(code: int) -> InvalidStatus:
        return InvalidStatus(Response(code, "", Headers()))

    def closed(code: int, reason: str = "") -> ConnectionClosedError:
        return ConnectionClosedError(Close(code, reason), None)

    none, some = SessionOutcome(), SessionOutcome(frames=3, duration=5.0)
    refused = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), [Errno 111] ...")
    cases: list[tuple[BaseException, SessionOutcome, bool, str]] = [
        (ConnectionRefusedError(111, "Connect call failed"), none, False, "connection refused"),
        (refused, none, False, "connection refused"),
        (closed(4001, "auth failed"), none, True, "bad credentials (auth rejected)"),
        (closed(4001), some, False, "bad credentials (auth rejected)"),
        (
            ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True),
            none,
            True,
            "bad credentials (auth rejected)",
        ),
        (closed(1008, "x" * 200), some, True, f"closed by the feed (code 1008: {'x' * 60})"),
        (closed(1011, "oops"), none, False, "closed by the feed (code 1011: oops)"),
        (ConnectionClosedError(None, None), some, False, "connection lost (no close frame)"),
        (status(401), none, False, "bad credentials (HTTP 401)"),
        (status(403), none, False, "bad credentials (HTTP 403)"),
        (status(503), none, False, "HTTP 503 at handshake"),
        (InvalidMessage("no HTTP"), none, False, "WebSocket handshake failed (InvalidMessage)"),
        (SilenceTimeout("watchdog"), some, False, "connected but silent for 30s"),
        (TimeoutError(), none, False, "timed out opening the connection"),
        (OSError(113, "No route to host"), none, False, "network error (No route to host)"),
        (RuntimeError("bug"), none, False, "unexpected error (RuntimeError)"),
    ]
    for exc, outcome, auth_sent, expected in cases:
        assert reason_of(exc, outcome, auth_sent=auth_sent, silence_timeout=30.0) == expected, exc
    dns = reason_of(
        socket.gaierror(-2, "Name or service not known"), none, auth_sent=False, silence_timeout=30.0
    )
    assert dns.startswith("DNS lookup failed")


def test_durations_for_people() -> None:
    assert [duration(s) for s in (0.3, 1.04, 30.0, 125.0, 3600.0 * 3 + 7 * 60)] == [
        "0.3s",
        "1s",
        "30s",
        "2m 05s",
        "3h 07m",
    ]


def test_alert_text_carries_no_credentials() -> None:
    uri = f"ws://desk:{PASSWORD}@galio.example:8765/feed?token=t0ken"
    settings = settings_for(uri, "redis://127.0.0.1:9/0")
    h = FeedHealth(FEED, display_uri(settings), 1.0, START)
    h.failure("bad credentials (auth rejected)", START + 0.5)
    [alert] = h.evaluate(START + 1)
    text = alert.model_dump_json()
    assert "galio.example:8765/feed" in text
    assert PASSWORD not in text and "t0ken" not in text and "desk" not in text


def test_feed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    default = IngestSettings(silence_timeout=12.0)
    assert default.feed_name == "galio" and default.feed_down_after is None
    assert default.feed_down_seconds == 12.0  # within the watchdog interval
    monkeypatch.setenv("MONITORX_FEED_NAME", "galio-backup")
    monkeypatch.setenv("MONITORX_FEED_DOWN_AFTER", "2.5")
    configured = IngestSettings()
    assert configured.feed_name == "galio-backup" and configured.feed_down_seconds == 2.5
    assert configured.keys.feed(configured.feed_name) == "mx:feed:galio-backup"
    for bad in ({"feed_down_after": 0}, {"feed_name": ""}, {"feed_name": "a b:c"}):
        with pytest.raises(ValidationError):
            IngestSettings(**bad)  # type: ignore[arg-type]


# --- helpers --------------------------------------------------------------------------------------


def settings_for(uri: str, redis_url: str, **extra: Any) -> IngestSettings:
    """Fast reconnects and a short feed_down window."""
    values: dict[str, Any] = {
        "galio_uri": uri,
        "redis_url": redis_url,
        "backoff_min": 0.05,
        "backoff_max": 0.2,
        "feed_down_after": DOWN_AFTER,
        **extra,
    }
    return IngestSettings(**values)


def closed_port_uri() -> str:
    return f"ws://127.0.0.1:{free_port()}/feed"


def feed_alerts(r: redis_lib.Redis) -> list[Alert]:
    return alerts_of(r, "feed_down")


def expected_id(state: str, since: str) -> str:
    """The id the contract derives: instance, feed, check, state and repr(down_since)."""
    assert repr(float(since)) == since, "since is stored as repr(float)"
    return alert_id(INSTANCE, FEED, "feed_down", state, since)


def status(r: redis_lib.Redis) -> dict[str, str]:
    return dict(r.hgetall(KEYS.feed(FEED)))


def play(coro: Coroutine[Any, Any, T]) -> T:
    """Run a scenario with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


@contextlib.contextmanager
def dispatcher_running(url: str) -> Iterator[None]:
    """A dispatcher (the built-in plan) in a thread, riding out Redis outages as ``monitorx
    dispatch`` does: it forwards the feed alerts to ``mx:alerts``. Stopped and joined on leaving."""
    dispatcher = Dispatcher(
        r=connect(url),
        rq_connection=connect(url, decode=False),
        keys=KEYS,
        plan=load_plan(None),
        consumer="feed-test",
        block_ms=50,
    )
    stopper = Stopper()
    thread = threading.Thread(target=ride_out, args=(dispatcher, stopper, Outage("dispatcher")))
    thread.start()
    try:
        yield
    finally:
        stopper.set()
        thread.join(10)


@contextlib.asynccontextmanager
async def ingestor_running(settings: IngestSettings) -> AsyncIterator[asyncio.Task[None]]:
    """The ingestor (``ingestor.client.run``) as a task, and a dispatcher; the ingestor is stopped
    as SIGTERM would on leaving, then the dispatcher."""
    stop = asyncio.Event()
    with dispatcher_running(str(settings.redis_url)):
        task = asyncio.create_task(run(settings, connect(str(settings.redis_url)), stop=stop))
        try:
            yield task
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def within(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll until ``predicate()`` is truthy and return it."""
    found: list[T] = []

    def check() -> bool:
        value = predicate()
        if value:
            found.append(value)
        return bool(value)

    await until(check, timeout, what)
    return found[0]


def reconnects(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        "reconnecting in" in rec.getMessage() for rec in caplog.records if rec.name == "ingestor.client"
    )


def assert_firing(alert: Alert, reason: str) -> None:
    assert alert.check == "feed_down" and alert.state == "firing" and alert.severity == "critical"
    assert alert.instance == INSTANCE and alert.account == FEED and alert.keys == ("feed",)
    assert alert.title == f"Feed down: {FEED}"
    assert reason in alert.text, alert.text
    assert alert.emitted_at >= alert.observed_at > 0


# --- the three ways a feed goes down ----------------------------------------------------------------


def test_connection_refused_fires_one_alert_across_many_reconnects(
    r: redis_lib.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestor.client")
    uri = closed_port_uri()
    settings = settings_for(uri, redis_url)

    async def scenario() -> float:
        started = time.monotonic()
        async with ingestor_running(settings):
            await until(lambda: feed_alerts(r), DOWN_AFTER + 5, "the feed_down alert")
            elapsed = time.monotonic() - started
            seen = reconnects(caplog)
            await until(lambda: reconnects(caplog) >= seen + 10, 15, "ten more reconnect attempts")
        return elapsed

    elapsed = play(scenario())
    assert elapsed <= DOWN_AFTER + 1, elapsed
    [alert] = feed_alerts(r)  # one alert, not one per reconnect attempt
    assert_firing(alert, "connection refused")
    assert uri in alert.text
    assert r.hget(KEYS.counters, COUNTER_ALERTS) == "1"
    fields = status(r)
    assert fields["state"] == "down" and fields["reason"] == "connection refused"
    assert alert.id == expected_id("firing", fields["since"])
    assert float(fields["updated_at"]) >= float(fields["since"])


def test_auth_rejected_says_bad_credentials(r: redis_lib.Redis, redis_url: str) -> None:
    async def scenario() -> None:
        config = SimulatorConfig(username="desk", password=PASSWORD, hz=20)
        async with SimulatorServer(config) as sim:
            settings = settings_for(sim.url, redis_url, galio_username="desk", galio_password=WRONG)
            async with ingestor_running(settings):
                await until(lambda: feed_alerts(r), DOWN_AFTER + 5, "the feed_down alert")

    play(scenario())
    [alert] = feed_alerts(r)
    assert_firing(alert, "bad credentials")
    assert status(r)["reason"] == "bad credentials (auth rejected)"
    stored = " ".join([alert.model_dump_json(), *status(r).values()])
    assert WRONG not in stored and PASSWORD not in stored


@pytest.mark.parametrize(
    "silence_timeout", [30.0, 0.3], ids=["down-before-the-watchdog", "watchdog-fired-first"]
)
def test_connected_but_silent_says_silent(r: redis_lib.Redis, redis_url: str, silence_timeout: float) -> None:
    with FeedServer(silent) as server:
        settings = settings_for(server.uri, redis_url, silence_timeout=silence_timeout)

        async def scenario() -> None:
            async with ingestor_running(settings):
                await until(lambda: feed_alerts(r), DOWN_AFTER + 5, "the feed_down alert")

        play(scenario())
    [alert] = feed_alerts(r)
    assert_firing(alert, "connected but silent for")
    assert status(r)["reason"].startswith("connected but silent for")


# --- recovery, restart, Redis away ------------------------------------------------------------------


def test_frames_flowing_again_resolve_with_the_same_down_since(r: redis_lib.Redis, redis_url: str) -> None:
    port = free_port()
    settings = settings_for(f"ws://127.0.0.1:{port}", redis_url)

    async def scenario() -> str:
        async with ingestor_running(settings):
            await until(lambda: feed_alerts(r), DOWN_AFTER + 5, "the feed_down alert")
            since = status(r)["since"]
            async with SimulatorServer(SimulatorConfig(port=port, hz=20)):
                await until(lambda: len(feed_alerts(r)) >= 2, 10, "the resolved alert")
        return since

    since = play(scenario())
    firing, resolved = feed_alerts(r)
    assert firing.id == expected_id("firing", since)
    assert resolved.id == expected_id("resolved", since)
    assert resolved.state == "resolved" and resolved.severity == "info"
    assert resolved.title == f"Resolved: feed_down on {FEED}"
    assert resolved.instance == INSTANCE and resolved.account == FEED and resolved.keys == ("feed",)
    assert "down for" in resolved.text and resolved.observed_at > firing.observed_at
    assert status(r)["state"] == "up"
    assert r.hget(KEYS.counters, COUNTER_ALERTS) == "2"


def test_restart_during_an_outage_adopts_it_and_fires_no_second_alert(
    r: redis_lib.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingestor.client")
    port = free_port()
    settings = settings_for(f"ws://127.0.0.1:{port}", redis_url)

    async def first_run() -> None:
        async with ingestor_running(settings):
            await until(lambda: feed_alerts(r), DOWN_AFTER + 5, "the feed_down alert")

    async def second_run() -> None:
        async with ingestor_running(settings):
            started, seen = time.monotonic(), reconnects(caplog)
            await until(
                lambda: time.monotonic() > started + DOWN_AFTER + 1 and reconnects(caplog) >= seen + 5,
                15,
                "the restarted ingestor past its feed_down window",
            )
            assert len(feed_alerts(r)) == 1, "the restarted ingestor fired the outage again"
            async with SimulatorServer(SimulatorConfig(port=port, hz=20)):
                await until(lambda: len(feed_alerts(r)) >= 2, 10, "the resolved alert")

    play(first_run())
    since = status(r)["since"]
    play(second_run())
    firing, resolved = feed_alerts(r)
    assert firing.state == "firing" and resolved.state == "resolved"
    assert resolved.id == expected_id("resolved", since)
    assert status(r)["state"] == "up"


def test_alert_raised_while_redis_is_away_is_written_when_it_returns(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = settings_for(closed_port_uri(), url)

    async def scenario() -> None:
        with contextlib.ExitStack() as redis_up:  # Redis outlives the ingestor
            async with ingestor_running(settings) as task:
                started = time.monotonic()
                await until(
                    lambda: time.monotonic() > started + DOWN_AFTER + 1 or task.done(), 10, "feed_down"
                )
                assert not task.done()
                redis_up.enter_context(redis_server(port, tmp_path))
                r = redis_lib.Redis.from_url(url, decode_responses=True)
                await until(lambda: feed_alerts(r), 20, "the alert written once Redis is back")
            [alert] = feed_alerts(r)
            assert_firing(alert, "connection refused")
            assert status(r)["state"] == "down"

    play(scenario())
