"""A local HTTP server standing in for Slack: incoming webhooks and the Web API of a bot token.

Incoming webhooks (any path outside ``/api/``): replies are scripted per request (status, body,
headers, delay); once the script is used up, the ``default`` reply answers (200 "ok" unless
changed). Every such request is kept in ``received`` with its headers, body and status.

Web API (``/api/<method>``, point ``slack_sdk.WebClient(base_url=slack.api_url())`` here):
``auth.test``, ``chat.postMessage``, ``chat.update`` and ``conversations.history``, answered with
Slack's JSON (``ok``, ``channel``, ``ts``, ``message``; HTTP 200 with ``ok: false`` and an
``error`` for refusals, as Slack does). The stand-in promises:

- auth: ``Authorization: Bearer <token>`` (or a ``token`` parameter) must equal ``token``;
  none is ``not_authed``, another ``invalid_auth``.
- channels: ``chat.postMessage`` takes a name (``alerts``/``#alerts``, created on first use) or
  a known id; ``chat.update`` and ``conversations.history`` take only an id (``channel(name)``
  gives it), as Slack; anything else is ``channel_not_found``.
- pacing: a second write (``PACED``) to one channel less than ``min_interval`` seconds after the
  last accepted one is HTTP 429 ``ratelimited`` with ``Retry-After: pace_retry_after``;
  ``throttle()`` forces 429s for a while (one channel or all). Stricter than Slack, which
  tolerates short bursts: a client that passes here passes there.
- limits: more than 50 blocks, a section text over 3,000 characters (a field over 2,000, more
  than 10 fields), a header over 150 → ``invalid_blocks`` (with ``errors``); text over 40,000
  → ``msg_too_long``; neither text nor blocks → ``no_text``; metadata not
  ``{"event_type": str, "event_payload": object}`` → ``invalid_metadata_format``.
- history: newest first, top-level messages and broadcast replies only, ``limit`` (default
  100, at most 999), ``oldest``/``latest`` (exclusive unless ``inclusive``), ``cursor``
  paging; ``metadata`` only with ``include_all_metadata``.
- faults: ``fail(method, Fault(...), times)`` answers the next calls with an error (optionally
  after doing the work, optionally dropping the connection without a reply); ``write_delay``
  holds every stored write's reply (a window to kill a client between post and record).
- log: every request (webhook posts as method ``webhook``, channel = path) is one ``Call`` in
  ``calls``, recorded before its reply leaves; ``early`` marks a request to a channel that
  arrived before the ``Retry-After`` last sent for that channel had passed.

All times are wall-clock ``time.time()``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-standin-token"
PACED = frozenset({"chat.postMessage", "chat.update"})
"""Web API methods that write a message: paced per channel and counted by ``max_per_second``."""
WEBHOOK = "webhook"
"""The method name an incoming-webhook post is logged under."""
MESSAGE_METHODS = PACED | {WEBHOOK}
TEXT_LIMIT = 40_000
BLOCKS_LIMIT = 50
TEXT_LIMITS = {"section": 3_000, "header": 150}
FIELDS_LIMIT = 10
FIELD_TEXT_LIMIT = 2_000
HISTORY_LIMIT = 100
HISTORY_MAX = 999
_BOT = {"user": "U0STANDIN", "bot_id": "B0STANDIN", "app_id": "A0STANDIN", "team": "T0000TEST"}
_NAME = re.compile(r"#?[a-z0-9][a-z0-9_-]*")
JsonDict = dict[str, Any]
_Method = Callable[[JsonDict, str, float], "_Answer"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.time)
    """Wall-clock time the reply was decided (just before it was sent)."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Call:
    """One request as the stand-in answered it. ``status`` 0: connection dropped, no reply."""

    at: float
    method: str
    channel: str
    status: int
    error: str | None = None
    ts: str | None = None
    early: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None


