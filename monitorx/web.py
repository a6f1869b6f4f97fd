"""``monitorx web [--host H] [--port P] [--config PATH]``: the status page, the status JSON and
the Prometheus metrics over HTTP (stdlib ``ThreadingHTTPServer``), and the silences' add and expire
for an operator holding the token.

Every request reads the status model once (:func:`monitorx.status.read_status`) and builds its
answer from it alone; nothing is cached and nothing is kept between requests, so several
replicas, and forking workers elsewhere, need no Prometheus multiprocess mode.

- ``GET /metrics``: Prometheus text format (:class:`StatusCollector` in a private registry);
- ``GET /api/status``: what ``monitorx status --json`` prints (:func:`monitorx.statuscmd.as_json`);
- ``GET /``: a server-rendered page, no JavaScript, refreshing itself every :data:`REFRESH_S`
  seconds, every text HTML-escaped: problems first, processes and their heartbeat details,
  accounts with their data age and latest figures, firing alerts and why each is or is not
  notified, silences, dead letters, feeds;
- ``GET /silences``: the silences again, not refreshing (a refresh would wipe a form being
  filled), with an ``expire`` button on each and the ``add`` form when writes are allowed;
- ``POST /silences`` (form fields ``matchers``, one per line in ``monitorx silence add``'s syntax,
  ``duration``, ``reason``, ``by``) and ``POST /silences/<id>/expire``: plain HTML forms
  (``application/x-www-form-urlencoded``), written through :class:`shared.silences.SilenceStore`
  exactly as ``monitorx silence add`` / ``expire`` write (same checks, same maximum duration
  ``MONITORX_SILENCE_MAX_HOURS``, expiring wakes the alerter's groups). Answered ``303 See Other``
  to ``/silences?done=...``, which says once what happened;
- anything else: 404. When Redis is unreachable or answers an error: 503 with a short text (the
  error's class only: never a URL or a password).

Writes need the operator token ``MONITORX_WEB_TOKEN`` (:class:`shared.settings.WebSettings`), given
as the form field ``token`` or as ``Authorization: Bearer <token>``, compared in constant time.
Without a configured token the server is read-only: the forms are not shown (a line says why) and
every POST is 403. A wrong or missing token is 403, bad input (a bad matcher, a duration) 400 with
the reason, a body over :data:`MAX_BODY` bytes 413; none of them writes anything. The token is
never logged and never written into a page.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

from engine.checks.fmt import duration, utc
from engine.health import Process
from engine.plan import load_config
from monitorx.metrics import StatusCollector
from monitorx.status import AccountAge, DeadLetter, FiringAlert, Status, problems, read_status
from monitorx.statuscmd import as_json
from shared.cli import config_or_exit, config_path, settings_or_exit
from shared.config import Config, parse_duration
from shared.keys import Keys
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import connect
from shared.settings import WebSettings
from shared.silences import Silence, SilenceStore, format_duration

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
"""Address ``monitorx web`` listens on (default loopback; ``0.0.0.0`` in a container)."""
DEFAULT_PORT = 8080
"""Port ``monitorx web`` listens on (default 8080)."""
REFRESH_S = 10
"""The page reloads itself every this many seconds (``<meta http-equiv="refresh">``)."""
MAX_BODY = 16 * 1024
"""Largest POST body accepted, in bytes (16 KiB); a larger one is refused with 413."""
DRAIN_MAX = 1024 * 1024
"""A refused body up to this many bytes is read and dropped, so the client gets the answer
rather than a reset connection; a larger one is not read at all."""
REQUEST_TIMEOUT_S = 10.0
"""Seconds a connection may stay silent while a request is read before it is closed."""
ERROR_SHOWN = 120
"""Characters of a dead letter's error shown on the page (longer ones end in ``...``)."""
MAIN_TOTALS = (
    ("totalWalletBalance", "wallet"),
    ("totalMarginBalance", "margin balance"),
    ("totalUnrealizedProfit", "unrealized PnL"),
    ("totalMaintMargin", "maint. margin"),
)
"""The account totals shown on the page (snapshot ``totals`` key, column title)."""
NOTICES = MappingProxyType(
    {
        "added": "Silence {id} added.",
        "expired": "Silence {id} expired: what it muted is notified again.",
        "unchanged": "Silence {id} had already expired: nothing changed.",
    }
)
"""What ``/silences?done=KIND&id=ID`` says after a write (only these; the id is checked)."""

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
_SILENCE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_EXPIRE_PATH = re.compile(r"/silences/([^/]+)/expire")
_HTML_HEADERS = MappingProxyType(
    {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
        "Referrer-Policy": "no-referrer",
    }
)
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#1d2330;background:#fafbfc}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;color:#33415c}
table{border-collapse:collapse;background:#fff;box-shadow:0 0 0 1px #dde2ea}
th,td{padding:.25em .7em;text-align:left;vertical-align:top;border-bottom:1px solid #e8ecf1}
th{background:#eef1f6;font-weight:600;white-space:nowrap}.num{text-align:right;white-space:nowrap}
tr.bad td{background:#fdecea}tr.muted td{color:#6b7585}
.ok{color:#1e7d32}.problems{background:#fdecea;border-left:4px solid #c62828;padding:.5em 1em}
.problems li{margin:.2em 0}.summary{color:#4a5568}.notice{background:#e8f5e9;padding:.5em 1em}
.readonly{color:#6b7585;font-style:italic}form.inline{display:inline;white-space:nowrap}
form.add{display:grid;grid-template-columns:max-content 24em;gap:.4em .8em;align-items:start}
textarea{height:4.5em}input,textarea{font:inherit}form.add button{justify-self:start}
"""


# -- the page ---------------------------------------------------------------------------------


class Markup(str):
    """A table cell that is already HTML (built here from escaped parts): not escaped again."""


class Num(str):
    """A table cell holding a number: right-aligned."""


Cell = str
Row = tuple[Cell, ...]


def render_page(status: Status, writable: bool = False) -> str:
    """The live page: problems first, then a summary, processes, accounts, firing alerts,
    silences, dead letters and feeds. Every text from Redis is HTML-escaped; no JavaScript.
    ``writable``: a link to the silences' forms (the forms themselves live on ``/silences``)."""
    body = [
        _problems(problems(status)),
        _summary(status),
        _table("Processes", PROCESS_COLUMNS, _processes(status), _process_marks(status)),
        _table("Accounts", _account_columns(), _accounts(status), _account_marks(status)),
        _table("Firing alerts", ALERT_COLUMNS, _alerts(status), _alert_marks(status)),
        _silences_section(status, writable, forms=False),
        _dead_letters(status),
        _table("Feeds", ("feed", "state", "since (UTC)", "reason"), _feeds(status), _feed_marks(status)),
    ]
    return _document(_head_text(status), body, refresh=True)


def render_silences(status: Status, writable: bool, notice: str = "") -> str:
    """The silences page (not refreshing): the table with an expire button each and the add
    form when ``writable``, else a line saying why not; ``notice`` (plain text) on top."""
    body = [
        '<h1>MonitorX: silences</h1><p><a href="/">&larr; status page</a></p>',
        f'<p class="notice">{_e(notice)}</p>' if notice else "",
        _silences_section(status, writable, forms=True),
        _add_form(status) if writable else "",
    ]
    return _document("silences", body, refresh=False)


def notice_of(query: str) -> str:
    """The text of ``done=KIND&id=ID`` (one of :data:`NOTICES`), or ``""`` for anything else."""
    params = parse_qs(query)
    kind, ids = params.get("done", [""])[0], params.get("id", [""])
    if kind not in NOTICES or not _SILENCE_ID.fullmatch(ids[0]):
        return ""
    return NOTICES[kind].format(id=ids[0])


def _document(title: str, body: Sequence[str], refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}; url=/">' if refresh else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width">{meta}'
        f"<title>MonitorX: {_e(title)}</title><style>{_STYLE}</style></head>"
        "<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )


def _head_text(status: Status) -> str:
    found = len(problems(status))
    return f"{found} problem(s)" if found else "healthy"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _problems(found: list[str]) -> str:
    if not found:
        return '<h1>MonitorX: <span class="ok">healthy</span></h1>'
    items = "".join(f"<li>{_e(p)}</li>" for p in found)
    return f'<h1>MonitorX: {len(found)} problem(s)</h1><ul class="problems">{items}</ul>'


def _summary(status: Status) -> str:
    stale = sum(a.stale for a in status.accounts)
    q = status.queue
    parts = [
        f"at {utc(status.at)} UTC",
        f"{len(status.processes)} process(es)",
        f"{len(status.accounts)} account(s), {stale} stale",
        f"{status.firing} alert(s) firing ({status.silenced} silenced, {status.inhibited} inhibited)",
        f"queue {q.depth} waiting, {q.started} running, {q.failed} failed",
        f"{status.dead_letters} dead letter(s), {status.quarantined} quarantined frame(s)",
    ]
    return f'<p class="summary">{_e(" · ".join(parts))}</p>'


def _table(title: str, columns: Sequence[str], rows: Sequence[Row], marks: Sequence[str] = ()) -> str:
    """A titled table (``none`` when empty); ``marks``: a CSS class per row (``bad``, ``muted``)."""
    if not rows:
        return f"<h2>{_e(title)}</h2><p>none</p>"
    numeric = [isinstance(c, Num) for c in rows[0]] + [False] * len(columns)
    head = "".join(_th(c, n) for c, n in zip(columns, numeric, strict=False))
    classes = [*marks, *[""] * len(rows)]
    body = "".join(_row(row, mark) for row, mark in zip(rows, classes, strict=False))
    return f"<h2>{_e(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _th(column: str, numeric: bool) -> str:
    return f'<th class="num">{_e(column)}</th>' if numeric else f"<th>{_e(column)}</th>"


def _row(row: Row, mark: str) -> str:
    attr = f' class="{mark}"' if mark else ""
    return f"<tr{attr}>" + "".join(_cell(c) for c in row) + "</tr>"


def _cell(cell: Cell) -> str:
    if isinstance(cell, Markup):
        return f"<td>{cell}</td>"
    return f'<td class="num">{_e(cell)}</td>' if isinstance(cell, Num) else f"<td>{_e(cell)}</td>"


# -- sections ---------------------------------------------------------------------------------

PROCESS_COLUMNS = ("role", "name", "host", "pid", "version", "up for", "last step", "details")
ALERT_COLUMNS = ("account", "check", "severity", "title", "since", "notified?")


def _processes(status: Status) -> list[Row]:
    return [
        (
            b.role,
            b.name,
            b.host,
            Num(b.pid),
            b.version,
            duration(status.at - b.started_at),
            f"{duration(p.age_s)} ago" + ("" if p.fresh else " (stale)"),
            role_details(p, status.at),
        )
        for p in status.processes
        for b in (p.heartbeat,)
    ]


def _process_marks(status: Status) -> list[str]:
    return ["" if p.fresh else "bad" for p in status.processes]


def role_details(process: Process, now: float) -> str:
    """What only the process's role knows (heartbeat ``details``), as one line: the ingestor's
    feeds, the dispatcher's read lag, a worker's current job, the alerter's backlog."""
    details = process.heartbeat.details
    describe = _DETAILS.get(process.heartbeat.role, _generic)
    return describe(details, now) or _generic(details, now)


def _ingestor(details: Mapping[str, Any], now: float) -> str:
    feeds = details.get("feeds")
    if not isinstance(feeds, dict):
        return ""
    return "; ".join(f"feed {name} {_feed_state(f, now)}" for name, f in sorted(feeds.items()))


def _feed_state(feed: object, now: float) -> str:
    if not isinstance(feed, dict):
        return "?"
    last = feed.get("last_frame_at")
    seen = f", last frame {duration(now - last)} ago" if isinstance(last, int | float) else ", no frame yet"
    return f"{feed.get('state', '?')}{seen}"


def _dispatcher(details: Mapping[str, Any], now: float) -> str:
    lag, newest = details.get("read_lag_s"), details.get("newest_observed_at")
    if not isinstance(lag, int | float):
        return "no snapshot read yet"
    data = f", newest data {duration(now - newest)} old" if isinstance(newest, int | float) else ""
    return f"read lag {lag:.2f} s{data}"


def _worker(details: Mapping[str, Any], now: float) -> str:
    job = details.get("current_job")
    return f"running job {job}" if job else "idle"


def _alerter(details: Mapping[str, Any], now: float) -> str:
    backlog = details.get("backlog")
    if not isinstance(backlog, dict):
        return ""
    waiting = ", ".join(f"{name} {count}" for name, count in sorted(backlog.items()))
    return f"backlog: {waiting}" if waiting else "no receiver"


def _generic(details: Mapping[str, Any], now: float) -> str:
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(details.items()))


_DETAILS: Mapping[str, Callable[[Mapping[str, Any], float], str]] = MappingProxyType(
    {"ingestor": _ingestor, "dispatcher": _dispatcher, "worker": _worker, "alerter": _alerter}
)


def _account_columns() -> tuple[str, ...]:
    return ("account", "venue", "data age", *(title for _, title in MAIN_TOTALS), "positions")


def _accounts(status: Status) -> list[Row]:
    return [_account(a) for a in status.accounts]


def _account(a: AccountAge) -> Row:
    totals = tuple(_money(a.figures.get(key)) for key, _ in MAIN_TOTALS)
    age = duration(a.age_s) + (" STALE" if a.stale else "")
    return (a.account, a.venue, Num(age), *totals, Num(a.positions))


def _account_marks(status: Status) -> list[str]:
    return ["bad" if a.stale else "" for a in status.accounts]


def _money(value: float | None) -> Num:
    return Num("" if value is None else f"{value:,.2f}")


def _ordered_alerts(status: Status) -> list[FiringAlert]:
    """Notified alerts first (they are the problems), then silenced, then inhibited."""
    rank = {"firing": 0, "silenced": 1, "inhibited": 2}
    return sorted(status.alerts, key=lambda f: rank[f.mark])


def _alerts(status: Status) -> list[Row]:
    return [
        (
            f.alert.account,
            f.alert.check,
            f.alert.severity,
            f.alert.title,
            f"{duration(status.at - f.alert.observed_at)} ago",
            f.muted or "notified",
        )
        for f in _ordered_alerts(status)
    ]


def _alert_marks(status: Status) -> list[str]:
    return ["bad" if f.mark == "firing" else "muted" for f in _ordered_alerts(status)]


def _silences_section(status: Status, writable: bool, forms: bool) -> str:
    columns = ("id", "state", "ends (UTC)", "by", "matchers", "reason")
    expire = forms and writable
    rows = [_silence(s, status.at, expire) for s in status.silences]
    table = _table("Silences", (*columns, "") if expire else columns, rows)
    return table + _silence_hint(writable, forms)


def _silence(s: Silence, now: float, expire: bool) -> Row:
    left = s.ends_at - now
    ends = f"{utc(s.ends_at)} (in {format_duration(left)})"
    row = (s.id, s.state(now), ends, s.by, Markup("<br>".join(_e(m) for m in s.matchers)), s.reason)
    return (*row, _expire_form(s.id)) if expire else row


def _silence_hint(writable: bool, forms: bool) -> str:
    if not writable:
        return (
            '<p class="readonly">Read-only: no operator token is configured (MONITORX_WEB_TOKEN), '
            "so silences cannot be added or expired here (monitorx silence add | expire).</p>"
        )
    return "" if forms else '<p><a href="/silences">Add or expire silences</a></p>'


def _expire_form(silence_id: str) -> Markup:
    action = f"/silences/{quote(silence_id, safe='')}/expire"
    return Markup(
        f'<form class="inline" method="post" action="{_e(action)}">'
        '<input type="password" name="token" placeholder="operator token" size="14" '
        'autocomplete="off" required> '
        '<button type="submit">expire</button></form>'
    )


def _add_form(status: Status) -> str:
    return (
        '<h2>Add a silence</h2><form class="add" method="post" action="/silences">'
        '<label for="matchers">matchers, one per line</label>'
        '<textarea id="matchers" name="matchers" required placeholder="account=BINANCE-AAZ12-UM&#10;'
        'check=~&quot;delta|hedge&quot;"></textarea>'
        '<label for="duration">for (e.g. 90m, 2h, 1d)</label>'
        '<input id="duration" name="duration" required value="2h">'
        '<label for="reason">comment (why)</label><input id="reason" name="reason" required>'
        '<label for="by">author</label><input id="by" name="by" required>'
        '<label for="token">operator token</label>'
        '<input id="token" type="password" name="token" autocomplete="off" required>'
        '<span></span><button type="submit">add silence</button></form>'
    )


def _dead_letters(status: Status) -> str:
    title = f"Dead letters: {status.dead_letters} waiting"
    if not status.dead_letters:
        return f"<h2>{_e(title)}</h2><p>none</p>"
    shown = f" (newest {len(status.dead_newest)}; all: monitorx dlq list)"
    columns = ("failed (UTC)", "receiver", "account", "alert", "error")
    return _table(title + shown, columns, [_dead(d) for d in status.dead_newest])


def _dead(d: DeadLetter) -> Row:
    error = d.error if len(d.error) <= ERROR_SHOWN else d.error[: ERROR_SHOWN - 3] + "..."
    return (utc(d.failed_at), d.receiver, d.account or "?", d.title or "(unreadable alert)", error)


def _feeds(status: Status) -> list[Row]:
    return [(f.name, f.state, "" if f.since is None else utc(f.since), f.reason) for f in status.feeds]


def _feed_marks(status: Status) -> list[str]:
    return ["" if f.state == "up" else "bad" for f in status.feeds]


# -- the writes -------------------------------------------------------------------------------


class Refused(Exception):
    """A request answered with an error status and a one-line reason (plain text)."""

    def __init__(self, code: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Operator:
    """The page's writes: silences added and expired in ``store`` for whoever gives ``token``
    (None: read-only), longest ``max_duration`` seconds, at ``clock()``."""

    token: SecretStr | None
    store: SilenceStore
    max_duration: float
    clock: Callable[[], float] = field(default=time.time)

    @property
    def writable(self) -> bool:
        return self.token is not None

    def allows(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time; never with no token configured)."""
        if self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.get_secret_value().encode())

    def add(self, form: Mapping[str, str]) -> dict[str, str]:
        """``monitorx silence add`` from a form; the redirect's query. ValueError: bad input."""
        matchers = [line.strip() for line in form.get("matchers", "").splitlines() if line.strip()]
        try:
            duration = parse_duration(form.get("duration", ""))
        except ValueError as exc:
            raise ValueError(f"duration: {exc}") from None
        reason, by = form.get("reason", ""), form.get("by", "")
        silence = self.store.add(matchers, duration, reason, by, self.clock(), self.max_duration)
        log.info("silence %s added from the web page by %r: %s", silence.id, silence.by, silence.matchers)
        return {"done": "added", "id": silence.id}

    def expire(self, silence_id: str) -> dict[str, str]:
        """``monitorx silence expire``; the redirect's query. Refused 404: no such silence."""
        if self.store.expire(silence_id, self.clock()):
            log.info("silence %s expired from the web page", silence_id)
            return {"done": "expired", "id": silence_id}
        if self.store.get(silence_id) is None:
            raise Refused(HTTPStatus.NOT_FOUND, f"no silence with id {silence_id!r}")
        return {"done": "unchanged", "id": silence_id}


# -- the server -------------------------------------------------------------------------------


class WebServer(ThreadingHTTPServer):
    """The HTTP server of the views; ``read`` gives the status model (one read per call);
    ``operator`` the writes (None: read-only, every POST refused)."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], read: Callable[[], Status], operator: Operator | None = None
    ) -> None:
        super().__init__(address, Handler)
        self.read = read
        self.operator = operator
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(read))

    @property
    def writable(self) -> bool:
        return self.operator is not None and self.operator.writable

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An unexpected error in a handler: logged (never printed); the connection is closed."""
        log.exception("error answering %s", client_address)


class Handler(BaseHTTPRequestHandler):
    """GET ``/``, ``/silences``, ``/api/status``, ``/metrics``; POST ``/silences`` and
    ``/silences/<id>/expire``; 404 otherwise; 503 on a Redis error."""

    server: WebServer
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        views: dict[str, Callable[[str], tuple[bytes, str]]] = {
            "/": self._page,
            "/silences": self._silences,
            "/api/status": self._json,
            "/metrics": self._metrics,
        }
        view = views.get(url.path)
        if view is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)
            return
        with self._answering(url.path):
            body, content_type = view(url.query)
            self._send(HTTPStatus.OK, body, content_type)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        with self._answering(path):
            query = self._write(path)
            location = "/silences?" + urlencode(query)
            self._send(HTTPStatus.SEE_OTHER, f"see {location}\n".encode(), TEXT, {"Location": location})

    def _answering(self, path: str) -> _Answering:
        return _Answering(self, path)

    # -- views

    def _page(self, query: str) -> tuple[bytes, str]:
        return render_page(self.server.read(), self.server.writable).encode(), HTML

    def _silences(self, query: str) -> tuple[bytes, str]:
        page = render_silences(self.server.read(), self.server.writable, notice_of(query))
        return page.encode(), HTML

    def _json(self, query: str) -> tuple[bytes, str]:
        status = self.server.read()
        return json.dumps(as_json(status, problems(status))).encode(), "application/json"

    def _metrics(self, query: str) -> tuple[bytes, str]:
        return generate_latest(self.server.registry), CONTENT_TYPE_LATEST

    # -- writes

    def _write(self, path: str) -> dict[str, str]:
        """The write at ``path``, checked in this order: a known path (404), a token configured
        (403), the body's size (413) and form (400), the token given (403), the input (400)."""
        expire = _EXPIRE_PATH.fullmatch(path)
        if path != "/silences" and expire is None:
            raise Refused(HTTPStatus.NOT_FOUND, "not found")
        operator = self.server.operator
        if operator is None or not operator.writable:
            self._drain()
            raise Refused(
                HTTPStatus.FORBIDDEN, "read-only: no operator token is configured (MONITORX_WEB_TOKEN)"
            )
        form = self._form()
        if not operator.allows(self._token(form)):
            log.warning("refused a write to %s from %s: wrong or missing token", path, self.client_address[0])
            raise Refused(HTTPStatus.FORBIDDEN, "wrong or missing operator token")
        try:
            return operator.add(form) if expire is None else operator.expire(unquote(expire.group(1)))
        except ValueError as exc:
            raise Refused(HTTPStatus.BAD_REQUEST, str(exc)) from None

    def _length(self) -> int:
        text = self.headers.get("Content-Length", "0").strip()
        if not text.isdigit():
            raise Refused(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        return int(text)

    def _form(self) -> dict[str, str]:
        """The body as a form (first value of each field); 413 when over MAX_BODY bytes."""
        length = self._length()
        if length > MAX_BODY:
            self._drain()
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        body = self.rfile.read(length)
        kind = self.headers.get_content_type()
        if body and kind != FORM:
            raise Refused(HTTPStatus.BAD_REQUEST, f"send {FORM}, not {kind}")
        try:
            fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
        except ValueError as exc:  # not UTF-8, too many fields
            raise Refused(HTTPStatus.BAD_REQUEST, f"bad form: {exc}") from None
        return {name: values[0] for name, values in fields.items()}

    def _token(self, form: Mapping[str, str]) -> str:
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        return given.strip() if scheme.lower() == "bearer" else form.get("token", "")

    def _drain(self) -> None:
        """Read and drop a body this server will not use (up to DRAIN_MAX bytes)."""
        length = self.headers.get("Content-Length", "0").strip()
        if length.isdigit() and int(length) <= DRAIN_MAX:
            self.rfile.read(int(length))

    def _send(
        self, code: HTTPStatus, body: bytes, content_type: str, extra: Mapping[str, str] = _NO_HEADERS
    ) -> None:
        self.send_response(code)
        headers = {**(_HTML_HEADERS if content_type == HTML else {}), **extra}
        for name, value in {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            **headers,
        }.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines go to the module's logger at DEBUG, never to standard error directly."""
        log.debug("%s " + format, self.address_string(), *args)


@dataclass
class _Answering:
    """Around one request: a :class:`Refused` is answered with its status and reason, a Redis
    error with 503 (its class only)."""

    handler: Handler
    path: str

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, Refused):
            self.handler._send(exc.code, f"{exc.reason}\n".encode(), TEXT)
            return True
        if isinstance(exc, redis.RedisError):
            log.warning("%s: Redis unavailable: %s", self.path, type(exc).__name__)
            text = f"Redis unavailable ({type(exc).__name__})\n".encode()
            self.handler._send(HTTPStatus.SERVICE_UNAVAILABLE, text, TEXT)
            return True
        return False


def reader(
    r: redis.Redis, keys: Keys, config: Config, clock: Callable[[], float] = time.time
) -> Callable[[], Status]:
    """One status read per call, at ``clock()``."""
    return lambda: read_status(r, keys, config, clock())


# -- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx web",
        description="Serve the status page (/), the silences (/silences), the status JSON "
        "(/api/status) and Prometheus metrics (/metrics). Read-only unless MONITORX_WEB_TOKEN is "
        "set: then whoever gives that token can add and expire silences.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--config", type=Path, help="configuration file (default: $MONITORX_CONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; exit 0 then (2 bad input, 1 invalid configuration)."""
    args = _parser().parse_args(argv)
    settings = settings_or_exit(WebSettings)
    setup_logging(settings.log_level, settings.log_format)
    path = config_path(args.config)
    config = config_or_exit(lambda: load_config(path))
    r = connect(str(settings.redis_url))
    operator = Operator(settings.web_token, SilenceStore(r, settings.keys), settings.silence_max_hours * 3600)
    server = WebServer((args.host, args.port), reader(r, settings.keys, config), operator)
    stopper = Stopper().install()
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    mode = (
        "silences writable with the operator token"
        if operator.writable
        else "read-only (no MONITORX_WEB_TOKEN)"
    )
    log.info(
        "serving on http://%s:%d/ (/silences, /api/status, /metrics), %s",
        args.host,
        server.server_address[1],
        mode,
    )
    stopper.wait()
    server.shutdown()
    server.server_close()
    r.close()
    return 0
