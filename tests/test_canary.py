"""The dead-man's switch canary (``shared.canary``) on a real Redis, each layer on its own, then
the whole pipeline as real processes pinging a local HTTP server: pings come about every N
seconds; each layer killed in turn (SIGKILL) stops them within 2 × N, and they resume when it is
restarted; the canary never reaches a receiver, never counts as an account, and its round trip
is recorded."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from pydantic import SecretStr, ValidationError

from alerter.cli import build_alerter
from alerter.deadman import BACKLOG, Pinger
from alerter.receivers import legacy_receivers
from engine.jobs import RUN_CANARY, make_queue
from engine.plan import Plan, build, load_config
from engine.registry import Registry
from ingestor.client import run as run_ingestor
from ingestor.frames import parse_frame
from monitorx.metrics import canary_metrics
from monitorx.procs import Child
from monitorx.status import problems, read_status
from shared import keys as K
from shared.canary import CANARY_ACCOUNT, CANARY_FIELD, CanaryTrip
from shared.config import Config, parse
from shared.keys import Keys
from shared.models import Snapshot
from shared.redisio import Publisher, connect
from shared.settings import AlertSettings, IngestSettings
from simulator.frames import binance_account
from tests.helpers import free_port, in_process, wait_until
from tests.pipeline import Pipeline, leaks, read_jsonl, redis_contents, write_config
from tests.slack_standin import SlackStandin
from workers.jobs import on_job_failure

KEYS = Keys()
EVERY = 1.0
"""The pipeline's canary period N (seconds)."""
SLACK = 0.5
"""Seconds a ping may land after the last moment its canary may arrive (queue, HTTP)."""
LOW = binance_account(1)
LOW_BALANCE = {"check": "low_balance", "accounts": ["*"], "params": {"thresholds": {"USDT": 10000}}}
"""Every account, so the canary's name too, were it ever routed."""
WILDCARD = """
checks:
  low:
    check: low_balance
    accounts: ["*"]
    params: {thresholds: {USDT: 10000}}
"""


def plan_of(text: str = WILDCARD) -> Plan:
    return build(parse(text, "test.yaml"), Registry.discover())


def canary_entry(seq: int, sent_at: float, every: float = 30.0) -> dict[str, str]:
    return CanaryTrip(seq=seq, sent_at=sent_at, every=every).entry_fields()


class PingServer:
    """A loopback HTTP server in a thread standing in for the dead-man's switch service: records
    the time and path of every GET, answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.token = secrets.token_hex(12)
        self.pings: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.pings.append((time.time(), self.path))
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/ping/{self.token}"

    def times(self) -> list[float]:
        with self._lock:
            return [t for t, _ in self.pings]

    def __enter__(self) -> PingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def pings() -> Iterator[PingServer]:
    with PingServer() as server:
        yield server


# -- the record ---------------------------------------------------------------------------------


def test_a_trip_reads_back_from_each_of_its_three_layouts() -> None:
    sent = CanaryTrip(seq=7, sent_at=100.25, every=30.0)
    assert CanaryTrip.from_entry(sent.entry_fields()) == sent
    assert sent.entry_fields()["account"] == CANARY_ACCOUNT and sent.entry_fields()[CANARY_FIELD] == "1"
    ran = sent.model_copy(update={"worker": "w1", "job_started_at": 100.5})
    assert CanaryTrip.from_alert_entry(ran.alert_fields()) == ran
    arrived = ran.model_copy(update={"arrived_at": 101.0})
    assert CanaryTrip.from_hash(arrived.hash_fields()) == arrived
    assert arrived.hash_fields()["round_trip_s"] == "0.75" and not arrived.stale
    assert sent.model_copy(update={"arrived_at": 160.5}).stale  # over 2 x 30 s
    assert CanaryTrip.from_entry({"account": "A", "seq": "1", "observed_at": "1.0"}) is None
    assert CanaryTrip.from_alert_entry({CANARY_FIELD: "not json"}) is None


def test_a_feed_account_with_the_reserved_name_is_quarantined() -> None:
    frame = json.dumps({"pos": {CANARY_ACCOUNT: {"USDTwalletBalance": "1"}, LOW: {"USDTwalletBalance": "2"}}})
    parsed = parse_frame(frame, 100.0, iter(range(1, 10)).__next__)
    assert [s.account for s in parsed.snapshots] == [LOW]
    [entry] = parsed.quarantined
    assert CANARY_ACCOUNT in entry.reason and "reserved" in entry.reason


# -- ingestor -------------------------------------------------------------------------------------


def ingest_settings(redis_url: str, every: float) -> IngestSettings:
    """Nothing listens at the Galio address: the canary goes whatever the feed's state."""
    values: dict[str, Any] = {
        "galio_uri": f"ws://127.0.0.1:{free_port()}/feed",
        "redis_url": redis_url,
        "backoff_min": 0.05,
        "backoff_max": 0.2,
        "canary_seconds": every,
    }
    return IngestSettings(**values)