@dataclass(frozen=True)
class Message:
    """A stored message; ``edits`` counts the ``chat.update`` calls it went through."""

    channel: str
    ts: str
    text: str
    blocks: tuple[JsonDict, ...] = ()
    metadata: JsonDict | None = None
    thread_ts: str | None = None
    reply_broadcast: bool = False
    edits: int = 0

    def wire(self, metadata: bool = True, replies: int = 0) -> JsonDict:
        """The message as Slack's JSON shows it."""
        out: JsonDict = {"type": "message", **_BOT, "text": self.text, "ts": self.ts}
        extra: JsonDict = {
            "blocks": list(self.blocks) or None,
            "metadata": self.metadata if metadata else None,
            "thread_ts": self.thread_ts or (self.ts if replies else None),
            "reply_count": replies or None,
            "subtype": "thread_broadcast" if self.reply_broadcast else None,
            "edited": {"user": _BOT["user"]} if self.edits else None,
        }
        return out | {k: v for k, v in extra.items() if v is not None}


@dataclass(frozen=True)
class Fault:
    """A scripted failure of a Web API call: answered ``status``/``error`` instead of the real
    answer; ``applied`` does the call's work first; ``disconnect`` closes without a reply."""

    status: int = 500
    error: str = "internal_error"
    applied: bool = False
    disconnect: bool = False


@dataclass(frozen=True)
class _Throttle:
    until: float
    retry_after: int
    channel: str | None


@dataclass
class _Answer:
    status: int
    body: JsonDict
    ts: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    disconnect: bool = False


