"""A receiver's delivery loop: notices on ``notify:{receiver}`` -> dedup -> pace -> send -> record.
``while not stopper.is_set(): delivery.step()``; tests call ``step()`` directly.

The router (``alerter.router``) puts a notice ``group`` on the stream of the receiver when a group
has something new for it or a repeat is due. Handling a notice: clear the group's ``queued`` flag
(so a change made from here on is noticed again), read the group, drop what is muted now (inhibit,
silence), and build the notifications of what the receiver has not been told (``alerter.dedup``:
the delivery markers are the notification log). Each one is paced (``alerter.pace``), sent, and
recorded; the notice is acknowledged when all are done.

State of one notification, kept in Redis so it survives restarts::

    pending --send ok--------------------------------> sent   SET sent:{receiver}:{id} "sent" EX ttl
                                                              for each new alert, the message ref,
                                                              the group's sent_at, the send log
    pending --channel not free (pace, Retry-After)---> pending  the receiver rests until it is
    pending --429, age < retry_for-------------------> pending  no attempt counted; receiver rests
    pending --other retryable error, age < retry_for-> pending  HINCRBY attempts:{id}; rests
    pending --permanent error, or retryable at-------> dead   XADD dead per new alert, SET its
              age >= retry_for                                marker "dead", log ERROR

The age of a notification is that of its oldest new alert: ``clock()`` minus its ``emitted_at``,
or minus the alerter's first start when it was emitted before (an alerter that was down for
hours still gives the backlog it finds a full ``retry_for``). Retryable: timeouts, connection
errors, 408, 429 and 5xx; permanent: 400, 401, 403, 404, 410, a bad URL... Nothing else gives a
notification up, so an outage shorter than ``retry_for`` (an hour by default) loses nothing.

Rests, per receiver and in memory. After a failure the receiver rests until ``clock() + delay``:
for a 429 the delay is its ``Retry-After`` as is, however long (and the channel is held that long
for every replica); otherwise ``shared.backoff.backoff_delay`` from ``retry_idle_ms`` doubling up
to ``retry_max_ms``, jittered, by consecutive failures. While it rests its notices stay pending
untouched, so an outage costs one probe per rest and never holds up another receiver (each has
its own loop and thread).

Reading, each step: this consumer's own pending notices first after ``start()`` and after each
rest, then ``XAUTOCLAIM`` of notices idle ``retry_idle_ms`` or more (those of a dead replica), then
new ones. ``start()`` (re)creates the consumer group; every Redis error leaves ``step()`` for the
caller (``shared.redisio.ride_out``), which calls ``start()`` again.

Exactly once. Per notification: send -> record (markers first, the ack last, one round trip). A
crash after the record repeats nothing (the markers say the alerts were told); a crash before
the send repeats nothing either. The one window is a crash between a send and its record: before
each send the alert ids go to ``inflight:{receiver}:{group}``, and a later send that finds them
there counts a possible duplicate (``notifications_maybe_duplicated``, logged). A Slack bot
receiver closes that window itself: it finds its own message by its metadata and updates it
instead of posting again. Two replicas never send one group at once while its notice is handled
by one of them (a stream entry has one owner); a peer takes a notice over only after
``retry_idle_ms``, so keep that above the time one send takes.

A SIGTERM sets the stop flag only: the notice in hand finishes (send, record, ack) first.

Metrics (``Keys.metrics``, ``shared.metrics``), each in a round trip already made: a record counts
``notifications_total{receiver}`` and observes ``notification_latency_seconds{receiver}``, the
seconds from the newest new alert event of the notification (its ``emitted_at``) to the send
done: what the desk feels, group wait and pacing included (a notification with nothing new, the
repeat of an unchanged group, is not observed). A failed attempt counts
``notifications_failed_total{receiver,reason}`` (:func:`failure_reason`, :data:`REASONS`); a dead
letter ``dead_letters_written_total{receiver}``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any
from urllib.error import URLError

import redis
from slack_sdk.errors import SlackApiError, SlackClientError

from alerter.dedup import new_events, notifications, visible
from alerter.groups import Group, Groups, parse_group, settled_fields
from alerter.inhibit import Rule
from alerter.mute import mute_from, read_mute
from alerter.notify import MessageRef, Notification, Receiver
from alerter.pace import Pacer
from alerter.sinks import DeliveryError
from shared import keys as K
from shared import metrics as M
from shared.backoff import BackoffPolicy, backoff_delay
from shared.keys import Keys
from shared.lifecycle import redact
from shared.redisio import ensure_group, run_script, safe_trim
from shared.settings import AlertSettings

log = logging.getLogger(__name__)

SENT = "sent"
DEAD = "dead"
ANY_SINK = "*"
"""The ``sink`` of a dead-letter entry whose alert could not be read at all."""
ERROR_CHARS = 500
NOTIFY_MAXLEN = 10_000
"""Handled notices kept on a receiver's stream (unhandled ones are never trimmed)."""
TRIM_EVERY = 100
"""Steps between two trims of the receiver's stream."""

