"""The Galio WebSocket client: sessions, authentication, watchdog, reconnects and the Redis writer.

Two tasks share one :class:`~ingestor.ingest.Ingestor`. The *session* task receives frames,
records them and parses them into the pending batch (CPU only, no await between receiving a
frame and queueing it, so a stop never cuts a frame in half). The *writer* task flushes the
batch to Redis in a worker thread, retrying with backoff while Redis is unavailable. A slow or
absent Redis therefore never delays receiving, and the watchdog measures only the feed. A third
task evaluates the feed's health (:mod:`ingestor.health`) every ``HEALTH_EVERY`` seconds and
queues its ``feed_down`` alerts, with the feed's status hash, in the same pending batch.
With a heartbeat writer, a fourth task writes the heartbeat every ``HEARTBEAT_EVERY`` seconds in
a worker thread (as the writer writes), with the details ``{"feeds": {feed: {"state": "up" |
"down" | "connecting", "last_frame_at": unix time or None}}}``; the heartbeat is deleted on
leaving :meth:`GalioClient.run`, after the last beat (a lock orders the two). With Redis (``r``),
a fifth task sends the dead-man's switch canary every ``canary_seconds`` whatever the feed's
state (:mod:`ingestor.canary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import CloseCode

from engine.checks import fmt
from ingestor.backoff import SessionOutcome, SilenceTimeout, decide
from ingestor.canary import CanarySender, canary_loop
from ingestor.health import FeedHealth, FeedStatus, reason_of
from ingestor.ingest import Ingestor
from ingestor.record import Recorder
from shared.backoff import BackoffPolicy, backoff_delay
from shared.heartbeat import Beater
from shared.redisio import REDIS_BACKOFF
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0
"""Seconds allowed for the TCP, TLS and WebSocket handshakes."""
CLOSE_TIMEOUT = 2.0
"""Seconds allowed for the closing handshake (a silent server may never answer it)."""
FINAL_FLUSH_TIMEOUT = 5.0
"""Seconds allowed, when stopping, to write what is still pending."""
HEALTH_EVERY = 0.5
"""Seconds between two evaluations of the feed's health (the feed_down alert)."""
ADOPT_TIMEOUT = 2.0
"""Seconds allowed at start to read the feed's status hash (an outage in progress is adopted)."""


class GiveUp(Exception):
    """The client stopped on an error it does not retry (see :func:`ingestor.backoff.decide`)."""


@dataclass
class _Live:
    """Progress of the current session."""

    frames: int = 0
    connected_at: float | None = None
    auth_sent: bool = False

    def outcome(self, now: float) -> SessionOutcome:
        duration = 0.0 if self.connected_at is None else now - self.connected_at
        return SessionOutcome(self.frames, duration)


def websockets_logger() -> logging.Logger:
    """The logger handed to websockets, never below INFO: at DEBUG websockets logs the content of
    every frame it sends, the auth frame and its password included."""
    logger = logging.getLogger(f"{__name__}.websockets")
    logger.setLevel(max(logging.INFO, logger.level))
    return logger


def display_uri(settings: IngestSettings) -> str:
    """The feed's address for logs: no user info, no query string (they may carry secrets)."""
    uri = settings.galio_uri
    return f"{uri.scheme}://{uri.host}:{uri.port}{uri.path or ''}"


