"""The fault suite's measuring stick and its breakable parts.

* :func:`tally` counts, per expected alert key ``(check, account, state)`` and per sink, what was
  **lost** (a breach the legacy semantics alert on that never reached the sink) and what was
  **duplicated** (one alert delivered to a sink more than once, or two distinct alerts of one key
  inside the key's window, the check's cooldown), from the JSONL sink, the Slack stand-in's
  accepted posts and, optionally, a generic-webhook stand-in. :func:`assert_clean` asserts the
  result.
* :class:`FaultRedis` is a private redis-server (optionally with an append-only file) that a test
  can kill, restart on the same port (with or without its data), freeze and thaw.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis as redis_lib

from monitorx.procs import Child, Supervisor, free_port
from simulator.server import SimulatorConfig, SimulatorServer
from tests.pipeline import KEYS, Pipeline, leaks, redis_contents, rq_info, slack_text, write_config
from tests.slack_standin import Received, SlackStandin

Pipelines = Callable[..., Pipeline]
"""The ``pipelines`` fixture: ``pipelines(config=None, *, redis_url=None, env=None, **kwargs)``."""
RedisFactory = Callable[..., "FaultRedis"]
"""The ``make_redis`` fixture: ``make_redis(appendonly=False, password=None)``."""
AlertKey = tuple[str, str, str]
"""``(check, account, state)``."""

SLACK_DETAILS = re.compile(r"\*check\* `([^`]*)` · \*account\* `([^`]*)`")
SLACK_STATE = re.compile(r"^\S+ \[(FIRING|RESOLVED)\]")
FAST_ENV: Mapping[str, str] = {
    "MONITORX_TICK_SECONDS": "0.5",
    "MONITORX_CLAIM_IDLE_MS": "2000",
    "MONITORX_JOB_TIMEOUT": "3",
    "MONITORX_RETRY_IDLE_MS": "200",
    "MONITORX_RETRY_MAX_MS": "1000",
    "MONITORX_SILENCE_TIMEOUT": "5",
    "MONITORX_FEED_DOWN_AFTER": "30",
    "MONITORX_STABLE_AFTER": "1",
    "MONITORX_BACKOFF_MIN": "0.1",
    "MONITORX_BACKOFF_MAX": "0.5",
}
"""Settings of every fault-suite pipeline (a test's own ``env`` wins): every interval short, so
that a fault and the recovery from it fit in seconds; but ``feed_down`` only after 30 s, so a
simulator started after the core is no fault (the feed scenarios lower it)."""
REDIS_START_TIMEOUT = 20.0
"""Seconds a redis-server may take to answer PING after a (re)start, AOF loading included."""


# -- configurations and feeds ------------------------------------------------------------------------


def low_balance_config(
    path: Path, *, accounts: Iterable[str] = ("BINANCE-*",), cooldown: float = 300, **params: Any
) -> Path:
    """A native configuration with one ``low_balance`` instance, ``low-balance`` (the legacy
    thresholds unless ``thresholds`` is given), and nothing else: the built-in stale-data
    instance waits ``stale_after`` (60 s), longer than any run, so no stale alert muddies a run
    whose feed is broken on purpose."""
    low = {"check": "low_balance", "accounts": list(accounts), "params": params, "cooldown": cooldown}
    return write_config(path, {"low-balance": low})


class BroadcastFeed:
    """The simulator's server (no scenario stream, no credentials) in a thread of the test, for
    frames scripted by the test: :meth:`send` gives one text frame to every client connected now.
    ``with BroadcastFeed() as feed: pipelines(galio_uri=feed.uri, auth=False)``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = SimulatorServer(SimulatorConfig(max_frames=0, ping_interval=None))
        self._thread = threading.Thread(target=self._loop.run_forever, name="broadcast-feed", daemon=True)

    def __enter__(self) -> BroadcastFeed:
        self._thread.start()
        self._call(self._server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def uri(self) -> str:
        return self._server.url

    @property
    def clients(self) -> int:
        return self._server.clients

    def send(self, text: str) -> int:
        """Send one frame to every connected client; returns how many it reached."""
        return int(self._call(self._server.broadcast(text)))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)


# -- stopping -----------------------------------------------------------------------------------------


def stop_cleanly(pipeline: Pipeline, drain_timeout: float = 20.0) -> None:
    """SIGTERM every running process, each of which must exit 0: the ingestor first and alone
    (see test_ingestor_stops_when_galio_closes_as_sigterm_arrives), then the simulator, the
    dispatcher and the workers; the alerter last, once it drained the alerts stream."""
    ingestor = [c for c in pipeline.procs.running() if c is pipeline.ingestor]
    codes = pipeline.stop(ingestor)
    codes += pipeline.stop([c for c in pipeline.procs.running() if c is not pipeline.alerter])
    pipeline.wait(pipeline.drained, drain_timeout, "the alerter to drain the alerts stream")
    codes += pipeline.stop(pipeline.procs.running())
    assert [(name, code) for name, code in codes if code != 0] == [], codes


# -- secrets -----------------------------------------------------------------------------------------


def secret_leaks(pipeline: Pipeline, *more: str, redis_url: str | None = None) -> list[str]:
    """``where: secret`` for each place a secret of the pipeline (or ``more``) shows up: the
    output of every process, every key and value in Redis (rq job data inflated), ``rq info``
    and the JSONL sink."""
    url = redis_url or pipeline.redis_url
    outputs = [(f"output of {c.name}", pipeline.procs.output(c)) for c in pipeline.procs.children]
    stored = [(f"redis {key!r}", blob.decode("utf-8", "replace")) for key, blob in redis_contents(url)]
    jsonl = pipeline.jsonl.read_text() if pipeline.jsonl.exists() else ""
    texts = [*outputs, *stored, ("rq info", rq_info(url)), ("jsonl", jsonl)]
    return leaks(texts, [*pipeline.secrets, *more])


# -- the ledger --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One alert the legacy semantics raise in the run. ``window``: seconds within which two
    distinct alerts of this key count as a duplicate (the check's cooldown); the default, the
    whole run, expects exactly one alert of the key. ``instance``: only alerts of that check
    instance count (two instances of one check on one account raise distinct alerts)."""

    check: str
    account: str
    state: str = "firing"
    window: float = math.inf
    instance: str | None = None

    @property
    def key(self) -> AlertKey:
        return (self.check, self.account, self.state)

    def matches(self, delivery: Delivery) -> bool:
        return delivery.key == self.key and self.instance in (None, delivery.instance)

    def __str__(self) -> str:
        return " ".join(self.key) + ("" if self.instance is None else f" ({self.instance})")


@dataclass(frozen=True)
class Delivery:
    """One alert as one sink got it. ``alert_id`` is the alert's id, or ``text:<post text>`` for
    a Slack post no known alert record renders to; ``at`` is the alert's ``observed_at`` (the
    post's arrival time when unmatched); ``instance`` is None when unknown (unmatched post)."""

    sink: str
    alert_id: str
    key: AlertKey
    at: float
    instance: str | None = None


@dataclass(frozen=True)
class Ledger:
    """What :func:`tally` found: each entry of ``lost`` and ``duplicates`` is a readable line
    naming the sink and the alert; ``delivered`` counts deliveries per sink; ``unexpected`` lists
    keys delivered but not expected (information, not a failure)."""

    lost: list[str]
    duplicates: list[str]
    delivered: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        counts = ", ".join(f"{sink} {n}" for sink, n in sorted(self.delivered.items())) or "none"
        lines = [f"lost {len(self.lost)}, duplicates {len(self.duplicates)} (delivered: {counts})"]
        lines += [f"  LOST {line}" for line in self.lost]
        lines += [f"  DUPLICATE {line}" for line in self.duplicates]
        lines += [f"  unexpected {line}" for line in self.unexpected]
        return "\n".join(lines)


def tally(
    expected: Iterable[Expect | AlertKey],
    pipeline: Pipeline,
    slack: SlackStandin | None = None,
    *,
    webhook: SlackStandin | None = None,
) -> Ledger:
    """Count lost and duplicated alerts on the JSONL sink, on ``slack`` (its accepted posts, each
    matched to an alert through :func:`tests.pipeline.slack_text`) and on ``webhook`` (a stand-in
    receiving generic webhook posts, the alert record itself). Alert records are read from the
    JSONL file and, while Redis answers, the alerts stream; an alert on the stream that a sink
    never got is lost too (wait until the alerter drained the stream before tallying)."""
    wanted = [e if isinstance(e, Expect) else Expect(*e) for e in expected]
    streamed = _streamed(pipeline)
    records = [*pipeline.alerts(), *streamed]
    by_sink: dict[str, list[Delivery]] = {"jsonl": [_delivery("jsonl", rec) for rec in pipeline.alerts()]}
    if slack is not None:
        by_sink["slack"] = _slack_deliveries(slack.ok, records)
    if webhook is not None:
        by_sink["webhook"] = [_delivery("webhook", post.json()) for post in webhook.ok]
    lost: list[str] = []
    duplicates: list[str] = []
    for sink, deliveries in by_sink.items():
        lost += _lost(sink, deliveries, wanted) + _undelivered(sink, deliveries, streamed)
        duplicates += _repeated(sink, deliveries) + _inside_window(sink, deliveries, wanted)
    unexpected = sorted(
        {
            f"{d.sink}: {' '.join(d.key)}"
            for ds in by_sink.values()
            for d in ds
            if not any(e.matches(d) for e in wanted)
        }
    )
    return Ledger(lost, duplicates, {s: len(ds) for s, ds in by_sink.items()}, unexpected)


def assert_clean(ledger: Ledger, max_duplicates: int = 0) -> None:
    """Nothing lost, and at most ``max_duplicates`` duplicates over all sinks."""
    assert not ledger.lost and len(ledger.duplicates) <= max_duplicates, (
        f"expected 0 lost and at most {max_duplicates} duplicate(s):\n{ledger}"
    )


def _streamed(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The alert records on the alerts stream (none when Redis does not answer)."""
    try:
        entries: Any = pipeline.r.xrange(KEYS.alerts)
    except redis_lib.RedisError:
        return []
    return [json.loads(fields["alert"]) for _, fields in entries if "alert" in fields]


def _delivery(sink: str, record: Mapping[str, Any]) -> Delivery:
    key = (str(record["check"]), str(record["account"]), str(record["state"]))
    instance = None if record.get("instance") is None else str(record["instance"])
    return Delivery(sink, str(record["id"]), key, float(record["observed_at"]), instance)


def _slack_deliveries(posts: Iterable[Received], records: list[dict[str, Any]]) -> list[Delivery]:
    """Each accepted post as a delivery of the alert whose Slack text is the post's (posts of one
    text go to its distinct alerts in order, the extra ones to the last); a post no known record
    renders to is its own alert, keyed from its Block Kit and timed by its arrival."""
    by_text: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        by_text[slack_text(record)].setdefault(str(record["id"]), record)
    used: Counter[str] = Counter()
    found: list[Delivery] = []
    for post in posts:
        body = post.json()
        text = str(body.get("text", ""))
        matches = list(by_text.get(text, {}).values())
        if matches:
            found.append(_delivery("slack", matches[min(used[text], len(matches) - 1)]))
            used[text] += 1
        else:
            found.append(Delivery("slack", f"text:{text}", _slack_key(body), post.at))
    return found


def _slack_key(body: Mapping[str, Any]) -> AlertKey:
    """``(check, account, state)`` of a post made by :func:`alerter.sinks.slack_message`."""
    state = SLACK_STATE.match(str(body.get("text", "")))
    sections = [b["text"]["text"] for b in body.get("blocks", []) if b.get("type") == "section"]
    details = SLACK_DETAILS.search(_unescape(sections[0])) if sections else None
    if state is None or details is None:
        return ("?", "?", "?")
    return (details.group(1), details.group(2), state.group(1).lower())


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _lost(sink: str, deliveries: list[Delivery], wanted: list[Expect]) -> list[str]:
    return [f"{sink}: {e}" for e in wanted if not any(e.matches(d) for d in deliveries)]


def _undelivered(sink: str, deliveries: list[Delivery], streamed: list[dict[str, Any]]) -> list[str]:
    """One line per alert on the alerts stream that never reached the sink."""
    got = {d.alert_id for d in deliveries}
    missing = {str(rec["id"]): _delivery(sink, rec) for rec in streamed if str(rec["id"]) not in got}
    where = KEYS.alerts
    return [f"{sink}: {' '.join(d.key)} (alert {i}) on {where} never delivered" for i, d in missing.items()]


def _repeated(sink: str, deliveries: list[Delivery]) -> list[str]:
    """One line per extra delivery of one alert id."""
    counts = Counter(d.alert_id for d in deliveries)
    first = {d.alert_id: d for d in reversed(deliveries)}
    return [
        f"{sink}: {' '.join(first[i].key)} (alert {i[:80]}) delivered {n} times"
        for i, n in counts.items()
        for _ in range(n - 1)
    ]


def _inside_window(sink: str, deliveries: list[Delivery], wanted: list[Expect]) -> list[str]:
    """One line per distinct alert of an expected key raised within the key's window of the
    previous one."""
    found: list[str] = []
    for e in wanted:
        times: dict[str, float] = {}
        for d in deliveries:
            if e.matches(d):
                times.setdefault(d.alert_id, d.at)
        ordered = sorted(times.items(), key=lambda item: item[1])
        for (_, before), (later, at) in pairwise(ordered):
            if at - before < e.window:
                found.append(f"{sink}: {e} again {at - before:.1f}s later (alert {later[:80]})")
    return found


# -- a breakable Redis -------------------------------------------------------------------------------


class FaultRedis:
    """A private redis-server on a free loopback port with its data in ``workdir/data``.
    ``appendonly``: persist every write to an append-only file, fsynced at each write, so a
    SIGKILL loses nothing acknowledged. ``password``: clients must authenticate (it is in
    :attr:`url`). Close it with :meth:`close` (the fixture does)."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make install installs it)")
        self.binary = binary
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        self.port = free_port()
        self.starts = 0
        self._sup = Supervisor(cwd=workdir)
        self.child = self._start()

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{self.password}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.child.alive

    def client(self) -> redis_lib.Redis:
        """A new client (``decode_responses=True``); the caller closes it."""
        return redis_lib.Redis.from_url(self.url, decode_responses=True)

    def kill(self) -> None:
        """SIGKILL the server (frozen or not) and wait for it to be gone."""
        if self.child.alive:
            self.child.proc.send_signal(signal.SIGKILL)
        self.child.proc.wait(timeout=10)

    def restart(self, empty: bool = False) -> None:
        """Kill the server if it runs, then start it again on the same port; ``empty``: delete
        its data (RDB and append-only files) first, as a new instance would start."""
        self.kill()
        if empty:
            shutil.rmtree(self.datadir)
            self.datadir.mkdir()
        self.child = self._start()

    def hang(self) -> None:
        """SIGSTOP: the port stays open, every command waits."""
        self.child.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`hang`."""
        self.child.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.child.alive:
            self.resume()
        self._sup.stop_all(timeout=5)

    def _argv(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        auth = [] if self.password is None else ["--requirepass", self.password]
        return [
            *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *(persistence or ["--appendonly", "no"]),
            *auth,
            *("--dir", str(self.datadir)),
        ]

    def _start(self) -> Child:
        self.starts += 1
        log = (self.workdir / f"redis.{self.starts}.log").open("wb")
        try:
            child = self._sup.start("redis", self._argv(), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child holds its own descriptor
        self._wait_ping(child)
        return child

    def _wait_ping(self, child: Child) -> None:
        client = redis_lib.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis_lib.ConnectionError:  # refused, or still loading its AOF
                    if not child.alive or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on {self.url}") from None
                    time.sleep(0.02)
        finally:
            client.close()