class _Refused(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.status, self.extra = error, status, extra


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: SlackStandin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/"):
            self.server.standin.serve_api(self, body)
        else:
            self.server.standin.serve(self, body)

    def do_GET(self) -> None:
        self.server.standin.serve_api(self, b"")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent (the default writes every request to stderr)."""


class SlackStandin:
    """``with SlackStandin() as slack: ... slack.url()`` (webhook) or ``slack.api_url()``."""

    def __init__(self, token: str = TOKEN, min_interval: float = 1.0, pace_retry_after: int = 1) -> None:
        self.default = Reply()
        self.token = token
        self.min_interval = min_interval
        self.pace_retry_after = pace_retry_after
        self.write_delay = 0.0
        """Seconds an applied write waits, stored and logged, before its reply leaves."""
        self._script: deque[Reply] = deque()
        self._received: list[Received] = []
        self._calls: list[Call] = []
        self._in_flight = 0
        self._channels: dict[str, str] = {}
        self._messages: dict[str, list[Message]] = {}
        self._last_write: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._throttles: list[_Throttle] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._last_ts = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="slack-standin", daemon=True
        )

    def __enter__(self) -> SlackStandin:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/services/T0000TEST/B0000TEST/standin-secret-token") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def api_url(self) -> str:
        """The ``base_url`` for ``slack_sdk.WebClient``."""
        return self.url("/api/")

    # ---- scripting -----------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next webhook requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def throttle(self, seconds: float, retry_after: int, channel: str | None = None) -> None:
        """For ``seconds`` from now, answer every Web API call (to ``channel`` only, name or
        id, when given) with 429 ``ratelimited`` and ``Retry-After: retry_after``."""
        with self._lock:
            ident = None if channel is None else self._channel_id(channel, create=True)
            self._throttles.append(_Throttle(time.time() + seconds, retry_after, ident))

    def fail(self, method: str, fault: Fault | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``fault`` (default: 500
        ``internal_error``, not applied)."""
        with self._lock:
            self._faults.setdefault(method, deque()).extend([fault or Fault()] * times)

    def channel(self, name: str) -> str:
        """The id of channel ``name`` (``alerts`` or ``#alerts``), created if new."""
        with self._lock:
            return self._channel_id(name, create=True)

    # ---- reading -------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """Webhook requests (not Web API calls), oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def ok(self) -> list[Received]:
        """Webhook requests answered with a 2xx status: the posts that landed."""
        return [r for r in self.received if 200 <= r.status < 300]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def calls(self) -> list[Call]:
        """Every request (Web API and webhook), oldest first."""
        with self._lock:
            return list(self._calls)

    def messages(self, channel: str | None = None) -> list[Message]:
        """Stored messages (thread replies included) of one channel (name or id) or all,
        oldest first, as last updated."""
        with self._lock:
            if channel is None:
                return sorted((m for ms in self._messages.values() for m in ms), key=_ts_key)
            return list(self._messages.get(self._channel_id(channel, create=False), []))

    def max_per_second(
        self, channel: str | None = None, methods: frozenset[str] = MESSAGE_METHODS, window: float = 1.0
    ) -> int:
        """See ``max_per_window``; ``channel`` by name or id."""
        ident = None
        if channel is not None:
            with self._lock:
                ident = self._channel_id(channel, create=False) or channel
        return max_per_window(self.calls, ident, methods, window)

    # ---- webhook -------------------------------------------------------------------------

    def serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            reply = self._script.popleft() if self._script else self.default
            self._in_flight += 1
        try:
            time.sleep(reply.delay)  # a scripted slow server, not a test waiting
            with self._lock:  # recorded before the reply leaves: a client never sees it unrecorded
                now = time.time()
                self._received.append(
                    Received(handler.path, dict(handler.headers.items()), body, reply.status, now)
                )
                error = None if 200 <= reply.status < 300 else reply.body
                self._log(
                    now, WEBHOOK, handler.path, reply.status, error, _int(reply.headers.get("Retry-After"))
                )
            _respond(handler, reply.status, reply.body.encode(), reply.headers, "text/plain; charset=utf-8")
        finally:
            with self._lock:
                self._in_flight -= 1

    # ---- Web API -------------------------------------------------------------------------

    def serve_api(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        """Answer one Web API call (see the module docstring)."""
        url = urlsplit(handler.path)
        method = url.path.removeprefix("/api/")
        params = _params(handler.headers.get("Content-Type") or "", body) | dict(parse_qsl(url.query))
        with self._lock:
            self._in_flight += 1
        try:
            with self._lock:
                answer = self._answer(method, params, handler.headers.get("Authorization") or "")
            if answer.applied:
                time.sleep(self.write_delay)  # a scripted slow reply, not a test waiting
            if not answer.disconnect:
                data = json.dumps(answer.body).encode()
                _respond(handler, answer.status, data, answer.headers, "application/json; charset=utf-8")
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, method: str, params: JsonDict, authorization: str) -> _Answer:
        now, channel, early = time.time(), str(params.get("channel") or ""), False
        try:
            self._authenticate(params.pop("token", None) or authorization.removeprefix("Bearer "))
            handler = self._methods().get(method)
            if handler is None:
                raise _Refused("unknown_method")
            channel = self._resolve(method, channel)
            early = now < self._retry_at.get(channel, 0.0)
            self._check_rate(method, channel, now)
            answer = self._apply(method, handler, params, channel, now)
        except _Refused as refused:
            answer = self._refusal(refused, channel, now)
        except ValueError:  # a malformed ts, limit, blocks or metadata argument
            answer = self._refusal(_Refused("invalid_arguments"), channel, now)
        error = None if answer.body.get("ok") else str(answer.body.get("error"))
        status = 0 if answer.disconnect else answer.status
        self._calls.append(Call(now, method, channel, status, error, answer.ts, early))
        return answer

    def _refusal(self, refused: _Refused, channel: str, now: float) -> _Answer:
        retry = _int(refused.extra.pop("retry_after", None))
        headers = {} if retry is None else {"Retry-After": str(retry)}
        if retry is not None:
            self._retry_at[channel] = now + retry
        return _Answer(
            refused.status, {"ok": False, "error": refused.error, **refused.extra}, headers=headers
        )

    def _methods(self) -> dict[str, _Method]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post,
            "chat.update": self._update,
            "conversations.history": self._history,
        }

    def _authenticate(self, token: str) -> None:
        if not token:
            raise _Refused("not_authed")
        if token != self.token:
            raise _Refused("invalid_auth")

    def _resolve(self, method: str, channel: str) -> str:
        """The channel id a call names: by name only for chat.postMessage, as Slack."""
        if method == "auth.test":
            return ""
        if method == "chat.postMessage":
            channel = self._channel_id(channel, create=True)
        if channel not in self._channels.values():
            raise _Refused("channel_not_found")
        return channel

    def _check_rate(self, method: str, channel: str, now: float) -> None:
        for rule in self._throttles:
            if now < rule.until and rule.channel in (None, channel):
                raise _Refused("ratelimited", 429, retry_after=rule.retry_after)
        if method in PACED and now - self._last_write.get(channel, -1e18) < self.min_interval:
            raise _Refused("ratelimited", 429, retry_after=self.pace_retry_after)

    def _apply(self, method: str, handler: _Method, params: JsonDict, channel: str, now: float) -> _Answer:
        """The call's answer, or its scripted fault's (after the call's work if ``applied``)."""
        faults = self._faults.get(method)
        fault = faults.popleft() if faults else None
        answer = handler(params, channel, now) if fault is None or fault.applied else None
        if answer is not None and method in PACED:
            self._last_write[channel] = now
            answer.applied = True
        if fault is None:
            assert answer is not None
            return answer
        body = {"ok": False, "error": fault.error}
        ts = answer.ts if answer else None
        return _Answer(fault.status, body, ts, applied=answer is not None, disconnect=fault.disconnect)

    def _auth_test(self, params: JsonDict, channel: str, now: float) -> _Answer:
        body = {"ok": True, "url": "https://standin.slack.test/", "team": "Stand-in", "user": "monitorx"}
        return _Answer(
            200, body | {"team_id": _BOT["team"], "user_id": _BOT["user"], "bot_id": _BOT["bot_id"]}
        )

    def _post(self, params: JsonDict, channel: str, now: float) -> _Answer:
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and self._find(channel, str(thread_ts)) is None:
            raise _Refused("thread_not_found")
        text, blocks, metadata = _content(params, "", (), None)
        ts = self._next_ts(now)
        broadcast = thread_ts is not None and _flag(params.get("reply_broadcast"))
        message = Message(channel, ts, text, blocks, metadata, thread_ts, broadcast)
        self._messages.setdefault(channel, []).append(message)
        return _Answer(200, {"ok": True, "channel": channel, "ts": ts, "message": message.wire()}, ts)

    def _update(self, params: JsonDict, channel: str, now: float) -> _Answer:
        old = self._find(channel, str(params.get("ts") or ""))
        if old is None:
            raise _Refused("message_not_found")
        text, blocks, metadata = _content(params, old.text, old.blocks, old.metadata)
        new = replace(old, text=text, blocks=blocks, metadata=metadata, edits=old.edits + 1)
        stored = self._messages[channel]
        stored[stored.index(old)] = new
        body = {"ok": True, "channel": channel, "ts": new.ts, "text": text, "message": new.wire()}
        return _Answer(200, body, new.ts)

    def _history(self, params: JsonDict, channel: str, now: float) -> _Answer:
        stored = self._messages.get(channel, [])
        replies: dict[str, int] = {}
        for m in stored:
            if m.thread_ts:
                replies[m.thread_ts] = replies.get(m.thread_ts, 0) + 1
        shown = [
            m for m in reversed(stored) if _in_range(m.ts, params) and (not m.thread_ts or m.reply_broadcast)
        ]
        limit = min(max(_int(params.get("limit")) or HISTORY_LIMIT, 1), HISTORY_MAX)
        page, more = shown[:limit], len(shown) > limit
        with_metadata = _flag(params.get("include_all_metadata"))
        body = {
            "ok": True,
            "messages": [m.wire(with_metadata, replies.get(m.ts, 0)) for m in page],
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": page[-1].ts if more else ""},
        }
        return _Answer(200, body)

    def _channel_id(self, channel: str, create: bool) -> str:
        """The id of a channel given by id or name; "" when unknown (and not created)."""
        if channel in self._channels.values():
            return channel
        if not _NAME.fullmatch(channel):
            return ""
        name = channel.removeprefix("#")
        if create and name not in self._channels:
            self._channels[name] = f"C{1_000_000_000 + len(self._channels)}"
        return self._channels.get(name, "")

    def _find(self, channel: str, ts: str) -> Message | None:
        return next((m for m in self._messages.get(channel, []) if m.ts == ts), None)

    def _next_ts(self, now: float) -> str:
        """A unique, increasing message ts ``seconds.micros``, as Slack's."""
        self._last_ts = max(int(now * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _log(
        self, now: float, method: str, channel: str, status: int, error: str | None, retry: int | None
    ) -> None:
        early = now < self._retry_at.get(channel, 0.0)
        if status == 429 and retry is not None:
            self._retry_at[channel] = now + retry
        self._calls.append(Call(now, method, channel, status, error, None, early))


def max_per_window(
    calls: list[Call],
    channel: str | None = None,
    methods: frozenset[str] = MESSAGE_METHODS,
    window: float = 1.0,
) -> int:
    """The most successful ``methods`` calls to one channel (``channel`` only, when given)
    within any ``window`` seconds (a half-open sliding window: calls exactly ``window`` apart
    are in different windows); 0 when there are none."""
    times: dict[str, list[float]] = {}
    for call in calls:
        if call.ok and call.method in methods and channel in (None, call.channel):
            times.setdefault(call.channel, []).append(call.at)
    best = 0
    for at in times.values():
        at.sort()
        first = 0
        for last, t in enumerate(at):
            while t - at[first] >= window:
                first += 1
            best = max(best, last - first + 1)
    return best


def _respond(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], content_type: str
) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _params(content_type: str, body: bytes) -> JsonDict:
    """A call's parameters: a JSON object body (what WebClient sends for chat.*) or a form."""
    try:
        if content_type.startswith("application/json"):
            loaded = json.loads(body or b"{}")
            return loaded if isinstance(loaded, dict) else {}
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except ValueError:  # not JSON, not UTF-8: answered as a call without arguments
        return {}


def _content(
    params: JsonDict, text: str, blocks: tuple[JsonDict, ...], metadata: JsonDict | None
) -> tuple[str, tuple[JsonDict, ...], JsonDict | None]:
    """The message's text, blocks and metadata after a post or update (what it omits stays as
    given), validated against Slack's limits."""
    text = str(params.get("text", text) or "")
    if "blocks" in params:
        blocks = _blocks(params["blocks"])
    if "metadata" in params:
        metadata = _metadata(params["metadata"])
    if not text and not blocks:
        raise _Refused("no_text")
    if len(text) > TEXT_LIMIT:
        raise _Refused("msg_too_long")
    return text, blocks, metadata


def _blocks(value: Any) -> tuple[JsonDict, ...]:
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, list):
        raise _Refused("invalid_blocks_format")
    errors = (
        [f"no more than {BLOCKS_LIMIT} items allowed [json-pointer:/blocks]"]
        if len(loaded) > BLOCKS_LIMIT
        else []
    )
    for i, block in enumerate(loaded):
        errors += _block_errors(f"/blocks/{i}", block)
    if errors:
        raise _Refused("invalid_blocks", errors=errors)
    return tuple(loaded)