Entry = tuple[str, dict[str, str]]

REASONS = ("rate_limited", "http_4xx", "http_5xx", "timeout", "connection", "rejected", "other")
"""The ``reason`` label of ``notifications_failed_total``: see :func:`failure_reason`."""
_HTTP_STATUS = re.compile(r"[^:]*: HTTP ([1-5])\d\d\b")
"""The start of ``alerter.sinks.status_error``'s message: ``<sink>: HTTP <status>``."""
CONNECTION_ERRORS = (ConnectionError, URLError, HTTPException, SlackClientError)
"""What a request that got no (whole) answer raises: refused, reset, a name not found, cut short."""


def failure_reason(error: DeliveryError) -> str:
    """Why a send failed, one word of :data:`REASONS`: ``rate_limited`` (HTTP 429, Slack's
    ``ratelimited``); ``http_5xx``, ``http_4xx`` (another HTTP status: 5xx, any other below 500);
    ``timeout`` (no answer in time); ``connection`` (no answer: refused, reset, unknown host);
    ``rejected`` (Slack's Web API refused the call with HTTP 200 and an ``error``); ``other``
    (anything else: a file not written, a receiver's own bug). Read from the error's flags and
    message and from the exception it was raised from (``__context__`` is kept by ``from None``)."""
    if error.rate_limited:
        return "rate_limited"
    status = _HTTP_STATUS.match(error.message)
    if status:
        return "http_5xx" if status.group(1) == "5" else "http_4xx"
    cause = error.__cause__ or error.__context__
    if isinstance(cause, TimeoutError) or isinstance(getattr(cause, "reason", None), TimeoutError):
        return "timeout"
    if isinstance(cause, SlackApiError):
        return "rejected"
    return "connection" if isinstance(cause, CONNECTION_ERRORS) else "other"


def _ref(raw: str | None) -> MessageRef | None:
    """A group's message ref as stored (``Keys.ref``), None when it has none."""
    if not raw:
        return None
    data = json.loads(raw)
    return MessageRef(data["channel"], data["ts"], data.get("data", {}))


def _label(n: Notification) -> str:
    ids = ", ".join(a.id for a in (n.new or n.alerts)[:3])
    more = f" +{len(n.new or n.alerts) - 3}" if len(n.new or n.alerts) > 3 else ""
    return f"group {n.group_key} v{n.version} ({'repeat' if n.repeat else 'alerts'} {ids}{more})"


# KEYS: the in-flight key of (receiver, group). ARGV: ttl, the receiver's marker key prefix, alert
# ids. Returns a flag per id (1: it has a marker: told), then what was in flight before ('' for
# nothing); the ids without a marker are in flight from now on.
_TELL = """
local reply, fresh = {}, {}
for i = 3, #ARGV do
  local told = redis.call('EXISTS', ARGV[2] .. ARGV[i])
  reply[#reply + 1] = told
  if told == 0 then fresh[#fresh + 1] = ARGV[i] end
end
reply[#reply + 1] = redis.call('GET', KEYS[1]) or ''
if #fresh > 0 then
  redis.call('SET', KEYS[1], cjson.encode(fresh), 'EX', ARGV[1])
else
  redis.call('DEL', KEYS[1])
end
return reply
"""


def dead_letter(
    client: Any, keys: Keys, raw: str, receiver: str, error: str, attempts: int, now: float
) -> None:
    """Queue on ``client`` (a pipeline, or a Redis client) one dead-letter XADD and the
    alerts_dead count."""
    record: dict[Any, Any] = {
        "alert": raw,
        "sink": receiver,
        "error": error[:ERROR_CHARS],
        "attempts": attempts,
        "failed_at": repr(now),
    }
    client.xadd(keys.dead, record, maxlen=K.DEAD_MAXLEN, approximate=True)
    client.hincrby(keys.counters, K.COUNTER_DEAD, 1)
    M.count(client, keys, M.DEAD_LETTERS, {"receiver": receiver})


