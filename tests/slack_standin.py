"""A local HTTP server standing in for a Slack incoming webhook (or any webhook receiver).

Replies are scripted per request (status, body, headers, delay); once the script is used up, the
``default`` reply answers (200 "ok" unless changed). Every request is recorded with its headers,
body and the status it got, just before its reply is sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: SlackStandin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.standin.serve(self, body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent (the default writes every request to stderr)."""


class SlackStandin:
    """``with SlackStandin() as slack: ... slack.url()``."""

    def __init__(self) -> None:
        self.default = Reply()
        self._script: deque[Reply] = deque()
        self._received: list[Received] = []
        self._in_flight = 0
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

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def ok(self) -> list[Received]:
        """Requests answered with a 2xx status: the posts that landed."""
        return [r for r in self.received if 200 <= r.status < 300]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            reply = self._script.popleft() if self._script else self.default
            self._in_flight += 1
        try:
            time.sleep(reply.delay)  # a scripted slow server, not a test waiting
            with self._lock:  # recorded before the reply leaves: a client never sees it unrecorded
                self._received.append(
                    Received(handler.path, dict(handler.headers.items()), body, reply.status)
                )
            self._respond(handler, reply)
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        data = reply.body.encode()
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
