"""The delivery loop. ``while not stopper.is_set(): alerter.step()``; tests call ``step()`` directly.

State of one (alert id, sink) pair, kept in Redis so it survives restarts::

    pending --deliver ok--------------------------------> sent  (SET sent:{sink}:{id} "sent" EX ttl)
    pending --retryable error, attempts < max_attempts--> pending (HINCRBY attempts:{id} sink)
    pending --non-retryable, or attempts >= max---------> dead  (XADD dead, SET sent:{sink}:{id} "dead")

A stream entry is acknowledged (XACK) once every sink is ``sent`` or ``dead`` for its alert id;
until then it stays in the group's pending list and XAUTOCLAIM hands it back after
``retry_idle_ms`` (to this consumer or, after a crash, to any other), when only the sinks still
pending are tried. Markers are keyed by alert id, not stream id, so an alert a worker wrote twice
is delivered once per sink. A sink that just failed with a retryable error is skipped (no attempt
counted) for ``retry_idle_ms``, so a Slack outage costs one timeout per retry period, not one per
alert, and never holds up the other sinks; during a long outage one alert per period probes the
sink (and spends attempts), the others wait and go out when it recovers.

Ordering, per sink: deliver -> SET marker; per entry: all markers -> XACK. A crash after XACK
loses nothing and a crash before the delivery repeats nothing. The only window that can duplicate
is a crash between a successful delivery and its marker: the entry comes back, the marker is
missing, and the alert is posted again; webhooks carry no idempotency key the receiver would honour
(Slack's has none), so this window cannot be closed from our side, only kept to one Redis round
trip. (A Redis error at that point acts the same. Below us, slack-sdk retries a connection reset
that may follow an accepted post: see pitfalls.)

A SIGTERM sets the stop flag only: the entry in hand finishes (delivery, marker, ack) first, and
the rest of the batch, read but not handled, stays pending for the next run.

With several alerters, keep ``retry_idle_ms`` above the time one batch takes, or a peer may
reclaim entries this one is still working on and deliver them too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from alerter.sinks import DeliveryError, Sink
from shared import keys as K
from shared.keys import Keys
from shared.lifecycle import redact
from shared.models import Alert
from shared.redisio import ensure_group, safe_trim
from shared.settings import AlertSettings

log = logging.getLogger(__name__)

SENT = "sent"
DEAD = "dead"
ANY_SINK = "*"
"""The ``sink`` of a dead-letter entry whose alert could not be read at all."""
ERROR_CHARS = 500

Entry = tuple[str, dict[str, str]]


def _never() -> bool:
    return False


def _label(alert: Alert) -> str:
    return f"{alert.check} {alert.account} {alert.state} (alert {alert.id})"


def sink_group(sink_name: str) -> str:
    """The consumer group of one sink's delivery loop: ``alert:slack``, ``alert:jsonl``, ..."""
    return f"{K.ALERT_GROUP}:{sink_name}"


ALERTS_MAXLEN = 10_000
"""Delivered alerts kept on the stream for inspection (undelivered ones are never trimmed)."""
TRIM_EVERY = 100
"""Steps between two trims of the alerts stream."""


