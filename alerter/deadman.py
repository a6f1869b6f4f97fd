"""The dead-man's switch: one GET of ``MONITORX_DEADMAN_URL`` per canary arrival (``shared.canary``),
the convention of healthchecks.io and Dead Man's Snitch. If any layer stops, the canaries stop
coming through, the pings stop, and the external service raises the alarm.

Promises:

* routing never waits for a ping: the router hands each arrival to :meth:`Pinger.arrived`, which
  only queues it (at most :data:`BACKLOG` waiting; past that an arrival adds no ping), and the
  pinger's own loop (:meth:`Pinger.step`, in its own thread) sends it;
* one ping per arrival, except a **stale** one: a canary whose round trip took longer than
  ``STALE_AFTER × every`` (``CanaryTrip.stale``, e.g. a backlog drained after a restart) is
  recorded by the router but never pinged. A ping says "the path works now, within its period"; a
  path slower than twice its period would let alerts wait as long, so it should alarm. The next
  canary that comes through in time pings again;
* a GET with a :data:`PING_TIMEOUT` timeout; a 2xx counts in ``canary_pings``, anything else
  (error status, timeout, connection error) in ``canary_ping_failures`` and one log line that
  never holds the URL (it carries a token: a secret). A failed ping is never retried nor raised.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass, field
from http.client import HTTPException
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import redis
from pydantic import SecretStr

from shared import keys as K
from shared.canary import CanaryTrip
from shared.keys import Keys
from shared.lifecycle import REDACTED, redact

log = logging.getLogger(__name__)

PING_TIMEOUT = 5.0
"""Seconds a ping may take (connect and answer) before it counts as failed."""
BACKLOG = 8
"""Arrivals waiting for their ping at most; more arrive only while pings hang (each bounded by
PING_TIMEOUT), and add none."""
WAIT = 0.5
"""Seconds one step waits for an arrival (how soon the loop sees a stop)."""
ERRORS = (OSError, HTTPException, ValueError)
"""What a GET can raise besides a status: refused, reset, timeouts, truncated answers, bad values."""


@dataclass
class Pinger:
    """Pings ``url`` for each canary the router hands over; a :class:`shared.redisio.Service`."""

    r: redis.Redis
    keys: Keys
    url: SecretStr
    timeout: float = PING_TIMEOUT
    wait: float = WAIT
    _arrivals: queue.Queue[CanaryTrip] = field(default_factory=lambda: queue.Queue(BACKLOG))

    def arrived(self, trip: CanaryTrip) -> None:
        """Queue the ping of one arrival (the router's thread: never blocks, never raises)."""
        if trip.stale:
            log.warning(
                "canary %d came through in %.1f s, over twice its period: no ping",
                trip.seq,
                trip.round_trip_s,
            )
            return
        try:
            self._arrivals.put_nowait(trip)
        except queue.Full:
            log.warning("canary %d arrived while %d pings wait: it adds none", trip.seq, BACKLOG)

    @property
    def waiting(self) -> int:
        """Arrivals whose ping has not been sent yet."""
        return self._arrivals.qsize()

    def start(self) -> Pinger:
        return self

    def step(self) -> int:
        """Ping for the next arrival (waiting ``wait`` seconds at most) and count the outcome.
        Returns the pings sent (0 or 1). Redis errors are the caller's (``ride_out``)."""
        try:
            trip = self._arrivals.get(timeout=self.wait)
        except queue.Empty:
            return 0
        ok = self.ping(trip)
        counter = K.COUNTER_CANARY_PINGS if ok else K.COUNTER_CANARY_PING_FAILURES
        self.r.hincrby(self.keys.counters, counter, 1)
        return 1

    def ping(self, trip: CanaryTrip) -> bool:
        """One GET of the URL; True on 2xx. Failures are logged without the URL."""
        secret = self.url.get_secret_value()
        try:
            urlopen(Request(secret, method="GET"), timeout=self.timeout).close()  # raises for non-2xx
        except HTTPError as exc:
            exc.close()
            log.warning("dead-man's switch ping for canary %d answered HTTP %d", trip.seq, exc.code)
            return False
        except ERRORS as exc:
            why = redact(f"{type(exc).__name__}: {exc}".replace(secret, REDACTED))[:200]
            log.warning("dead-man's switch ping for canary %d failed: %s", trip.seq, why)
            return False
        log.debug("dead-man's switch pinged for canary %d", trip.seq)
        return True
