"""The ingestor's end of the dead-man's switch (``shared.canary``): every ``every`` seconds, whatever
the feed's state (the canary proves MonitorX, not Galio), one XADD of a canary entry to the
snapshots stream. Nothing else: no ``latest:*``, no ``seen``, no counter (the canary is never an
account). The entry is trimmed with the snapshots (``ingestor.ingest``'s safe trim).

A canary is about now: one that cannot be written (Redis unavailable) is skipped, not kept for
later, and the outage is logged once (``shared.redisio.Outage``). The first canary goes one period
after the start. With the canary off (``every`` 0), the last trip recorded (``Keys.canary``) is
deleted once at start, so ``monitorx status`` does not report a canary that will never come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis

from ingestor.frames import SequenceClock
from shared.canary import CanaryTrip
from shared.keys import Keys
from shared.redisio import Outage

log = logging.getLogger(__name__)


class CanarySender:
    """Writes the canaries of one ingestor (``send`` runs in a worker thread)."""

    def __init__(
        self, r: redis.Redis, keys: Keys, every: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.every = every
        self._r = r
        self._keys = keys
        self._clock = clock
        self._seq = SequenceClock()
        self.outage = Outage("ingestor canary")

    def send(self) -> CanaryTrip | None:
        """XADD one canary; the trip sent, or None when Redis failed (logged once per outage)."""
        trip = CanaryTrip(seq=self._seq.next(), sent_at=self._clock(), every=self.every)
        try:
            self._r.xadd(self._keys.snapshots, trip.entry_fields())  # type: ignore[arg-type]
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return None
        self.outage.succeeded()
        return trip

    def forget(self) -> None:
        """The canary is off: delete the last trip recorded (a Redis error is logged and ignored)."""
        try:
            self._r.delete(self._keys.canary)
        except redis.RedisError as exc:
            log.warning("canary off, but its last trip could not be deleted: %s", exc)


async def canary_loop(sender: CanarySender) -> None:
    """Send a canary every ``sender.every`` seconds on a fixed schedule (a slow send does not
    shift the next ones; slots missed meanwhile are skipped), in a worker thread. Off (0):
    forget the last trip and return."""
    if sender.every <= 0:
        await asyncio.to_thread(sender.forget)
        return
    loop = asyncio.get_running_loop()
    due = loop.time() + sender.every
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        await asyncio.to_thread(sender.send)
        due = max(due + sender.every, loop.time())
