"""``monitorx web [--host H] [--port P] [--config PATH]``: the status page, the status JSON and
the Prometheus metrics, read-only, over HTTP (stdlib ``ThreadingHTTPServer``).

Every request reads the status model once (:func:`monitorx.status.read_status`) and builds its
answer from it alone; nothing is cached and nothing is kept between requests, so several
replicas, and forking workers elsewhere, need no Prometheus multiprocess mode.

- ``GET /metrics``: Prometheus text format (:class:`StatusCollector` in a private registry);
- ``GET /api/status``: what ``monitorx status --json`` prints (:func:`monitorx.statuscmd.as_json`);
- ``GET /``: a server-rendered page, no JavaScript, refreshing itself every :data:`REFRESH_S`
  seconds, every text HTML-escaped: problems first, processes, accounts and their data age,
  firing alerts and why each is or is not notified, dead letters, feeds;
- anything else: 404. When Redis is unreachable or answers an error: 503 with a short text (the
  error's class only: never a URL or a password).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.plan import load_config
from monitorx.status import Status, problems, read_status
from monitorx.statuscmd import as_json
from shared import keys as K
from shared.cli import config_or_exit, config_path, settings_or_exit
from shared.config import Config
from shared.heartbeat import ROLES
from shared.keys import Keys
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import connect
from shared.settings import CommonSettings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
"""Address ``monitorx web`` listens on (default loopback; ``0.0.0.0`` in a container)."""
DEFAULT_PORT = 8080
"""Port ``monitorx web`` listens on (default 8080)."""
REFRESH_S = 10
"""The page reloads itself every this many seconds (``<meta http-equiv="refresh">``)."""
PREFIX = "monitorx_"

COUNTERS: dict[str, str] = {
    K.COUNTER_FRAMES: "Frames received from the feeds.",
    K.COUNTER_MALFORMED: "Frames that could not be read (quarantined).",
    K.COUNTER_INVALID_VALUES: "Invalid values found in snapshots (skipped).",
    K.COUNTER_SNAPSHOTS: "Snapshots published to the snapshots stream.",
    K.COUNTER_JOBS: "Check jobs enqueued.",
    K.COUNTER_COALESCED: "Snapshots coalesced into a job already queued.",
    K.COUNTER_UNCHANGED: "Evaluations skipped: the pair at rest, its inputs unchanged.",
    K.COUNTER_EVALS: "Check evaluations run.",
    K.COUNTER_ALERTS: "Alerts emitted by the checks.",
    K.COUNTER_DELIVERED: "Alerts delivered to a receiver.",
    K.COUNTER_DEAD: "Alerts given up on (dead letters written).",
    K.COUNTER_CHECK_ERRORS: "Check evaluations that raised an error.",
    K.COUNTER_REJECTED_JOBS: "Jobs refused by the job allowlist.",
    K.COUNTER_NOTIFICATIONS: "Notifications sent.",
    K.COUNTER_MAYBE_DUPLICATED: "Sends that may have repeated an earlier one.",
}
"""Each counter of the counters hash (``Keys.counters``) exposed as ``monitorx_<name>_total``
(0 while absent), with its help text."""

MARKS = {"firing": "notified", "silenced": "silenced", "inhibited": "inhibited"}
"""A firing alert's :attr:`~monitorx.status.FiringAlert.mark` -> the ``mark`` label of
``monitorx_alerts_firing``."""


# -- metrics ----------------------------------------------------------------------------------


class StatusCollector(Collector):
    """Reads the status model on each scrape (``read``) and yields it as metrics. A Redis error
    is raised out of ``generate_latest`` (the caller answers 503)."""

    def __init__(self, read: Callable[[], Status]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield from status_metrics(self.read())


def status_metrics(status: Status) -> Iterator[Metric]:
    """Every metric of one status: gauges of the current figures, then the counters."""
    yield from _process_metrics(status)
    yield from _stream_metrics(status)
    yield from _alert_metrics(status)
    for name, help_text in COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, help_text, value=status.counters.get(name, 0))


def _gauge(name: str, help_text: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, labels=list(labels))


def _process_metrics(status: Status) -> Iterator[Metric]:
    up = _gauge("processes_up", "Processes with a fresh heartbeat, per role.", ["role"])
    for role in ROLES:
        up.add_metric([role], len(status.fresh(role)))
    feed = _gauge("feed_up", "1 when the ingestor's feed is up, else 0.", ["feed"])
    for f in status.feeds:
        feed.add_metric([f.name], 1 if f.state == "up" else 0)
    age = _gauge("account_data_age_seconds", "Seconds since the newest snapshot of the account.", ["account"])
    for a in status.accounts:
        age.add_metric([a.account], a.age_s)
    found = problems(status)
    yield up
    yield feed
    yield age
    yield GaugeMetricFamily(
        PREFIX + "healthy", "1 when monitorx status finds no problem.", value=0 if found else 1
    )
    yield GaugeMetricFamily(PREFIX + "problems", "Problems monitorx status finds.", value=len(found))


def _stream_metrics(status: Status) -> Iterator[Metric]:
    labels = ["stream", "group"]
    pending = _gauge("stream_pending_entries", "Entries delivered and not acknowledged.", labels)
    lag = _gauge("stream_lag_entries", "Entries not delivered to the group yet.", labels)
    behind = _gauge("stream_behind_seconds", "Age of the group's oldest unacknowledged entry.", labels)
    for g in status.groups:
        pending.add_metric([g.stream, g.group], g.pending)
        behind.add_metric([g.stream, g.group], g.behind_s)
        if g.lag is not None:  # Redis cannot tell after entries inside the range were deleted
            lag.add_metric([g.stream, g.group], g.lag)
    q = status.queue
    jobs = _gauge("queue_jobs", "Check jobs in the RQ queue by state.", ["queue", "state"])
    for state, value in (("waiting", q.depth), ("started", q.started), ("failed", q.failed)):
        jobs.add_metric([q.name, state], value)
    yield from (pending, lag, behind, jobs)


def _alert_metrics(status: Status) -> Iterator[Metric]:
    firing = _gauge("alerts_firing", "Alerts firing now, by whether they are notified.", ["mark"])
    for mark, label in MARKS.items():
        firing.add_metric([label], sum(a.mark == mark for a in status.alerts))
    yield firing
    yield GaugeMetricFamily(PREFIX + "dead_letters", "Dead letters waiting.", value=status.dead_letters)
    yield GaugeMetricFamily(PREFIX + "quarantined_frames", "Frames quarantined.", value=status.quarantined)


# -- the page ---------------------------------------------------------------------------------


def render_page(status: Status) -> str:
    """The status page: problems first, then processes, accounts, firing alerts, dead letters
    and feeds. Every text from Redis is HTML-escaped; no JavaScript."""
    found = problems(status)
    head = f"{len(found)} problem(s)" if found else "healthy"
    body = [
        f"<h1>MonitorX: {_e(head)}</h1>",
        f"<p>at {_e(_when(status.at))} UTC</p>",
        _list("Problems", found),
        _table("Processes", ("role", "name", "host", "last step"), _processes(status)),
        _table("Accounts", ("account", "data age", ""), _accounts(status)),
        _table("Firing alerts", ("account", "check", "severity", "title", "notified?"), _alerts(status)),
        f"<h2>Dead letters</h2><p>{status.dead_letters} waiting</p>",
        _table("Feeds", ("feed", "state", "since (UTC)", "reason"), _feeds(status)),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}"><title>MonitorX: {_e(head)}</title></head>'
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _list(title: str, items: list[str]) -> str:
    lines = "".join(f"<li>{_e(i)}</li>" for i in items)
    return f"<h2>{_e(title)}</h2>" + (f"<ul>{lines}</ul>" if items else "<p>none</p>")


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return f"<h2>{_e(title)}</h2><p>none</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    cells = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>{_e(title)}</h2><table><tr>{head}</tr>{cells}</table>"


def _processes(status: Status) -> list[tuple[str, ...]]:
    return [
        (p.heartbeat.role, p.heartbeat.name, p.heartbeat.host, f"{p.age_s:.0f} s ago")
        for p in status.processes
    ]


def _accounts(status: Status) -> list[tuple[str, ...]]:
    return [(a.account, f"{a.age_s:.0f} s", "STALE" if a.stale else "") for a in status.accounts]


def _alerts(status: Status) -> list[tuple[str, ...]]:
    return [
        (f.alert.account, f.alert.check, f.alert.severity, f.alert.title, f.muted or "notified")
        for f in status.alerts
    ]


def _feeds(status: Status) -> list[tuple[str, ...]]:
    return [(f.name, f.state, "" if f.since is None else _when(f.since), f.reason) for f in status.feeds]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- the server -------------------------------------------------------------------------------


class WebServer(ThreadingHTTPServer):
    """The HTTP server of the three views; ``read`` gives the status model (one read per call)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], read: Callable[[], Status]) -> None:
        super().__init__(address, Handler)
        self.read = read
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(read))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An unexpected error in a handler: logged (never printed); the connection is closed."""
        log.exception("error answering %s", client_address)


class Handler(BaseHTTPRequestHandler):
    """GET only: ``/``, ``/api/status``, ``/metrics``; 404 otherwise; 503 on a Redis error."""

    server: WebServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        views: dict[str, Callable[[], tuple[bytes, str]]] = {
            "/": self._page,
            "/api/status": self._json,
            "/metrics": self._metrics,
        }
        view = views.get(path)
        if view is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            body, content_type = view()
        except redis.RedisError as exc:
            log.warning("%s: Redis unavailable: %s", path, type(exc).__name__)
            text = f"Redis unavailable ({type(exc).__name__})\n".encode()
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, text, "text/plain; charset=utf-8")
            return
        self._send(HTTPStatus.OK, body, content_type)

    def _page(self) -> tuple[bytes, str]:
        return render_page(self.server.read()).encode(), "text/html; charset=utf-8"

    def _json(self) -> tuple[bytes, str]:
        status = self.server.read()
        return json.dumps(as_json(status, problems(status))).encode(), "application/json"

    def _metrics(self) -> tuple[bytes, str]:
        return generate_latest(self.server.registry), CONTENT_TYPE_LATEST

    def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines go to the module's logger at DEBUG, never to standard error directly."""
        log.debug("%s " + format, self.address_string(), *args)


def reader(
    r: redis.Redis, keys: Keys, config: Config, clock: Callable[[], float] = time.time
) -> Callable[[], Status]:
    """One status read per call, at ``clock()``."""
    return lambda: read_status(r, keys, config, clock())


# -- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx web",
        description="Serve the status page (/), the status JSON (/api/status) and Prometheus metrics "
        "(/metrics), read-only.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--config", type=Path, help="configuration file (default: $MONITORX_CONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; exit 0 then (2 bad input, 1 invalid configuration)."""
    args = _parser().parse_args(argv)
    settings = settings_or_exit(CommonSettings)
    setup_logging(settings.log_level, settings.log_format)
    path = config_path(args.config)
    config = config_or_exit(lambda: load_config(path))
    r = connect(str(settings.redis_url))
    server = WebServer((args.host, args.port), reader(r, settings.keys, config))
    stopper = Stopper().install()
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    log.info("serving on http://%s:%d/ (/api/status, /metrics)", args.host, server.server_address[1])
    stopper.wait()
    server.shutdown()
    server.server_close()
    r.close()
    return 0
