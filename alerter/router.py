"""The router: alerts stream -> what fires -> route -> groups -> "group due" notices per receiver.

``while not stopping: router.step()``; tests call ``step()`` directly.

Each step reads a batch of the alerts stream through the consumer group ``alert:route`` (own
pending entries first after a start, then those idle ``claim_idle_ms`` of a dead replica, then new
ones), and for each alert, in one go:

1. records what fires (``Keys.firing``: a firing alert per fingerprint, removed when resolved,
   and its index of the alerts that can inhibit, ``Keys.inhibitors``: ``alerter.mute``);
2. routes it by its labels (``alerter.route``): a resolution is routed by the labels of the
   firing alert it ends, as Alertmanager's alerts keep their labels when they resolve;
3. adds it to the group of each route that takes it (``alerter.groups``), then acknowledges the
   entry. Adding is idempotent, so an entry read twice (a crash before the XACK) changes nothing.

A canary entry (field ``canary``: ``shared.canary``) is never routed: no ``firing``, no group, no
receiver. Its arrival is recorded in ``Keys.canary`` (the newest of a batch) in the same round
trip as its acknowledgement, then handed to ``on_canary`` (the dead-man's switch pinger, which
pings from its own thread: routing never waits for it).

In the same round trip (one pipeline, which Redis applies in order) it takes the groups due now,
each with a lease, and reads when the earliest group is due next: the longest the next step waits
for new alerts. Then it flushes the groups it took: drops events muted now
(inhibit, then silence stage), and when the receiver has something new (dedup stage), or a
repeat is due, puts one notice ``group`` on the receiver's ``notify`` stream, unless one is
already waiting there. The notice carries no content: the delivery loop reads the group when it
sends, so changes made while a receiver waits (``Retry-After``, pacing) merge into one message.
It then schedules the group's next look: when a silence muting it ends, every
``max(group_interval, RECHECK)`` while something is muted (inhibition lifts), and at the repeat.

Round trips per step: the read; one to route, take the groups due and read the next due time; when
a group was taken, one for what mutes it and what its receiver has been told, and one for the
flush (with the next due time read again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError

from alerter.dedup import muted_events, new_events, visible
from alerter.groups import Group, Groups, claimed, due_of, member_prints, read_alert, settled_fields
from alerter.inhibit import Rule
from alerter.mute import Mute, index_inhibitor, mute_from, read_mute, rebuild_inhibitors
from alerter.route import Labels, Route, group_key, group_labels, match_routes
from shared import keys as K
from shared.canary import CANARY_FIELD, CanaryTrip
from shared.keys import Keys
from shared.models import Alert
from shared.redisio import ensure_group, safe_trim

log = logging.getLogger(__name__)

RECHECK = 10.0
"""Seconds between two looks at a group with muted alerts (at least; group_interval if longer):
how soon an alert is notified after the alert inhibiting it resolves."""
LEASE = 30.0
"""Seconds a replica holds a group it flushes; another takes it over after that."""
ALERTS_MAXLEN = 10_000
"""Routed alerts kept on the stream for inspection (unrouted ones are never trimmed)."""
TRIM_EVERY = 100
"""Steps between two trims of the alerts stream."""

Entry = tuple[str, dict[str, str]]


@dataclass
class Router:
    r: redis.Redis
    keys: Keys
    route: Route
    rules: tuple[Rule, ...]
    consumer: str
    dead_letter: Callable[[str, dict[str, str], str], None]
    """Called with an unreadable entry's id, fields and the reason (the delivery side owns the
    dead-letter stream)."""
    batch: int = 100
    block_ms: int = 1000
    claim_idle_ms: int = 5_000
    """Entries idle this long in a dead replica are taken over (MONITORX_RETRY_IDLE_MS)."""
    clock: Callable[[], float] = time.time
    on_canary: Callable[[CanaryTrip], None] = field(default=lambda trip: None)
    """Called with each canary arrival once recorded (``alerter.deadman.Pinger.arrived``: must
    not block)."""
    behind: bool = False
    """The last step read a full batch of the alerts stream (more is waiting)."""
    _own: bool = True
    _steps: int = 0
    _reclaim_at: float = 0.0
    """time.monotonic() before which no XAUTOCLAIM is tried."""
    _next_due: float | None = 0.0
    """When the earliest group is due, as read at the end of the last step (None: no group)."""
    groups: Groups = field(init=False)

    def __post_init__(self) -> None:
        self.groups = Groups(self.r, self.keys)

    def start(self) -> Router:
        """(Re)create the consumer group; read this consumer's own pending entries first. The
        per-sink groups of earlier versions (``alert:{sink}``) are removed: they would keep the
        stream from being trimmed, and the router reads every entry they held (the markers
        keep what was delivered from being sent again)."""
        ensure_group(self.r, self.keys.alerts, K.ROUTE_GROUP)
        rebuild_inhibitors(self.r, self.keys, self.rules)  # for this router's rules
        self._reclaim_at, self._next_due = 0.0, 0.0
        groups: Any = self.r.xinfo_groups(self.keys.alerts)
        for group in groups:
            name = str(group["name"])
            if name.startswith("alert:") and name != K.ROUTE_GROUP:
                self.r.xgroup_destroy(self.keys.alerts, name)
                log.info("removed the consumer group %s of an earlier alerter", name)
        self._own = True
        return self

    def step(self) -> int:
        """Route a batch of alerts and take the groups due, then flush them. Returns entries +
        notices."""
        self._steps += 1
        if self._steps % TRIM_EVERY == 0:
            safe_trim(self.r, self.keys.alerts, ALERTS_MAXLEN)
        entries = self._read()
        self.behind = len(entries) >= self.batch
        pipe, now = self.r.pipeline(transaction=False), self.clock()
        arrived = self._route_all(pipe, entries, now)
        self.groups.claim_due(now, LEASE, client=pipe)
        self.groups.read_next_due(pipe)
        *_, taken, due = pipe.execute()
        self._next_due = due_of(due)
        for trip in arrived:
            self.on_canary(trip)
        return len(entries) + self.flush_due(claimed(taken), now)

    # -- reading ---------------------------------------------------------------------------------

    def _read(self) -> list[Entry]:
        if self._own:
            entries = self._xread("0")
            self._own = len(entries) >= self.batch
            if entries:
                return entries
        return self._reclaim() or self._xread(">", self._block_ms())

    def _reclaim(self) -> list[Entry]:
        """Entries a dead replica left idle ``claim_idle_ms``; looked for at most twice per that
        time (one round trip saved on most steps)."""
        if time.monotonic() < self._reclaim_at:
            return []
        self._reclaim_at = time.monotonic() + self.claim_idle_ms / 2000
        reply: Any = self.r.xautoclaim(
            self.keys.alerts, K.ROUTE_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        return [(str(i), dict(f or {})) for i, f in reply[1]]

    def _block_ms(self) -> int:
        """Wait for new alerts no longer than until the next group is due (as last read)."""
        if self._next_due is None:
            return self.block_ms
        return max(1, min(self.block_ms, int((self._next_due - self.clock()) * 1000)))

    def _xread(self, cursor: str, block_ms: int | None = None) -> list[Entry]:
        streams: dict[Any, Any] = {self.keys.alerts: cursor}
        reply: Any = self.r.xreadgroup(
            K.ROUTE_GROUP, self.consumer, streams, count=self.batch, block=block_ms
        )
        return [(str(i), dict(f or {})) for _, entries in reply or [] for i, f in entries]

    # -- routing ---------------------------------------------------------------------------------

    def _route_all(self, pipe: Any, entries: list[Entry], now: float) -> list[CanaryTrip]:
        """Queue on ``pipe`` the record, routing, grouping and acknowledgement of a batch of
        alerts (when it holds resolutions, the labels of the alerts they end are read first, in a
        round trip of their own). Returns the canaries among them, arrived ``now``."""
        alerts = [(entry_id, fields, self._parse(entry_id, fields)) for entry_id, fields in entries]
        ended = self._fired_labels([a for _, _, a in alerts if a is not None and a.state == "resolved"])
        arrived = self._canaries(pipe, entries, now)
        for entry_id, fields, alert in alerts:
            if alert is not None:
                self._route(pipe, alert, fields.get("replay"), ended, now)
            pipe.xack(self.keys.alerts, K.ROUTE_GROUP, entry_id)
        return arrived

    def _canaries(self, pipe: Any, entries: list[Entry], now: float) -> list[CanaryTrip]:
        """The canaries among ``entries``, arrived ``now``; the newest sent is recorded in
        ``Keys.canary`` on ``pipe``. An unreadable one is logged and dropped (never dead-lettered:
        no person reads the canary)."""
        trips = []
        for entry_id, fields in entries:
            trip = CanaryTrip.from_alert_entry(fields)
            if trip is not None:
                trips.append(trip.model_copy(update={"arrived_at": now}))
            elif CANARY_FIELD in fields:
                log.warning("dropped the unreadable canary entry %s", entry_id)
        if trips:
            pipe.hset(self.keys.canary, mapping=max(trips, key=lambda t: t.sent_at).hash_fields())
        return trips

    def _parse(self, entry_id: str, fields: dict[str, str]) -> Alert | None:
        """The entry's alert; None for a deleted entry, a canary (``_canaries``), or an
        unreadable one (dead-lettered)."""
        if not fields or CANARY_FIELD in fields:
            return None
        try:
            return Alert.model_validate_json(fields.get("alert") or "")
        except ValidationError as exc:
            self.dead_letter(entry_id, fields, f"unreadable alert: {exc.errors()[0]['msg']}")
            return None

    def _route(
        self, pipe: Any, alert: Alert, replay: str | None, ended: dict[str, Labels], now: float
    ) -> None:
        """Queue on ``pipe`` what one alert changes: what fires (not for a replay), and each
        group of a route that takes it (a replay: only the receiver that gave up, as an event)."""
        prints = member_prints(alert)
        labels = dict(ended.get(prints[0], alert.labels)) if alert.state == "resolved" else dict(alert.labels)
        if replay is None:
            self._record_firing(pipe, alert, prints, ended)
        event = alert.model_copy(update={"labels": labels})
        for match in match_routes(self.route, labels):
            if replay is None or match.receiver == replay:
                key, grouped = group_key(match, labels), group_labels(match, labels)
                self.groups.add(key, match, grouped, event, now, event_only=replay is not None, client=pipe)

    def _fired_labels(self, resolved: list[Alert]) -> dict[str, Labels]:
        """Fingerprint -> labels of the firing alert each resolution ends (as recorded): a
        resolution keeps them (its severity, say), so it joins the same groups."""
        prints = list(dict.fromkeys(member_prints(a)[0] for a in resolved))
        values: Any = self.r.hmget(self.keys.firing, prints) if prints else []
        found: dict[str, Labels] = {}
        for fp, alert in zip(prints, map(read_alert, values), strict=True):
            if alert is not None:
                found[fp] = alert.labels
        return found

    def _record_firing(self, pipe: Any, alert: Alert, prints: list[str], ended: dict[str, Labels]) -> None:
        """What fires now: a firing alert per fingerprint, removed when resolved. ``ended``
        learns the labels of alerts firing in this batch, for resolutions later in it."""
        if alert.state == "resolved":
            pipe.hdel(self.keys.firing, *prints)
            index_inhibitor(pipe, self.keys, self.rules, None, prints)
        elif alert.keys:
            pipe.hset(self.keys.firing, mapping=dict.fromkeys(prints, alert.model_dump_json()))
            index_inhibitor(pipe, self.keys, self.rules, alert.labels, prints)
            ended.update(dict.fromkeys(prints, alert.labels))

    # -- flushing --------------------------------------------------------------------------------

    def flush_due(self, found: list[tuple[str, Group | None]], now: float) -> int:
        """Flush the groups taken (``found``: :func:`alerter.groups.claimed`); returns the
        notices queued. Two round trips when a group was taken, none otherwise."""
        if not found:
            return 0
        groups = [g for _, g in found if g is not None]
        ids = [
            (g.receiver, i)
            for g in groups
            for i in sorted({a.id for a in g.members.values()} | set(g.events))
        ]
        pipe = self.r.pipeline(transaction=False)
        read_mute(pipe, self.keys, self.rules)
        pipe.mget([self.keys.sent(receiver, i) for receiver, i in ids] or [self.keys.sent("", "")])
        replies = pipe.execute()
        mute = mute_from(replies[:-1], self.rules, now)
        told = {pair for pair, marker in zip(ids, replies[-1], strict=False) if marker is not None}
        pipe = self.r.pipeline(transaction=False)
        queued = sum(self.flush(pipe, key, group, mute, told) for key, group in found)
        self.groups.read_next_due(pipe)
        self._next_due = due_of(pipe.execute()[-1])
        return queued

    def flush(self, pipe: Any, key: str, group: Group | None, mute: Mute, told: set[tuple[str, str]]) -> bool:
        """Queue on ``pipe`` the flush of one claimed group: forget its muted events and those
        the receiver has been told (a repeated entry), a notice when something is to be sent,
        its next look. True when a notice was queued."""
        if group is None:
            self.groups.schedule(key, None, client=pipe)
            return False
        knows = {
            i: (group.receiver, i) in told for i in {a.id for a in group.members.values()} | set(group.events)
        }
        settled = settled_fields(group, [a for i, a in group.events.items() if knows[i]])
        dropped = [*muted_events(group, mute), *settled]
        if dropped:
            self.groups.forget(group, dropped, client=pipe)
            group = group.without(dropped)
            if group.empty:
                return False
        shown = visible(group, mute)
        repeat = _repeat_due(group, shown, mute.now)
        queue = (bool(new_events(group, shown, knows)) or repeat) and not group.queued
        if queue:  # the flag first: the notice may be handled at once
            pipe.hset(self.keys.group(key), "queued", "1")
            pipe.xadd(self.keys.notify(group.receiver), {"group": key, "repeat": "1" if repeat else "0"})
        self.groups.schedule(key, _next_look(group, shown, mute), client=pipe)
        return queue


def _repeat_due(group: Group, shown: list[Alert], now: float) -> bool:
    every = group.route.repeat_interval
    firing = any(a.state == "firing" for a in shown)
    return bool(every > 0 and firing and group.sent_at is not None and now >= group.sent_at + every)


def _next_look(group: Group, shown: list[Alert], mute: Mute) -> float | None:
    """When to flush the group again with no new event: a silence's end, a recheck while some
    alert is muted, the next repeat; None when nothing is waiting."""
    looks = []
    muted = [a for a in group.members.values() if mute.reason(a) is not None]
    if muted:
        looks.append(mute.now + max(group.route.group_interval, RECHECK))
        ends = mute.silence_ends(muted)
        if ends is not None:
            looks.append(ends)
    every = group.route.repeat_interval
    if every > 0 and any(a.state == "firing" for a in shown):
        sent = group.sent_at
        looks.append(sent + every if sent is not None and sent + every > mute.now else mute.now + every)
    return min(looks, default=None)