class GalioClient:
    """Receives the feed until stopped; see :meth:`run`."""

    def __init__(
        self,
        settings: IngestSettings,
        ingestor: Ingestor,
        *,
        recorder: Recorder | None = None,
        r: redis.Redis | None = None,
        beater: Beater | None = None,
    ) -> None:
        """``r``: where the feed's status hash is read at start (None: no outage is adopted);
        ``beater``: the process's heartbeat (None: none written)."""
        self._settings = settings
        self._ingestor = ingestor
        self._recorder = recorder
        self._policy = BackoffPolicy(settings.backoff_min, settings.backoff_max, settings.stable_after)
        self._dirty = asyncio.Event()
        self._where = display_uri(settings)
        self._ws_logger = websockets_logger()
        self._health = FeedHealth(settings.feed_name, self._where, settings.feed_down_seconds, time.time())
        self._status_key = settings.keys.feed(settings.feed_name)
        self._r = r
        self._beater = beater
        self._beat_lock = threading.Lock()
        self._beats_over = False
        self._canary = None if r is None else CanarySender(r, settings.keys, settings.canary_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and publish until ``stop`` is set, then close the websocket and write what is
        pending. Raises :class:`GiveUp` on an error that is not retried, and a failure of the
        feed's health task (a bug) rather than go on without feed_down alerts."""
        sessions = asyncio.create_task(self._sessions(stop), name="galio-sessions")
        writer = asyncio.create_task(self._write_loop(), name="redis-writer")
        health = asyncio.create_task(self._watch_feed(), name="feed-health")
        stopped = asyncio.create_task(stop.wait(), name="stop")
        beats = asyncio.create_task(self._beat_loop(), name="heartbeat")
        canary = asyncio.create_task(self._canary_loop(), name="canary")
        try:
            await asyncio.wait({sessions, health, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sessions, stopped, health, writer, beats, canary):
                task.cancel()
            await asyncio.gather(sessions, stopped, health, writer, beats, canary, return_exceptions=True)
            await self._final_flush()
            await asyncio.to_thread(self._end_beats)
        for task in (sessions, health):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _sessions(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():  # a cancellation lost in a race still ends the loop here
            live = _Live()
            try:
                await self._session(live)
            except Exception as exc:  # noqa: BLE001 - every error is classified by decide()
                failures = await self._after_failure(exc, live, failures)

    async def _after_failure(self, exc: Exception, live: _Live, failures: int) -> int:
        outcome = live.outcome(time.monotonic())
        reason = reason_of(
            exc, outcome, auth_sent=live.auth_sent, silence_timeout=self._settings.silence_timeout
        )
        self._health.failure(reason, time.time())
        decision = decide(exc, outcome, failures, self._policy)
        if not decision.retry:
            raise GiveUp(f"{self._where}: {decision.reason}") from exc
        log.log(
            decision.level,
            "Galio session %s ended after %d frame(s): %s; reconnecting in %.2fs (failure %d in a row)",
            self._where,
            live.frames,
            decision.reason,
            decision.delay,
            decision.failures,
        )
        await asyncio.sleep(decision.delay)
        return decision.failures

    async def _session(self, live: _Live) -> None:
        s = self._settings
        async with connect(
            str(s.galio_uri),
            ping_interval=s.ping_interval,
            max_size=s.max_frame_bytes,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            logger=self._ws_logger,
        ) as ws:
            live.connected_at = time.monotonic()
            self._health.connected(time.time())
            log.info("connected to %s", self._where)
            try:
                live.auth_sent = await self._authenticate(ws)
                while True:
                    self._on_frame(await self._receive(ws), live)
            except (asyncio.CancelledError, SilenceTimeout):  # close with 1001, not 1011 "internal error"
                await ws.close(CloseCode.GOING_AWAY)
                raise

    async def _authenticate(self, ws: ClientConnection) -> bool:
        """Send the one auth frame when a username is configured (the password is never logged);
        True when it was sent."""
        s = self._settings
        if s.galio_username is None:
            return False
        password = "" if s.galio_password is None else s.galio_password.get_secret_value()
        await ws.send(json.dumps({"username": s.galio_username, "password": password}))
        log.info("sent credentials of user %r", s.galio_username)
        return True

    async def _receive(self, ws: ClientConnection) -> str:
        """The next frame as text; the watchdog raises SilenceTimeout after ``silence_timeout``."""
        timeout = self._settings.silence_timeout
        try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            async with asyncio.timeout(timeout):
                message = await ws.recv()
        except TimeoutError:
            raise SilenceTimeout(f"watchdog: no frame for {timeout:g}s") from None
        return message if isinstance(message, str) else message.decode("utf-8", errors="replace")

    def _on_frame(self, text: str, live: _Live) -> None:
        received_at = time.time()
        live.frames += 1
        self._health.frame(received_at)
        if self._recorder is not None:
            self._recorder.write(text, received_at)
        self._ingestor.accept(text, received_at)
        self._dirty.set()

    async def _write_loop(self) -> None:
        """Flush to Redis whenever frames arrived; while Redis fails, retry with the processes'
        common capped backoff (shared.redisio.REDIS_BACKOFF, by ``Ingestor.outage``'s count of
        failures), so writing resumes within about 2 s of Redis coming back."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not await asyncio.to_thread(self._ingestor.flush):
                self._dirty.set()
                await asyncio.sleep(backoff_delay(REDIS_BACKOFF, self._ingestor.outage.failures))

    async def _watch_feed(self) -> None:
        """Adopt an outage a previous ingestor reported, then evaluate the feed's health every
        ``HEALTH_EVERY`` seconds; each state change queues its alert and the status hash."""
        await self._adopt()
        while True:
            alerts = self._health.evaluate(time.time())
            if alerts:
                self._ingestor.queue_alerts(alerts, {self._status_key: self._health.status.fields()})
                self._dirty.set()
            for alert in alerts:  # one line per state change
                log.log(
                    logging.ERROR if alert.state == "firing" else logging.WARNING,
                    "%s: %s",
                    alert.title,
                    alert.text,
                )
            await asyncio.sleep(HEALTH_EVERY)

    def feeds(self) -> dict[str, dict[str, Any]]:
        """The heartbeat's ``feeds`` detail: this client's one feed, its connection state
        (:meth:`ingestor.health.FeedHealth.connection`) and last frame time."""
        health = self._health
        return {health.feed: {"state": health.connection(), "last_frame_at": health.last_frame_at}}

    async def _beat_loop(self) -> None:
        """Write the heartbeat every ``beater.every`` seconds, in a worker thread (a Redis that
        hangs never holds the frames up); a Redis error skips one beat."""
        if self._beater is None:
            return
        while True:
            try:
                await asyncio.to_thread(self._beat, {"feeds": self.feeds()})
            except redis.RedisError as exc:
                log.debug("heartbeat not written: %s", exc)
            await asyncio.sleep(self._beater.every)

    async def _canary_loop(self) -> None:
        """The dead-man's switch canary (``ingestor.canary``), when this client has Redis."""
        if self._canary is not None:
            await canary_loop(self._canary)

    def _beat(self, details: dict[str, Any]) -> None:
        with self._beat_lock:
            if self._beater is not None and not self._beats_over:
                self._beater.beat(details, force=True)

    def _end_beats(self) -> None:
        """Delete the heartbeat; a beat still running in its thread finishes first, and no
        other is written afterwards."""
        with self._beat_lock:
            self._beats_over = True
            if self._beater is not None:
                self._beater.stop()

    async def _adopt(self) -> None:
        """Read the status hash (when Redis answers within ADOPT_TIMEOUT) and take over a "down"."""
        if self._r is None:
            return
        try:
            fields: Any = await asyncio.wait_for(
                asyncio.to_thread(self._r.hgetall, self._status_key), ADOPT_TIMEOUT
            )
        except (redis.RedisError, TimeoutError) as exc:
            log.warning("could not read %s, an ongoing feed outage is not adopted: %s", self._status_key, exc)
            return
        status = FeedStatus.from_fields(fields)  # the client decodes responses (redisio.connect)
        if status is not None and self._health.adopt(status):
            log.warning(
                "feed %s is down since %s (%s) as a previous run reported: "
                "no second alert, the next frame resolves it",
                *(self._health.feed, fmt.clock(status.since), status.reason),
            )

    async def _final_flush(self) -> None:
        try:
            written = await asyncio.wait_for(asyncio.to_thread(self._ingestor.flush), FINAL_FLUSH_TIMEOUT)
        except TimeoutError:
            written = False
        if not written:
            log.error("stopping with %d snapshot(s)/quarantine entries not written", self._ingestor.pending)


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` while inside the block."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("received %s, finishing the current frame", sig.name)
    stop.set()


async def run(
    settings: IngestSettings,
    r: redis.Redis,
    *,
    recorder: Recorder | None = None,
    stop: asyncio.Event | None = None,
    beater: Beater | None = None,
) -> None:
    """The ingestor process: receive until SIGTERM/SIGINT (or ``stop``), then close the websocket.
    Raises :class:`GiveUp` on an error that is not retried. The caller owns (closes) ``recorder``.
    ``beater``: the process's heartbeat, deleted on return."""
    stop = asyncio.Event() if stop is None else stop
    ingestor = Ingestor(r, settings.keys, stream_maxlen=settings.stream_maxlen, feed=settings.feed_name)
    with _signals_set(stop):
        log.info("ingesting %s into %s", display_uri(settings), settings.keys.snapshots)
        await GalioClient(settings, ingestor, recorder=recorder, r=r, beater=beater).run(stop)
    log.info("ingestor stopped")