def _block_errors(where: str, block: Any) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"missing required field: type [json-pointer:{where}]"]
    errors = []
    limit, text = TEXT_LIMITS.get(block["type"]), _text(block.get("text"))
    if limit is not None and text is not None and len(text) > limit:
        errors.append(f"must be less than {limit + 1} characters [json-pointer:{where}/text/text]")
    fields = block.get("fields") or []
    if len(fields) > FIELDS_LIMIT:
        errors.append(f"no more than {FIELDS_LIMIT} items allowed [json-pointer:{where}/fields]")
    for j, item in enumerate(fields):
        if len(_text(item) or "") > FIELD_TEXT_LIMIT:
            errors.append(
                f"must be less than {FIELD_TEXT_LIMIT + 1} characters [json-pointer:{where}/fields/{j}/text]"
            )
    if block["type"] in TEXT_LIMITS and text is None and not fields:
        errors.append(f"must provide either text or fields [json-pointer:{where}]")
    return errors


def _text(obj: Any) -> str | None:
    return obj.get("text") if isinstance(obj, dict) and isinstance(obj.get("text"), str) else None


def _metadata(value: Any) -> JsonDict:
    loaded = json.loads(value) if isinstance(value, str) else value
    if (
        not isinstance(loaded, dict)
        or not isinstance(loaded.get("event_type"), str)
        or not isinstance(loaded.get("event_payload"), dict)
    ):
        raise _Refused("invalid_metadata_format")
    return loaded


def _in_range(ts: str, params: JsonDict) -> bool:
    key, inclusive = _ts_key(ts), _flag(params.get("inclusive"))
    oldest, latest, cursor = (params.get(k) for k in ("oldest", "latest", "cursor"))
    if oldest and (key < _ts_key(oldest) or (key == _ts_key(oldest) and not inclusive)):
        return False
    if latest and (key > _ts_key(latest) or (key == _ts_key(latest) and not inclusive)):
        return False
    return not cursor or key < _ts_key(cursor)


def _ts_key(value: Any) -> tuple[int, int]:
    """A ts (``"1700000000.000123"``, or a Message) as a sortable pair, without float rounding."""
    seconds, _, micros = str(getattr(value, "ts", value)).partition(".")
    return int(seconds), int((micros + "000000")[:6])


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