@dataclass
class Alerter:
    r: redis.Redis
    """A client with ``decode_responses=True`` (shared.redisio.connect's default)."""
    keys: Keys
    sinks: Sequence[Sink]
    consumer: str
    max_attempts: int = 5
    retry_idle_ms: int = 5_000
    sent_ttl: int = 7 * 86400
    batch: int = 20
    block_ms: int = 1000
    clock: Callable[[], float] = time.time
    stopping: Callable[[], bool] = _never
    """Checked between entries: once true, the rest of the batch stays pending."""
    group: str = K.ALERT_GROUP
    """The consumer group this alerter reads through. The CLI runs one alerter per sink, each in
    its own group (``sink_group``), so a sink that is down or slow never delays another."""
    stream_maxlen: int = ALERTS_MAXLEN
    """Alerts kept once every group has read and acknowledged them (trimmed every TRIM_EVERY steps)."""
    _started: bool = False
    _steps: int = 0
    _claim_cursor: str = "0-0"
    _resting: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, r: redis.Redis, settings: AlertSettings, sinks: Sequence[Sink], **kwargs: Any
    ) -> Alerter:
        return cls(
            r,
            settings.keys,
            sinks,
            settings.consumer,
            max_attempts=settings.max_attempts,
            retry_idle_ms=settings.retry_idle_ms,
            sent_ttl=settings.sent_ttl,
            **kwargs,
        )

    def start(self) -> Alerter:
        ensure_group(self.r, self.keys.alerts, self.group)
        self._started = True
        return self

    def step(self) -> int:
        """Handle retries due, then new entries. Returns the number of entries handled."""
        if not self._started:
            self.start()
        if not self.sinks:
            time.sleep(self.block_ms / 1000)  # nothing to deliver to: leave the alerts queued
            return 0
        self._steps += 1
        if self._steps % TRIM_EVERY == 0:
            safe_trim(self.r, self.keys.alerts, self.stream_maxlen)
        reclaimed = self._reclaim()
        handled = self._handle_all(reclaimed)
        if self.stopping():
            return handled
        return handled + self._handle_all(self._read(block=not reclaimed))

    def close(self) -> None:
        """Leave the group if nothing is pending for this consumer (per-pid names pile up)."""
        mine = self.r.xpending_range(
            self.keys.alerts, self.group, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:
            self.r.xgroup_delconsumer(self.keys.alerts, self.group, self.consumer)

    # -- reading ---------------------------------------------------------------------------------

    def _reclaim(self) -> list[Entry]:
        """Entries whose delivery failed (or whose consumer died) ``retry_idle_ms`` ago or more."""
        stream, idle, cursor = self.keys.alerts, self.retry_idle_ms, self._claim_cursor
        reply: Any = self.r.xautoclaim(stream, self.group, self.consumer, idle, cursor, count=self.batch)
        self._claim_cursor = str(reply[0])
        deleted = [str(eid) for eid in (reply[2] if len(reply) > 2 else [])]
        if deleted:
            log.warning("%d pending alert entries were deleted from the stream: acknowledged", len(deleted))
            self.r.xack(self.keys.alerts, self.group, *deleted)
        entries = [(str(eid), dict(fields or {})) for eid, fields in reply[1]]
        if entries:
            log.info("retrying %d pending alert entries", len(entries))
        return entries

    def _read(self, block: bool) -> list[Entry]:
        reply: Any = self.r.xreadgroup(
            self.group,
            self.consumer,
            {self.keys.alerts: ">"},
            count=self.batch,
            block=self.block_ms if block else None,
        )
        return [(str(eid), dict(fields or {})) for _, entries in reply or [] for eid, fields in entries]

    def _handle_all(self, entries: list[Entry]) -> int:
        handled = 0
        for entry_id, fields in entries:
            if self.stopping():
                break
            self.handle(entry_id, fields)
            handled += 1
        return handled

    # -- one entry -------------------------------------------------------------------------------

    def handle(self, entry_id: str, fields: dict[str, str]) -> bool:
        """Deliver one entry to every sink still pending for it; ack when all are done. Returns
        whether the entry was acknowledged."""
        raw = fields.get("alert")
        try:
            alert = Alert.model_validate_json(raw or "")
        except ValidationError as exc:
            self._dead_letter_invalid(entry_id, fields, exc)
            return True
        markers: Any = self.r.mget([self.keys.sent(sink.name, alert.id) for sink in self.sinks])
        done = [
            marker is not None or self._deliver(alert, raw or "", sink)
            for sink, marker in zip(self.sinks, markers, strict=True)
        ]
        if all(done):
            pipe = self.r.pipeline(transaction=False)
            pipe.xack(self.keys.alerts, self.group, entry_id)
            pipe.delete(self.keys.attempts(alert.id))
            pipe.execute()
        return all(done)

    def _deliver(self, alert: Alert, raw: str, sink: Sink) -> bool:
        """One sink, one alert without a marker. True when the pair is now finished (sent or dead),
        False when it stays pending. deliver -> SET marker: a crash in between re-delivers."""
        if self._resting.get(sink.name, 0.0) > self.clock():
            return False
        try:
            sink.deliver(alert, self.clock())
        except DeliveryError as exc:
            return self._failed(alert, raw, sink, exc)
        except Exception as exc:  # noqa: BLE001 -- a sink bug must not stop the other sinks
            return self._failed(alert, raw, sink, DeliveryError(redact(f"{type(exc).__name__}: {exc}"), True))
        self._mark(self.keys.sent(sink.name, alert.id), SENT, K.COUNTER_DELIVERED)
        log.info("delivered %s to %s", _label(alert), sink.name)
        return True

    def _mark(self, marker: str, value: str, counter: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(marker, value, ex=self.sent_ttl)
        pipe.hincrby(self.keys.counters, counter, 1)
        pipe.execute()

    def _failed(self, alert: Alert, raw: str, sink: Sink, error: DeliveryError) -> bool:
        attempts = self._count_attempt(alert.id, sink.name)
        if error.retryable and attempts < self.max_attempts:
            self._resting[sink.name] = self.clock() + self.retry_idle_ms / 1000
            log.warning(
                "delivery of %s to %s failed (attempt %d of %d), retry in %d ms: %s",
                *(_label(alert), sink.name, attempts, self.max_attempts, self.retry_idle_ms, error.message),
            )
            return False
        pipe = self.r.pipeline(transaction=True)
        self._dead_letter(pipe, raw, sink.name, error.message, attempts)
        pipe.set(self.keys.sent(sink.name, alert.id), DEAD, ex=self.sent_ttl)
        pipe.hincrby(self.keys.counters, K.COUNTER_DEAD, 1)
        pipe.execute()
        log.error(
            "GAVE UP delivering %s to %s after %d attempt(s): %s -- it is in the dead-letter stream %s",
            *(_label(alert), sink.name, attempts, error.message, self.keys.dead),
        )
        return True

    def _count_attempt(self, alert_id: str, sink_name: str) -> int:
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(self.keys.attempts(alert_id), sink_name, 1)
        pipe.expire(self.keys.attempts(alert_id), self.sent_ttl)
        return int(pipe.execute()[0])

    def _dead_letter(self, pipe: Any, raw: str, sink_name: str, error: str, attempts: int) -> None:
        """Queue the dead-letter XADD on ``pipe`` (the caller commits it with its other writes)."""
        record = {
            "alert": raw,
            "sink": sink_name,
            "error": error[:ERROR_CHARS],
            "attempts": attempts,
            "failed_at": repr(self.clock()),
        }
        pipe.xadd(self.keys.dead, record, maxlen=K.DEAD_MAXLEN, approximate=True)

    def _dead_letter_invalid(self, entry_id: str, fields: dict[str, str], exc: ValidationError) -> None:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'alert'}: {e['msg']}" for e in exc.errors())
        pipe = self.r.pipeline(transaction=True)
        self._dead_letter(pipe, fields.get("alert") or repr(fields), ANY_SINK, f"invalid alert: {reason}", 0)
        pipe.hincrby(self.keys.counters, K.COUNTER_DEAD, 1)
        pipe.xack(self.keys.alerts, self.group, entry_id)
        pipe.execute()
        log.error("invalid alert entry %s moved to %s: %s", entry_id, self.keys.dead, reason[:200])