def run_ingestor_until(settings: IngestSettings, done: Callable[[], object], timeout: float = 15.0) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_ingestor(settings, connect(str(settings.redis_url)), stop=stop))
        deadline = time.monotonic() + timeout
        while not done():
            assert not task.done(), "the ingestor stopped"
            assert time.monotonic() < deadline, "timed out waiting for the ingestor"
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def canaries_on_stream(r: redis_lib.Redis) -> list[dict[str, str]]:
    entries: Any = r.xrange(KEYS.snapshots)
    return [fields for _, fields in entries if CANARY_FIELD in fields]


def test_the_ingestor_sends_a_canary_every_period_with_no_feed_and_writes_nothing_else(
    r: redis_lib.Redis, redis_url: str
) -> None:
    started = time.time()
    run_ingestor_until(ingest_settings(redis_url, 0.2), lambda: len(canaries_on_stream(r)) >= 4)
    found = canaries_on_stream(r)
    assert {tuple(sorted(f)) for f in found} == {("account", "canary", "every", "observed_at", "seq")}
    trips = [CanaryTrip.from_entry(f) for f in found]
    assert all(t is not None and t.every == 0.2 for t in trips)
    sent = [t.sent_at for t in trips if t is not None]
    assert sent[0] - started >= 0.15  # the first one period after the start
    assert 0.1 <= statistics.median(b - a for a, b in itertools.pairwise(sent)) <= 0.3
    assert [int(f["seq"]) for f in found] == sorted({int(f["seq"]) for f in found})
    assert not r.exists(KEYS.latest(CANARY_ACCOUNT))
    assert r.zscore(KEYS.seen, CANARY_ACCOUNT) is None
    assert r.hget(KEYS.counters, K.COUNTER_SNAPSHOTS) is None


def test_with_the_canary_off_the_ingestor_sends_none_and_forgets_the_last_trip(
    r: redis_lib.Redis, redis_url: str
) -> None:
    r.hset(KEYS.canary, mapping={"seq": "1", "sent_at": "1.0", "every": "30.0", "arrived_at": "2.0"})
    run_ingestor_until(ingest_settings(redis_url, 0), lambda: not r.exists(KEYS.canary))
    assert canaries_on_stream(r) == []


# -- dispatcher and worker --------------------------------------------------------------------------


def test_a_canary_becomes_one_canary_job_never_a_check_and_the_job_writes_only_its_trip(
    r: redis_lib.Redis, redis_url: str
) -> None:
    d, worker, _ = in_process(redis_url, plan_of())  # "*": every account, the canary's name too
    now = time.time()
    for seq in (1, 2):
        r.xadd(KEYS.snapshots, canary_entry(seq, now + seq))  # type: ignore[arg-type]
    assert d.step() == 1  # one job for the newest of the batch
    r.xadd(KEYS.snapshots, canary_entry(3, now + 3))  # type: ignore[arg-type]
    assert d.step() == 0  # latest wins: the job of canary 2 still waits
    [job] = make_queue(connect(redis_url, decode=False)).jobs
    assert job.func_name == RUN_CANARY and job.args == [2, now + 2, 30.0]
    assert r.hget(KEYS.counters, K.COUNTER_JOBS) in (None, "0")
    assert r.xpending(KEYS.snapshots, K.DISPATCH_GROUP)["pending"] == 0
    assert d.newest_observed_at is None and d.read_lag_s is None  # a canary is no data
    before = time.time()
    worker.work(burst=True)
    entries: Any = r.xrange(KEYS.alerts)
    [(_, fields)] = entries
    assert list(fields) == [CANARY_FIELD]
    trip = CanaryTrip.from_alert_entry(fields)
    assert trip is not None and (trip.seq, trip.sent_at, trip.every) == (2, now + 2, 30.0)
    assert trip.worker == worker.name and trip.job_started_at is not None and trip.job_started_at >= before
    assert not r.exists(KEYS.queued("canary", CANARY_ACCOUNT))
    assert r.hget(KEYS.counters, K.COUNTER_EVALS) is None
    assert [k for k in r.scan_iter(KEYS.state("*", "*"))] == []


