"""The delivery loop. ``while not stopper.is_set(): alerter.step()``; tests call ``step()`` directly.

State of one (alert id, sink) pair, kept in Redis so it survives restarts::

    pending --deliver ok----------------------------> sent     SET sent:{sink}:{id} "sent" EX ttl
    pending --429, age < retry_for------------------> pending  no attempt counted; sink rests
    pending --other retryable error, age < retry_for> pending  HINCRBY attempts:{id} sink; sink rests
    pending --permanent error, or retryable at------> dead     XADD dead, SET sent:{sink}:{id} "dead",
              age >= retry_for                                 HINCRBY counters alerts_dead, log ERROR

The age of an alert is the time it has waited for this alerter: ``clock()`` minus its
``emitted_at``, or minus the alerter's first start when it was emitted before (an alerter that was
down for hours still gives the backlog it finds a full ``retry_for``). Retryable: timeouts,
connection errors, 408,
429 and 5xx; permanent: 400, 401, 403, 404, 410, a bad URL... Nothing else ever gives an alert
up (there is no attempt limit), so an outage shorter than ``retry_for`` (an hour by default)
loses nothing; the attempts hash only counts failures for the dead-letter record and the logs.

Rests, per sink and in memory. After a failure the sink rests (is not posted to) until
``clock() + delay``: for a 429 the delay is its ``Retry-After`` as is, however long; otherwise
(a 429 without a readable one too) it is ``shared.backoff.backoff_delay`` from ``retry_idle_ms``
doubling up to ``retry_max_ms``, jittered, by the sink's consecutive failures (a success resets
them). While a sink rests its alerts stay pending untouched, so an outage costs one probe per rest,
not one per alert, and never holds up the other sinks. When every sink of the alerter rests,
``step()`` reads nothing and only waits (at most ``block_ms``).

Reading, each step: this consumer's own pending entries first (``XREADGROUP`` from id 0, a page a
step) after ``start()`` (at process start, after each Redis error) and after each rest, so a
restarted alerter (stable consumer name) or a rested sink resumes at once; then ``XAUTOCLAIM`` of
entries idle ``retry_idle_ms`` or more (those of a dead consumer); then new entries. A stream entry
is acknowledged (XACK) once every sink is ``sent`` or ``dead`` for its alert id; only the sinks
still pending are tried. Markers are keyed by alert id, not stream id, so an alert a worker wrote
twice is delivered once per sink.

``start()`` (re)creates the consumer group and may be called again at any time; every Redis error
(including ``NOGROUP`` after Redis came back empty) leaves ``step()`` for the caller
(``shared.redisio.ride_out``), which calls ``start()`` again. An empty Redis has lost its markers:
an alert still on the new stream, or written again, can then be delivered a second time.

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
from shared.backoff import BackoffPolicy, backoff_delay
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
    """One or more (the CLI runs one alerter per sink)."""
    consumer: str
    """Stable across restarts (AlertSettings.consumer), so a restarted alerter finds its own
    pending entries at once."""
    retry_for: float = 3600.0
    retry_idle_ms: int = 5_000
    retry_max_ms: int = 30_000
    sent_ttl: int = 7 * 86400
    """``retry_for``, ``retry_idle_ms``, ``retry_max_ms``, ``sent_ttl``: see AlertSettings, where
    their defaults are documented."""
    batch: int = 20
    block_ms: int = 1000
    clock: Callable[[], float] = time.time
    """Unix time: alert ages and rests are measured with it (tests move it by hand)."""
    stopping: Callable[[], bool] = lambda: False
    """Checked between entries: once true, the rest of the batch stays pending."""
    group: str = K.ALERT_GROUP
    """The consumer group this alerter reads through. The CLI runs one alerter per sink, each in
    its own group (``sink_group``), so a sink that is down or slow never delays another."""
    _steps: int = 0
    _claim_cursor: str = "0-0"
    started_at: float = 0.0
    """clock() at the first start: the earliest time an alert's wait is counted from."""
    _own_cursor: str | None = "0"
    """Where the next read of this consumer's own pending entries starts; None: all read."""
    _resting: dict[str, float] = field(default_factory=dict)
    """Sink name -> clock() time before which it is not posted to."""
    _failures: dict[str, int] = field(default_factory=dict)
    """Sink name -> consecutive failures (a success resets it): the backoff's exponent."""

    @classmethod
    def from_settings(
        cls, r: redis.Redis, settings: AlertSettings, sinks: Sequence[Sink], **kwargs: Any
    ) -> Alerter:
        return cls(
            r,
            settings.keys,
            sinks,
            settings.consumer,
            retry_for=settings.retry_for,
            retry_idle_ms=settings.retry_idle_ms,
            retry_max_ms=settings.retry_max_ms,
            sent_ttl=settings.sent_ttl,
            **kwargs,
        )

    def start(self) -> Alerter:
        """(Re)create the consumer group (and the stream) if missing, and read this consumer's own
        pending entries again from the start on the next step. Safe to call at any time: after a
        Redis error, and after Redis came back empty (``NOGROUP``)."""
        self.started_at = self.started_at or self.clock()
        ensure_group(self.r, self.keys.alerts, self.group)
        self._own_cursor = "0"
        self._claim_cursor = "0-0"
        return self

    def step(self) -> int:
        """Own pending entries (after a start or a rest), then retries due, then new entries.
        Returns the number of entries handled. Call ``start()`` first; Redis errors are raised to
        the caller, which calls ``start()`` again (``shared.redisio.ride_out``)."""
        rest = self._wake()
        if rest > 0:  # every sink rests: leave the alerts where they are
            time.sleep(min(rest, self.block_ms / 1000))
            return 0
        self._steps += 1
        if self._steps % TRIM_EVERY == 0:
            safe_trim(self.r, self.keys.alerts, ALERTS_MAXLEN)
        handled = 0
        for read in (self._read_own, self._reclaim):
            handled += self._handle_all(read())
            if self.stopping() or self._all_resting():
                return handled  # a probe failed: the rest waits for the sink's next turn
        return handled + self._handle_all(self._read(block=handled == 0))

    def close(self) -> None:
        """Leave the group if nothing is pending for this consumer (per-pid names pile up)."""
        mine = self.r.xpending_range(
            self.keys.alerts, self.group, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:
            self.r.xgroup_delconsumer(self.keys.alerts, self.group, self.consumer)

    # -- resting ---------------------------------------------------------------------------------

    def _wake(self) -> float:
        """End the rests that are over (this consumer's own pending entries are then read again,
        so the alerts a sink skipped go out at once). Returns the seconds until some sink may be
        posted to: 0 unless every sink rests."""
        now = self.clock()
        over = [name for name, until in self._resting.items() if until <= now]
        for name in over:
            del self._resting[name]
        if over:
            self._own_cursor = "0"
        if not self._all_resting():
            return 0.0
        return min(self._resting.values()) - now

    def _all_resting(self) -> bool:
        return all(sink.name in self._resting for sink in self.sinks)

    def _rest(self, sink_name: str, error: DeliveryError) -> float:
        """Rest a sink after a retryable failure; returns the delay in seconds: the receiver's
        ``Retry-After`` when it gave one, else the capped, jittered backoff."""
        if error.retry_after is not None:
            delay = error.retry_after
        else:
            failures = self._failures[sink_name] = self._failures.get(sink_name, 0) + 1
            policy = BackoffPolicy(self.retry_idle_ms / 1000, self.retry_max_ms / 1000)
            delay = backoff_delay(policy, failures)
        self._resting[sink_name] = self.clock() + delay
        return delay

    # -- reading ---------------------------------------------------------------------------------

    def _read_own(self) -> list[Entry]:
        """The next page of this consumer's own pending entries (read before a restart or a
        Redis error, or skipped while a sink rested), while there are any since ``start()`` or
        the last rest. Entries deleted from the stream meanwhile are acknowledged."""
        if self._own_cursor is None:
            return []
        page = self._xread(self._own_cursor)
        self._own_cursor = page[-1][0] if len(page) >= self.batch else None
        self._ack_deleted([eid for eid, fields in page if not fields])
        entries = [(eid, fields) for eid, fields in page if fields]
        if entries:
            log.info("handling %d alert entries this consumer had pending", len(entries))
        return entries

    def _ack_deleted(self, deleted: list[str]) -> None:
        """Acknowledge pending entries whose body the stream no longer holds (trimmed or deleted):
        nothing is left to deliver."""
        if deleted:
            log.warning("%d pending alert entries were deleted from the stream: acknowledged", len(deleted))
            self.r.xack(self.keys.alerts, self.group, *deleted)

    def _reclaim(self) -> list[Entry]:
        """Pending entries idle ``retry_idle_ms`` or more: those of a consumer that died, and this
        one's own that no other read picked up."""
        stream, idle, cursor = self.keys.alerts, self.retry_idle_ms, self._claim_cursor
        reply: Any = self.r.xautoclaim(stream, self.group, self.consumer, idle, cursor, count=self.batch)
        self._claim_cursor = str(reply[0])
        self._ack_deleted([str(eid) for eid in (reply[2] if len(reply) > 2 else [])])
        entries = [(str(eid), dict(fields or {})) for eid, fields in reply[1]]
        if entries:
            log.info("retrying %d pending alert entries", len(entries))
        return entries

    def _read(self, block: bool) -> list[Entry]:
        return self._xread(">", self.block_ms if block else None)

    def _xread(self, cursor: str, block_ms: int | None = None) -> list[Entry]:
        """One page of ``XREADGROUP`` from ``cursor`` (``>``: new entries); an entry deleted from
        the stream comes with empty fields."""
        streams: dict[Any, Any] = {self.keys.alerts: cursor}
        reply: Any = self.r.xreadgroup(self.group, self.consumer, streams, count=self.batch, block=block_ms)
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

    def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """Deliver one entry to every sink still pending for it; ack when all are done."""
        raw = fields.get("alert")
        try:
            alert = Alert.model_validate_json(raw or "")
        except ValidationError as exc:
            self._dead_letter_invalid(entry_id, fields, exc)
            return
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

    def _deliver(self, alert: Alert, raw: str, sink: Sink) -> bool:
        """One sink, one alert without a marker. True when the pair is now finished (sent or dead),
        False when it stays pending. deliver -> SET marker: a crash in between re-delivers."""
        if sink.name in self._resting:
            return False
        try:
            sink.deliver(alert, self.clock())
        except DeliveryError as exc:
            return self._failed(alert, raw, sink, exc)
        except Exception as exc:  # noqa: BLE001 -- a sink bug must not stop the other sinks
            return self._failed(alert, raw, sink, DeliveryError(redact(f"{type(exc).__name__}: {exc}"), True))
        self._failures.pop(sink.name, None)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.keys.sent(sink.name, alert.id), SENT, ex=self.sent_ttl)
        pipe.hincrby(self.keys.counters, K.COUNTER_DELIVERED, 1)
        pipe.execute()
        log.info("delivered %s to %s", _label(alert), sink.name)
        return True

    def _failed(self, alert: Alert, raw: str, sink: Sink, error: DeliveryError) -> bool:
        """A failed delivery: the pair stays pending (the sink rests) while the error is retryable
        and the alert younger than ``retry_for``; otherwise it is dead-lettered. True when dead."""
        attempts = self._count_attempt(alert.id, sink.name, counted=not error.rate_limited)
        age = self.clock() - max(alert.emitted_at, self.started_at)
        delay = self._rest(sink.name, error) if error.retryable else 0.0
        if error.retryable and age < self.retry_for:
            attempt = "rate limited, no attempt counted" if error.rate_limited else f"attempt {attempts}"
            log.warning(
                "delivery of %s to %s failed (%s), the sink rests %.1f s: %s",
                *(_label(alert), sink.name, attempt, delay, error.message),
            )
            return False
        why = (
            f"the alert has waited {age:.0f} s (retry_for {self.retry_for:.0f} s)"
            if error.retryable
            else "permanent"
        )
        self._give_up(alert, raw, sink.name, f"{why}: {error.message}", attempts)
        return True

    def _give_up(self, alert: Alert, raw: str, sink_name: str, why: str, attempts: int) -> None:
        """Dead-letter one (alert, sink) pair, count it and say so loudly."""
        pipe = self._dead_letter(raw, sink_name, why, attempts)
        pipe.set(self.keys.sent(sink_name, alert.id), DEAD, ex=self.sent_ttl)
        pipe.execute()
        log.error(
            "GAVE UP delivering %s to %s after %d failed attempt(s), %s -- in the dead-letter stream %s",
            *(_label(alert), sink_name, attempts, why, self.keys.dead),
        )

    def _count_attempt(self, alert_id: str, sink_name: str, counted: bool) -> int:
        """Failed attempts of this pair so far, this one included when ``counted`` (a rate limit
        is not an attempt)."""
        key = self.keys.attempts(alert_id)
        if not counted:
            return int(self.r.hget(key, sink_name) or 0)
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(key, sink_name, 1)
        pipe.expire(key, self.sent_ttl)
        return int(pipe.execute()[0])

    def _dead_letter(self, raw: str, sink_name: str, error: str, attempts: int) -> Any:
        """A transaction with the dead-letter XADD and the alerts_dead count queued: the caller adds
        its other writes and executes it."""
        record: dict[Any, Any] = {
            "alert": raw,
            "sink": sink_name,
            "error": error[:ERROR_CHARS],
            "attempts": attempts,
            "failed_at": repr(self.clock()),
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.keys.dead, record, maxlen=K.DEAD_MAXLEN, approximate=True)
        pipe.hincrby(self.keys.counters, K.COUNTER_DEAD, 1)
        return pipe

    def _dead_letter_invalid(self, entry_id: str, fields: dict[str, str], exc: ValidationError) -> None:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'alert'}: {e['msg']}" for e in exc.errors())
        pipe = self._dead_letter(fields.get("alert") or repr(fields), ANY_SINK, f"invalid alert: {reason}", 0)
        pipe.xack(self.keys.alerts, self.group, entry_id)
        pipe.execute()
        log.error("invalid alert entry %s moved to %s: %s", entry_id, self.keys.dead, reason[:200])
