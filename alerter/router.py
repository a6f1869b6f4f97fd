"""The router: alerts stream -> what fires -> route -> groups -> "group due" notices per receiver.

``while not stopping: router.step()``; tests call ``step()`` directly.

Each step reads a batch of the alerts stream through the consumer group ``alert:route`` (own
pending entries first after a start, then those idle ``claim_idle_ms`` of a dead replica, then new
ones), and for each alert, in one go:

1. records what fires (``Keys.firing``: a firing alert per fingerprint, removed when resolved);
2. routes it by its labels (``alerter.route``): a resolution is routed by the labels of the
   firing alert it ends, as Alertmanager's alerts keep their labels when they resolve;
3. adds it to the group of each route that takes it (``alerter.groups``), then acknowledges the
   entry. Adding is idempotent, so an entry read twice (a crash before the XACK) changes nothing.

Then it flushes the groups that are due: it takes each with a lease, drops events muted now
(inhibit, then silence stage), and when the receiver has something new (dedup stage), or a
repeat is due, puts one notice ``group`` on the receiver's ``notify`` stream, unless one is
already waiting there. The notice carries no content: the delivery loop reads the group when it
sends, so changes made while a receiver waits (``Retry-After``, pacing) merge into one message.
It then schedules the group's next look: when a silence muting it ends, every
``max(group_interval, RECHECK)`` while something is muted (inhibition lifts), and at the repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from alerter.dedup import muted_events, new_events, visible
from alerter.groups import Group, Groups, member_prints, settled_fields
from alerter.inhibit import Rule
from alerter.mute import Mute, load_mute
from alerter.route import Route, group_key, group_labels, match_routes
from shared import keys as K
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
    _own: bool = True
    _steps: int = 0

    def start(self) -> Router:
        """(Re)create the consumer group; read this consumer's own pending entries first. The
        per-sink groups of earlier versions (``alert:{sink}``) are removed: they would keep the
        stream from being trimmed, and the router reads every entry they held (the markers
        keep what was delivered from being sent again)."""
        ensure_group(self.r, self.keys.alerts, K.ROUTE_GROUP)
        groups: Any = self.r.xinfo_groups(self.keys.alerts)
        for group in groups:
            name = str(group["name"])
            if name.startswith("alert:") and name != K.ROUTE_GROUP:
                self.r.xgroup_destroy(self.keys.alerts, name)
                log.info("removed the consumer group %s of an earlier alerter", name)
        self._own = True
        return self

    def step(self) -> int:
        """Route a batch of alerts, then flush the groups due. Returns entries + notices."""
        self._steps += 1
        if self._steps % TRIM_EVERY == 0:
            safe_trim(self.r, self.keys.alerts, ALERTS_MAXLEN)
        routed = self._route_all(self._read())
        return routed + self.flush_due()

    # -- reading ---------------------------------------------------------------------------------

    def _read(self) -> list[Entry]:
        if self._own:
            entries = self._xread("0")
            self._own = len(entries) >= self.batch
            if entries:
                return entries
        reply: Any = self.r.xautoclaim(
            self.keys.alerts, K.ROUTE_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        claimed = [(str(i), dict(f or {})) for i, f in reply[1]]
        return claimed or self._xread(">", self._block_ms())

    def _block_ms(self) -> int:
        """Wait for new alerts no longer than until the next group is due."""
        due = Groups(self.r, self.keys).next_due()
        if due is None:
            return self.block_ms
        return max(1, min(self.block_ms, int((due - self.clock()) * 1000)))

    def _xread(self, cursor: str, block_ms: int | None = None) -> list[Entry]:
        streams: dict[Any, Any] = {self.keys.alerts: cursor}
        reply: Any = self.r.xreadgroup(
            K.ROUTE_GROUP, self.consumer, streams, count=self.batch, block=block_ms
        )
        return [(str(i), dict(f or {})) for _, entries in reply or [] for i, f in entries]

    # -- routing ---------------------------------------------------------------------------------

    def _route_all(self, entries: list[Entry]) -> int:
        for entry_id, fields in entries:
            if fields:
                self.route_entry(entry_id, fields)
            self.r.xack(self.keys.alerts, K.ROUTE_GROUP, entry_id)
        return len(entries)

    def route_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        """Record, route and group one alert (an unreadable one is dead-lettered)."""
        try:
            alert = Alert.model_validate_json(fields.get("alert") or "")
        except ValidationError as exc:
            self.dead_letter(entry_id, fields, f"unreadable alert: {exc.errors()[0]['msg']}")
            return
        labels = self._routing_labels(alert)
        replay = fields.get("replay")  # monitorx dlq replay: the receiver that gave up
        if replay is None:
            self._record_firing(alert)
        groups, now = Groups(self.r, self.keys), self.clock()
        for match in match_routes(self.route, labels):
            if replay is not None and match.receiver != replay:
                continue
            key = group_key(match, labels)
            event = alert.model_copy(update={"labels": labels})
            groups.add(key, match, group_labels(match, labels), event, now, event_only=replay is not None)

    def _routing_labels(self, alert: Alert) -> dict[str, str]:
        """A resolution keeps the labels of the alert it resolves (its severity, say), so it
        joins the same groups; anything else is routed by its own labels."""
        if alert.state != "resolved":
            return dict(alert.labels)
        fired: Any = self.r.hget(self.keys.firing, member_prints(alert)[0])
        if not fired:
            return dict(alert.labels)
        try:
            return dict(Alert.model_validate_json(fired).labels)
        except ValidationError:
            return dict(alert.labels)

    def _record_firing(self, alert: Alert) -> None:
        prints = member_prints(alert)
        if alert.state == "resolved":
            self.r.hdel(self.keys.firing, *prints)
        elif alert.keys:
            self.r.hset(self.keys.firing, mapping=dict.fromkeys(prints, alert.model_dump_json()))

    # -- flushing --------------------------------------------------------------------------------

    def flush_due(self) -> int:
        """Flush every group due now; returns the notices queued."""
        now = self.clock()
        groups = Groups(self.r, self.keys)
        keys = groups.due(now)
        if not keys:
            return 0
        mute = load_mute(self.r, self.keys, self.rules, now)
        return sum(self.flush(groups, key, mute) for key in keys if groups.claim(key, now, LEASE))

    def flush(self, groups: Groups, key: str, mute: Mute) -> bool:
        """One claimed group: drop its muted events, queue a notice when something is to be sent,
        schedule its next look. True when a notice was queued."""
        group = groups.load(key)
        if group is None:
            groups.schedule(key, None)
            return False
        told = self._told(group, visible(group, mute))
        settled = settled_fields(group, [a for i, a in group.events.items() if told.get(i, False)])
        dropped = [*muted_events(group, mute), *settled]
        if dropped and groups.forget(group, dropped):
            return False
        group = groups.load(key) if dropped else group
        if group is None:
            return False
        shown = visible(group, mute)
        repeat = _repeat_due(group, shown, mute.now)
        queue = (bool(new_events(group, shown, self._told(group, shown))) or repeat) and not group.queued
        if queue:  # the flag first, in one transaction: the notice may be handled at once
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.keys.group(key), "queued", "1")
            pipe.xadd(self.keys.notify(group.receiver), {"group": key, "repeat": "1" if repeat else "0"})
            pipe.execute()
        groups.schedule(key, _next_look(group, shown, mute))
        return queue

    def _told(self, group: Group, shown: list[Alert]) -> Mapping[str, bool]:
        """Alert id -> whether the receiver has a marker for it (sent or dead)."""
        ids = sorted({a.id for a in shown} | set(group.events))
        markers: Any = self.r.mget([self.keys.sent(group.receiver, i) for i in ids]) if ids else []
        return {i: m is not None for i, m in zip(ids, markers, strict=True)}


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