def test_a_failed_canary_job_alerts_nobody(r: redis_lib.Redis, redis_url: str) -> None:
    d, _, _ = in_process(redis_url, plan_of())
    r.xadd(KEYS.snapshots, canary_entry(1, time.time()))  # type: ignore[arg-type]
    d.step()
    rq = connect(redis_url, decode=False)
    [job] = make_queue(rq).jobs
    assert job.func_name == RUN_CANARY
    on_job_failure(job, rq, RuntimeError, RuntimeError("boom"), None)
    assert r.xlen(KEYS.alerts) == 0


# -- alerter: router and pinger -----------------------------------------------------------------------


def test_the_router_records_a_canary_and_acks_it_but_never_routes_it(
    r: redis_lib.Redis, tmp_path: Path
) -> None:
    settings = AlertSettings(consumer="alert-canary", alerts_jsonl=tmp_path / "alerts.jsonl")
    alerter = build_alerter(r, settings, Config(), legacy_receivers(settings), block_ms=20).start()
    handed: list[CanaryTrip] = []
    alerter.router.on_canary = handed.append
    sent = time.time() - 0.5
    ran = CanaryTrip(seq=5, sent_at=sent, every=30.0, worker="w1", job_started_at=sent + 0.1)
    r.xadd(KEYS.alerts, ran.alert_fields())  # type: ignore[arg-type]
    r.xadd(KEYS.alerts, {CANARY_FIELD: "{broken"})
    before = time.time()
    wait_until(lambda: alerter.step() == 0 and handed, 5, what="the canary routed")
    [trip] = handed
    assert trip.seq == 5 and trip.arrived_at is not None and trip.arrived_at >= before
    recorded = CanaryTrip.from_hash(r.hgetall(KEYS.canary))
    assert recorded == trip and recorded.round_trip_s is not None and 0.5 <= recorded.round_trip_s < 5
    assert r.xpending(KEYS.alerts, K.ROUTE_GROUP)["pending"] == 0
    assert r.hlen(KEYS.firing) == 0 and r.zcard(KEYS.groups) == 0 and r.xlen(KEYS.dead) == 0
    assert [r.xlen(n) for n in r.scan_iter(KEYS.notify("*"))] == [0]  # the JSONL receiver's
    assert read_jsonl(tmp_path / "alerts.jsonl") == []


def trip_now(seq: int = 1, every: float = 30.0, took: float = 0.2) -> CanaryTrip:
    now = time.time()
    return CanaryTrip(seq=seq, sent_at=now - took, every=every, arrived_at=now)


def test_the_pinger_gets_the_url_once_per_arrival_and_counts_it(
    r: redis_lib.Redis, pings: PingServer
) -> None:
    pinger = Pinger(r, KEYS, SecretStr(pings.url), wait=0.05)
    for seq in (1, 2):
        pinger.arrived(trip_now(seq))
    assert pinger.step() == 1 and pinger.step() == 1 and pinger.step() == 0
    assert [path for _, path in pings.pings] == [f"/ping/{pings.token}"] * 2
    assert r.hget(KEYS.counters, K.COUNTER_CANARY_PINGS) == "2"


def test_a_stale_canary_is_not_pinged(r: redis_lib.Redis, pings: PingServer) -> None:
    pinger = Pinger(r, KEYS, SecretStr(pings.url), wait=0.05)
    pinger.arrived(trip_now(every=1.0, took=2.5))  # over 2 x 1 s
    assert pinger.step() == 0 and pings.pings == []