@dataclass
class Delivery:
    r: redis.Redis
    """A client with ``decode_responses=True`` (shared.redisio.connect's default)."""
    keys: Keys
    receiver: Receiver
    consumer: str
    """Stable across restarts (AlertSettings.consumer), so a restarted alerter finds its own
    pending notices at once."""
    rules: tuple[Rule, ...] = ()
    """The inhibit rules (the router's), applied again when sending."""
    retry_for: float = 3600.0
    retry_idle_ms: int = 5_000
    retry_max_ms: int = 30_000
    sent_ttl: int = 7 * 86400
    """``retry_for``, ``retry_idle_ms``, ``retry_max_ms``, ``sent_ttl``: see AlertSettings, where
    their defaults are documented."""
    batch: int = 20
    block_ms: int = 1000
    clock: Callable[[], float] = time.time
    """Unix time: ages, rests and pacing are measured with it (tests move it by hand)."""
    stopping: Callable[[], bool] = lambda: False
    """Checked between notices: once true, the rest of the batch stays pending."""
    pacer: Pacer | None = None
    """None: ``Pacer(r, keys)``."""
    behind: bool = False
    """The last step handled a full batch of notices (more may be waiting)."""
    _steps: int = 0
    _claim_cursor: str = "0-0"
    _reclaim_at: float = 0.0
    """time.monotonic() before which no new XAUTOCLAIM scan starts."""
    started_at: float = 0.0
    """clock() at the first start: the earliest time an alert's wait is counted from."""
    _own_cursor: str | None = "0"
    _resting_until: float = 0.0
    _failures: int = 0
    groups: Groups = field(init=False)
    _tell: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.groups = Groups(self.r, self.keys)
        self._tell = self.r.register_script(_TELL)

    @classmethod
    def from_settings(
        cls, r: redis.Redis, settings: AlertSettings, receiver: Receiver, **kwargs: Any
    ) -> Delivery:
        """A loop with the settings' retry options; ``kwargs`` override any of them."""
        options: dict[str, Any] = {
            "retry_for": settings.retry_for,
            "retry_idle_ms": settings.retry_idle_ms,
            "retry_max_ms": settings.retry_max_ms,
            "sent_ttl": settings.sent_ttl,
        }
        return cls(r, settings.keys, receiver, settings.consumer, **(options | kwargs))

    @property
    def stream(self) -> str:
        return self.keys.notify(self.receiver.name)

    def start(self) -> Delivery:
        """(Re)create the consumer group (and the stream) if missing, and read this consumer's own
        pending notices again from the start on the next step. Safe to call at any time."""
        self.started_at = self.started_at or self.clock()
        self.pacer = self.pacer or Pacer(self.r, self.keys)
        ensure_group(self.r, self.stream, K.DELIVER_GROUP)
        self._own_cursor, self._claim_cursor, self._reclaim_at = "0", "0-0", 0.0
        return self

    def step(self) -> int:
        """Own pending notices (after a start or a rest), then those of a dead peer, then new
        ones. Returns the number handled. Redis errors are raised to the caller."""
        rest = self._resting_until - self.clock()
        if rest > 0:  # leave the notices where they are
            time.sleep(min(rest, self.block_ms / 1000))
            return 0
        if self._resting_until:
            self._resting_until, self._own_cursor = 0.0, "0"
        self._steps += 1
        if self._steps % TRIM_EVERY == 0:
            safe_trim(self.r, self.stream, NOTIFY_MAXLEN)
        handled = 0
        for read in (self._read_own, self._reclaim):
            handled += self._handle_all(read())
            if self.stopping() or self._resting_until:
                return handled
        handled += self._handle_all(self._xread(">", self.block_ms if handled == 0 else None))
        self.behind = handled >= self.batch
        return handled

    def close(self) -> None:
        """Leave the group if nothing is pending for this consumer (per-pid names pile up)."""
        mine = self.r.xpending_range(
            self.stream, K.DELIVER_GROUP, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:
            self.r.xgroup_delconsumer(self.stream, K.DELIVER_GROUP, self.consumer)

    # -- reading ---------------------------------------------------------------------------------

    def _read_own(self) -> list[Entry]:
        if self._own_cursor is None:
            return []
        page = self._xread(self._own_cursor)
        self._own_cursor = page[-1][0] if len(page) >= self.batch else None
        self._ack([eid for eid, fields in page if not fields])
        return [(eid, fields) for eid, fields in page if fields]

    def _reclaim(self) -> list[Entry]:
        """Notices a dead replica left idle ``retry_idle_ms``; a scan starts at most twice per
        that time (one round trip saved on most steps)."""
        if self._claim_cursor == "0-0":
            if time.monotonic() < self._reclaim_at:
                return []
            self._reclaim_at = time.monotonic() + self.retry_idle_ms / 2000
        idle, cursor = self.retry_idle_ms, self._claim_cursor
        reply: Any = self.r.xautoclaim(
            self.stream, K.DELIVER_GROUP, self.consumer, idle, cursor, count=self.batch
        )
        self._claim_cursor = str(reply[0])
        self._ack([str(eid) for eid in (reply[2] if len(reply) > 2 else [])])
        return [(str(eid), dict(fields or {})) for eid, fields in reply[1]]

    def _xread(self, cursor: str, block_ms: int | None = None) -> list[Entry]:
        streams: dict[Any, Any] = {self.stream: cursor}
        reply: Any = self.r.xreadgroup(
            K.DELIVER_GROUP, self.consumer, streams, count=self.batch, block=block_ms
        )
        return [(str(eid), dict(fields or {})) for _, entries in reply or [] for eid, fields in entries]

    def _ack(self, ids: list[str]) -> None:
        if ids:
            self.r.xack(self.stream, K.DELIVER_GROUP, *ids)

    def _handle_all(self, entries: list[Entry]) -> int:
        handled = 0
        for entry_id, fields in entries:
            if self.stopping() or self._resting_until:
                break
            self.handle(entry_id, fields)
            handled += 1
        return handled

    # -- one notice ------------------------------------------------------------------------------

    def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """Send what the group has new for the receiver; ack when all of it is sent or dead.
        Round trips: one read (group, message ref, silences...), one for the markers (which also
        marks the untold alerts in flight), then per notification its send and its record (with
        the ack)."""
        key = fields.get("group", "")
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(self.keys.group(key), "queued")  # a change from here on queues a new notice
        pipe.hgetall(self.keys.group(key))
        pipe.get(self.keys.ref(key))
        read_mute(pipe, self.keys, self.rules)
        replies = pipe.execute()
        group = parse_group(key, replies[1])
        notes = [] if group is None else self._compose(group, replies[3:], fields.get("repeat") == "1")
        if group is None or not notes:
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(self.keys.inflight(self.receiver.name, key))
            pipe.xack(self.stream, K.DELIVER_GROUP, entry_id)
            pipe.execute()
            return
        ref = _ref(replies[2])
        for i, note in enumerate(notes):
            last = i == len(notes) - 1
            done, ref = self._send(group, note, ref, notes[i + 1 :], entry_id if last else None)
            if not done:
                return

    def _compose(self, group: Group, mute_replies: list[Any], repeat: bool) -> list[Notification]:
        """The notifications of what the receiver has not been told, the untold alerts marked in
        flight (a possible duplicate counted when an earlier send of them was never recorded)."""
        mute = mute_from(mute_replies, self.rules, self.clock())
        shown = visible(group, mute)
        ids = sorted({a.id for a in shown} | set(group.events))
        inflight = self.keys.inflight(self.receiver.name, group.key)
        args = [self.sent_ttl, self.keys.sent(self.receiver.name, ""), *ids]
        reply: Any = run_script(self._tell, [inflight], args)
        told = {i: bool(flag) for i, flag in zip(ids, reply[:-1], strict=True)}
        version = int(group.raw.get("sent", "0")) + 1
        notes = notifications(group, shown, new_events(group, shown, told), repeat, version)
        self._count_inflight(str(reply[-1]), notes)
        return notes

    def _send(
        self,
        group: Group,
        note: Notification,
        ref: MessageRef | None,
        rest: list[Notification],
        ack: str | None,
    ) -> tuple[bool, MessageRef | None]:
        """One notification: (finished, the group's message ref now); not finished when it
        waits (pace, a rest). ``rest``: the notifications after it; ``ack``: the entry to
        acknowledge with its record (the last one's)."""
        now = self.clock()
        assert self.pacer is not None
        wait = 0.0 if self._resting_until else self.pacer.take(self.receiver.channel, now)
        if self._resting_until or wait > 0:
            self._resting_until = self._resting_until or now + wait
            self.r.delete(self.keys.inflight(self.receiver.name, group.key))  # nothing in flight
            return False, ref
        started = time.monotonic()
        try:
            sent_ref = self.receiver.send(note, ref, now)
        except DeliveryError as exc:
            return self._failed(group, note, exc, time.monotonic() - started, ack), ref
        except Exception as exc:  # noqa: BLE001 -- a receiver bug must not stop the loop
            error = DeliveryError(redact(f"{type(exc).__name__}: {exc}"), True)
            return self._failed(group, note, error, time.monotonic() - started, ack), ref
        self._record(group, note, sent_ref, rest, time.monotonic() - started, ack)
        return True, sent_ref if sent_ref is not None else ref

    def _count_inflight(self, earlier: str, notes: list[Notification]) -> None:
        """Count a possible duplicate when alerts about to be sent were in flight already: an
        earlier send of them was never recorded (a crash between a send and its record)."""
        ids = {a.id for n in notes for a in n.new}
        if earlier and set(json.loads(earlier)) & ids:
            self.r.hincrby(self.keys.counters, K.COUNTER_MAYBE_DUPLICATED, 1)
            log.warning(
                "%s to %s may be a duplicate: an earlier send of it was never recorded (a crash)",
                _label(notes[0]),
                self.receiver.name,
            )

    def _record(
        self,
        group: Group,
        note: Notification,
        ref: MessageRef | None,
        rest: list[Notification],
        took: float,
        ack: str | None,
    ) -> None:
        """Markers, message ref, ``sent_at``, counters, send log, what the group can forget, the
        channel held from now (a send of several writes), the ack: one round trip, in that
        order (Redis applies a connection's commands in order: whatever part of it a crash lets
        through, the markers come first and the ack last, so nothing is sent twice nor lost)."""
        self._failures = 0
        now = self.clock()
        pipe = self.r.pipeline(transaction=False)
        for alert in note.new:
            pipe.set(self.keys.sent(self.receiver.name, alert.id), SENT, ex=self.sent_ttl)
        if ref is not None:
            body = {"channel": ref.channel, "ts": ref.ts, "data": ref.data}
            pipe.set(self.keys.ref(group.key), json.dumps(body), ex=self.sent_ttl)
        pipe.hset(self.keys.group(group.key), mapping={"sent_at": repr(now)})
        pipe.hincrby(self.keys.group(group.key), "sent", 1)
        self._leave_inflight(pipe, group.key, rest)
        pipe.hincrby(self.keys.counters, K.COUNTER_DELIVERED, len(note.new))
        pipe.hincrby(self.keys.counters, K.COUNTER_NOTIFICATIONS, 1)
        self._count_sent(pipe, note, now)
        self._log(pipe, note, "sent", took, "")
        every = group.route.repeat_interval
        if every > 0 and note.firing:
            pipe.zadd(self.keys.groups, {group.key: now + every}, lt=True)
        assert self.pacer is not None
        self.pacer.hold(self.receiver.channel, now + self.pacer.interval, now, client=pipe)
        self.groups.forget(group, settled_fields(group, note.new), client=pipe)
        if ack is not None:
            pipe.xack(self.stream, K.DELIVER_GROUP, ack)
        pipe.execute()
        log.info("sent %s to %s", _label(note), self.receiver.name)

    def _count_sent(self, pipe: Any, note: Notification, now: float) -> None:
        """``notifications_total`` and, when it tells something new, the latency from its newest
        new event's ``emitted_at`` to ``now`` (never negative)."""
        labels = {"receiver": self.receiver.name}
        M.count(pipe, self.keys, M.NOTIFICATIONS, labels)
        if note.new:
            latency = max(0.0, now - max(a.emitted_at for a in note.new))
            M.observe(
                pipe, self.keys, M.NOTIFICATION_LATENCY, labels, latency, M.NOTIFICATION_LATENCY_BUCKETS
            )

    def _leave_inflight(self, pipe: Any, key: str, rest: list[Notification]) -> None:
        """Only the alerts of the notifications not sent yet stay in flight."""
        inflight = self.keys.inflight(self.receiver.name, key)
        ids = [a.id for n in rest for a in n.new]
        if ids:
            pipe.set(inflight, json.dumps(ids), ex=self.sent_ttl)
        else:
            pipe.delete(inflight)

    def _log(self, pipe: Any, note: Notification, status: str, took: float, error: str) -> None:
        entry = {
            "receiver": self.receiver.name,
            "group": note.group_key,
            "status": status,
            "latency_ms": f"{took * 1000:.1f}",
            "alerts": len(note.new or note.alerts),
            "error": error[:ERROR_CHARS],
            "at": repr(self.clock()),
        }
        pipe.xadd(self.keys.sendlog, entry, maxlen=K.NOTIFY_LOG_MAXLEN, approximate=True)

    # -- failures --------------------------------------------------------------------------------

    def _failed(
        self, group: Group, note: Notification, error: DeliveryError, took: float, ack: str | None
    ) -> bool:
        """The notification stays pending (the receiver rests) while the error is retryable and
        its oldest alert younger than ``retry_for``; otherwise its alerts are dead-lettered."""
        attempts = self._count_attempts(note, counted=not error.rate_limited)
        oldest = min((a.emitted_at for a in note.new), default=self.clock())
        age = self.clock() - max(oldest, self.started_at)
        retry = error.retryable and age < self.retry_for
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.keys.inflight(self.receiver.name, note.group_key))  # no crash: not in flight
        self._log(pipe, note, "retry" if retry else "dead", took, error.message)
        reason = {"receiver": self.receiver.name, "reason": failure_reason(error)}
        M.count(pipe, self.keys, M.NOTIFICATIONS_FAILED, reason)
        pipe.execute()
        if retry:
            delay = self._rest(error)
            attempt = "rate limited, no attempt counted" if error.rate_limited else f"attempt {attempts}"
            log.warning(
                "sending %s to %s failed (%s), the receiver rests %.1f s: %s",
                *(_label(note), self.receiver.name, attempt, delay, error.message),
            )
            return False
        if error.retryable:  # still down: the next notice waits for the next probe
            self._rest(error)
        why = f"waited {age:.0f} s (retry_for {self.retry_for:.0f} s)" if error.retryable else "permanent"
        self._give_up(group, note, f"{why}: {error.message}", attempts, ack)
        return True

    def _rest(self, error: DeliveryError) -> float:
        """Rest after a retryable failure: a ``Retry-After`` as given (and the channel held as
        long for every replica), else the capped, jittered backoff."""
        now = self.clock()
        if error.retry_after is not None:
            delay = error.retry_after
            assert self.pacer is not None
            self.pacer.hold(self.receiver.channel, now + delay, now)
        else:
            self._failures += 1
            policy = BackoffPolicy(self.retry_idle_ms / 1000, self.retry_max_ms / 1000)
            delay = backoff_delay(policy, self._failures)
        self._resting_until = now + delay
        return delay

    def _count_attempts(self, note: Notification, counted: bool) -> int:
        """Failed attempts of the notification's first new alert so far (this one included when
        ``counted``: a rate limit is not an attempt)."""
        if not note.new:
            return 0
        key = self.keys.attempts(note.new[0].id)
        if not counted:
            return int(self.r.hget(key, self.receiver.name) or 0)
        pipe = self.r.pipeline(transaction=True)
        for alert in note.new:
            pipe.hincrby(self.keys.attempts(alert.id), self.receiver.name, 1)
            pipe.expire(self.keys.attempts(alert.id), self.sent_ttl)
        return int(pipe.execute()[0])

    def _give_up(self, group: Group, note: Notification, why: str, attempts: int, ack: str | None) -> None:
        """Dead-letter each new alert of the notification and mark it, in one transaction with
        what the group can forget (and ``ack``); say so loudly."""
        now = self.clock()
        pipe = self.r.pipeline(transaction=True)
        for alert in note.new:
            raw = alert.model_dump_json()
            dead_letter(pipe, self.keys, raw, self.receiver.name, why, attempts, now)
            pipe.set(self.keys.sent(self.receiver.name, alert.id), DEAD, ex=self.sent_ttl)
        if note.repeat:
            pipe.hset(self.keys.group(group.key), "sent_at", repr(now))
        self.groups.forget(group, settled_fields(group, note.new), client=pipe)
        if ack is not None:
            pipe.xack(self.stream, K.DELIVER_GROUP, ack)
        pipe.execute()
        log.error(
            "GAVE UP sending %s to %s after %d failed attempt(s), %s -- in the dead-letter stream %s",
            *(_label(note), self.receiver.name, attempts, why, self.keys.dead),
        )
