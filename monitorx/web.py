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
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from engine.plan import load_config
from monitorx.metrics import StatusCollector
from monitorx.status import Status, problems, read_status
from monitorx.statuscmd import as_json
from shared.cli import config_or_exit, config_path, settings_or_exit
from shared.config import Config
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