def test_failed_pings_are_counted_and_logged_without_the_url(
    r: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with PingServer(status=500) as erroring:
        down = f"http://127.0.0.1:{free_port()}/ping/{erroring.token}"
        for url in (erroring.url, down):
            pinger = Pinger(r, KEYS, SecretStr(url), wait=0.05, timeout=2.0)
            pinger.arrived(trip_now())
            assert pinger.step() == 1
        assert len(erroring.pings) == 1
    assert r.hget(KEYS.counters, K.COUNTER_CANARY_PING_FAILURES) == "2"
    assert "HTTP 500" in caplog.text and "failed" in caplog.text
    assert erroring.token not in caplog.text and "/ping/" not in caplog.text


def test_arrivals_never_block_the_router_when_pings_pile_up(r: redis_lib.Redis) -> None:
    pinger = Pinger(r, KEYS, SecretStr("http://127.0.0.1:9/x"), wait=0.05)
    started = time.monotonic()
    for seq in range(BACKLOG * 3):
        pinger.arrived(trip_now(seq))
    assert time.monotonic() - started < 0.5
    assert pinger.waiting == BACKLOG


def test_the_deadman_url_must_be_http() -> None:
    with pytest.raises(ValidationError) as caught:
        AlertSettings(deadman_url="file:///etc/secret-token")  # type: ignore[arg-type]
    [error] = caught.value.errors()  # what settings_or_exit prints: the message, not the input
    assert "http:// or https://" in error["msg"] and "secret-token" not in error["msg"]
    assert AlertSettings(deadman_url="  ").deadman_url is None  # type: ignore[arg-type]  # a blank .env line


# -- status and metrics ---------------------------------------------------------------------------


def test_status_shows_the_last_trip_and_a_problem_once_it_is_overdue(r: redis_lib.Redis) -> None:
    config = load_config(None)
    now = time.time()
    Publisher(r, KEYS).publish(
        [Snapshot(account=a, venue="x", observed_at=now, raw={}) for a in (LOW, CANARY_ACCOUNT)]
    )
    assert read_status(r, KEYS, config, now).canary is None
    trip = CanaryTrip(seq=3, sent_at=now - 12.4, every=5.0, worker="w1", arrived_at=now - 12.0)
    r.hset(KEYS.canary, mapping=trip.hash_fields())  # type: ignore[arg-type]
    status = read_status(r, KEYS, config, now)
    assert [a.account for a in status.accounts] == [LOW]  # the reserved name never shows
    assert status.canary is not None and status.canary.round_trip_s == pytest.approx(0.4)
    assert status.canary.age_s == pytest.approx(12.0) and status.canary.every == 5.0
    assert "the canary has not come through for 12 s: some layer is stuck" in problems(status)
    assert not any("canary" in line for line in problems(read_status(r, KEYS, config, now - 3.0)))
    metrics = {m.name: m.samples for m in canary_metrics(status)}
    assert metrics["monitorx_canary_round_trip_seconds"][0].value == pytest.approx(0.4)
    assert metrics["monitorx_canary_last_arrival_age_seconds"][0].value == pytest.approx(12.0)
    assert json.loads(status.model_dump_json())["canary"]["overdue"] is True


# -- the whole pipeline ---------------------------------------------------------------------------------


def kill(pipeline: Pipeline, children: list[Child]) -> float:
    """SIGKILL the children; the moment of the kill."""
    pipeline.expect_exit(children)
    at = time.time()
    for child in children:
        child.proc.send_signal(signal.SIGKILL)
    for child in children:
        child.proc.wait(timeout=10)
    return at


def assert_pings_stop(pipeline: Pipeline, pings: PingServer, killed_at: float) -> None:
    """No ping later than ``killed_at + 2N`` (plus SLACK for a ping in flight), over a window of
    a further 2N."""
    quiet_from = killed_at + 2 * EVERY + SLACK
    late = lambda: [t for t in pings.times() if t > quiet_from]  # noqa: E731
    pipeline.wait(lambda: late() or time.time() > quiet_from + 2 * EVERY, 30, "the quiet window")
    assert late() == [], f"pings {[round(t - killed_at, 2) for t in late()]} s after the kill"


def wait_ping_after(pipeline: Pipeline, pings: PingServer, at: float, what: str) -> float:
    return pipeline.wait(lambda: next((t for t in pings.times() if t > at), None), 30, what)


def test_each_layer_killed_stops_the_pings_within_two_periods_and_its_restart_resumes_them(
    redis_url: str, tmp_path: Path, pings: PingServer
) -> None:
    config = write_config(tmp_path / "monitorx.yaml", {"low": LOW_BALANCE}, stale_after=60)
    env = {"MONITORX_CANARY_SECONDS": str(EVERY), "MONITORX_DEADMAN_URL": pings.url}
    with SlackStandin() as slack:
        pipeline = Pipeline(tmp_path / "run", redis_url, config, slack=slack, env=env)
        try:
            pipeline.start_core(workers=2)
            pipeline.start_simulator("--scenario", "steady", "--hz", "5", "--low-at", "0")
            run_through_the_kills(pipeline, pings)
            assert_never_a_receiver_nor_an_account(pipeline, slack, config)
            assert_no_secret_leaked(pipeline, pings)
        finally:
            pipeline.close()


def run_through_the_kills(pipeline: Pipeline, pings: PingServer) -> None:
    first = pipeline.wait(lambda: len(pings.times()) >= 5 and pings.times(), 30, "five pings")
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert 0.5 * EVERY <= statistics.median(gaps) <= 1.5 * EVERY, gaps
    layers: list[tuple[str, Callable[[], list[Child]], Callable[[], object]]] = [
        ("ingestor", lambda: [pipeline.ingestor], pipeline.start_ingestor),  # type: ignore[list-item]
        ("dispatcher", lambda: [pipeline.dispatcher], pipeline.start_dispatcher),  # type: ignore[list-item]
        ("workers", lambda: [w for w in pipeline.workers if w.alive], lambda: restart_workers(pipeline)),
        ("alerter", lambda: [pipeline.alerter], pipeline.start_alerter),  # type: ignore[list-item]
    ]
    for name, victims, restart in layers:
        sent = newest_canary(pipeline.r)
        pipeline.wait(lambda: newest_canary(pipeline.r) > sent, 10, "a canary sent")  # noqa: B023
        killed_at = kill(pipeline, victims())  # one canary in flight (or none: the ingestor)
        assert_pings_stop(pipeline, pings, killed_at)
        if name == "dispatcher":  # the status says so too
            status = read_status(pipeline.r, KEYS, load_config(None), time.time())
            assert any("the canary has not come through" in line for line in problems(status))
        restarted = time.time()
        restart()
        wait_ping_after(pipeline, pings, restarted, f"a ping after the {name} restarted")


def newest_canary(r: redis_lib.Redis) -> int:
    """The seq of the newest canary among the last entries of the snapshots stream (0: none)."""
    entries: Any = r.xrevrange(KEYS.snapshots, count=100)
    trips = [CanaryTrip.from_entry(fields) for _, fields in entries]
    return max((t.seq for t in trips if t is not None), default=0)


def restart_workers(pipeline: Pipeline) -> None:
    for n in range(2):
        pipeline.start_worker(f"canary-worker-{n}-{secrets.token_hex(3)}")


def assert_never_a_receiver_nor_an_account(pipeline: Pipeline, slack: SlackStandin, config: Path) -> None:
    delivered = pipeline.wait(lambda: pipeline.alerts(), 20, "the low balance delivered")
    assert {a["check"] for a in delivered} >= {"low_balance"}
    assert not any(CANARY_ACCOUNT in json.dumps(a) or "canary" in a["check"] for a in delivered)
    assert slack.ok and not any(CANARY_ACCOUNT in str(post.json()) for post in slack.ok)
    assert not pipeline.r.exists(KEYS.latest(CANARY_ACCOUNT))
    assert pipeline.r.zscore(KEYS.seen, CANARY_ACCOUNT) is None
    status = read_status(pipeline.r, KEYS, load_config(config), time.time())
    assert status.accounts and CANARY_ACCOUNT not in {a.account for a in status.accounts}
    assert not any(a.alert.account == CANARY_ACCOUNT for a in status.alerts)
    assert status.canary is not None and 0 < status.canary.round_trip_s < 2 * EVERY
    worker = status.canary.worker
    assert worker is not None and worker.startswith(("e2e-worker", "canary-worker")), worker
    assert int(pipeline.r.hget(KEYS.counters, K.COUNTER_CANARY_PINGS) or 0) > 0
    assert pipeline.r.hget(KEYS.counters, K.COUNTER_CANARY_PING_FAILURES) is None


def assert_no_secret_leaked(pipeline: Pipeline, pings: PingServer) -> None:
    texts = [("output", pipeline.procs.all_output())]
    texts += [(str(key), blob.decode(errors="replace")) for key, blob in redis_contents(pipeline.redis_url)]
    assert leaks(texts, [pings.token]) == []
