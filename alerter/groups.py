"""Notification groups, kept in Redis so that restarts and replicas share them.

A group is the alerts one route sends to one receiver under the same values of its ``group_by``
labels (``alerter.route.group_key``). Its hash ``Keys.group(key)`` holds:

* ``m:{fingerprint}``: the latest event (Alert JSON) of each alert of the group: what a message
  of the group shows;
* ``e:{alert id}``: every event not yet sent to the receiver (a cooldown repeat and a resolution
  are events even when a later one replaced them in ``m:``): what is new to the receiver;
* ``receiver``, ``labels`` (the group labels), ``route`` (group_by and timers of the route, as the
  configuration had them at the last event), ``created_at``, ``sent_at`` (last notification sent),
  ``queued`` (a notice is waiting on the receiver's ``notify`` stream).

The sorted set ``Keys.groups`` says when each group is next due: ``created_at + group_wait`` for a
new group, ``sent_at + group_interval`` (or now, if later) for a change, ``sent_at +
repeat_interval`` for a repeat. A replica takes a due group with a lease (its score moves
``lease`` seconds on, atomically), so two replicas never flush one group at once and a replica
that dies holding one only delays it by the lease.

A group whose every alert is resolved (or was a one-off event such as a report) and sent is
deleted with its message reference: the next incident of the same labels starts a new message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from alerter.route import RouteMatch
from shared.config import GROUP_BY_ALL
from shared.keys import Keys
from shared.models import Alert, fingerprint
from shared.redisio import run_script

MEMBER = "m:"
EVENT = "e:"

# KEYS: group hash, groups zset. ARGV: group key, now, receiver, labels, route JSON, group_wait,
# group_interval, then fingerprint, alert JSON pairs. A group is due group_wait after it was
# created until its first notification; after that a change makes it due at the later of now and
# sent_at + group_interval; a group due earlier already stays so.
_ADD = """
local g, z, gk, now = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local changed = false
for i = 9, #ARGV, 2 do
  local alert = cjson.decode(ARGV[i + 1])
  if ARGV[8] == '1' then  -- a replay: an event to send, no member
    if redis.call('HSETNX', g, 'e:' .. alert['id'], ARGV[i + 1]) == 1 then changed = true end
  elseif redis.call('HGET', g, 'm:' .. ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', g, 'm:' .. ARGV[i], ARGV[i + 1], 'e:' .. alert['id'], ARGV[i + 1])
    changed = true
  end
end
if not changed then return 0 end
redis.call('HSET', g, 'receiver', ARGV[3], 'labels', ARGV[4], 'route', ARGV[5])
if redis.call('HSETNX', g, 'created_at', ARGV[2]) == 1 then
  redis.call('ZADD', z, now + tonumber(ARGV[6]), gk)
  return 1
end
local sent = redis.call('HGET', g, 'sent_at')
local at = tonumber(redis.call('HGET', g, 'created_at')) + tonumber(ARGV[6])
if sent then at = math.max(now, tonumber(sent) + tonumber(ARGV[7])) end
redis.call('ZADD', z, 'LT', at, gk)
return 1
"""

# KEYS: groups zset. ARGV: now, lease, count, the group hash key prefix. Takes up to count due
# groups (their due time moves lease seconds on) and returns key, HGETALL of its hash, ... (the
# hashes are named from the prefix: one round trip for the claim and the reads).
_CLAIM = """
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), key)
  out[#out + 1] = key
  out[#out + 1] = redis.call('HGETALL', ARGV[4] .. key)
end
return out
"""

# KEYS: group hash, groups zset, ref. ARGV: group key, then field, value pairs: each field is
# deleted if it still holds that value. Then a group with no member left is deleted.
_FORGET = """
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'm:' or string.sub(f, 1, 2) == 'e:' then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Group:
    """One group as read from Redis."""

    key: str
    receiver: str
    labels: dict[str, str]
    route: RouteMatch
    created_at: float
    sent_at: float | None
    queued: bool
    members: dict[str, Alert] = field(default_factory=dict)
    """Fingerprint -> latest event."""
    events: dict[str, Alert] = field(default_factory=dict)
    """Alert id -> an event not sent yet, in the order they came."""
    raw: dict[str, str] = field(default_factory=dict)
    """The hash as read (for compare-and-delete)."""

    def without(self, fields: Iterable[str]) -> Group:
        """This group with ``fields`` (``m:...``, ``e:...``) forgotten."""
        gone = set(fields)
        members = {fp: a for fp, a in self.members.items() if MEMBER + fp not in gone}
        events = {i: a for i, a in self.events.items() if EVENT + i not in gone}
        raw = {k: v for k, v in self.raw.items() if k not in gone}
        return replace(self, members=members, events=events, raw=raw)

    @property
    def empty(self) -> bool:
        """No member nor event left: the group is deleted."""
        return not self.members and not self.events

    @property
    def each_alert_alone(self) -> bool:
        """``group_by: [...]``: every event is its own notification (no grouping at all)."""
        return self.route.group_by == (GROUP_BY_ALL,)


def member_prints(alert: Alert) -> list[str]:
    """The fingerprints an alert stands for: one per key (an alert firing for two keys is two
    members), or one for an alert without keys."""
    return [fingerprint(alert.instance, alert.account, k) for k in alert.keys] or [alert.fingerprint]


def _route_json(match: RouteMatch) -> str:
    return json.dumps(
        {
            "receiver": match.receiver,
            "group_by": list(match.group_by),
            "group_wait": match.group_wait,
            "group_interval": match.group_interval,
            "repeat_interval": match.repeat_interval,
            "route_id": match.route_id,
        }
    )


def _route(text: str) -> RouteMatch:
    data = json.loads(text)
    return RouteMatch(**{**data, "group_by": tuple(data["group_by"])})


@dataclass
class Groups:
    """The groups of one Redis (``decode_responses=True`` client). Every write can be queued on a
    pipeline (``client``) so a stage makes one round trip for many groups."""

    r: redis.Redis
    keys: Keys
    _add: Any = field(init=False, repr=False)
    _claim: Any = field(init=False, repr=False)
    _forget: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._add = self.r.register_script(_ADD)
        self._claim = self.r.register_script(_CLAIM)
        self._forget = self.r.register_script(_FORGET)

    def add(
        self,
        key: str,
        match: RouteMatch,
        labels: Mapping[str, str],
        alert: Alert,
        now: float,
        event_only: bool = False,
        client: Any = None,
    ) -> Any:
        """Make ``alert`` the latest event of its members in group ``key`` and schedule the group
        (a repeated stream entry changes nothing: the script answers 0). ``event_only`` (a
        replayed dead letter): an event to send that changes no member."""
        raw = alert.model_dump_json()
        pairs = [x for fp in member_prints(alert) for x in (fp, raw)]
        argv = [key, now, match.receiver, json.dumps(dict(labels)), _route_json(match)]
        argv += [match.group_wait, match.group_interval, "1" if event_only else "0", *pairs]
        return run_script(self._add, [self.keys.group(key), self.keys.groups], argv, client)

    def next_due(self) -> float | None:
        """When the earliest group is due, None when none is scheduled."""
        return due_of(self.read_next_due(self.r))

    def read_next_due(self, client: Any) -> Any:
        """Read the earliest group's due time on ``client`` (queued, on a pipeline): give the
        reply to :func:`due_of`."""
        return client.zrange(self.keys.groups, 0, 0, withscores=True)

    def claim_due(self, now: float, lease: float, count: int = 100, client: Any = None) -> Any:
        """Take up to ``count`` groups due at ``now`` for ``lease`` seconds each (their due time
        moves on, so no other replica takes them meanwhile). Its reply, given to
        :func:`claimed`, is the groups read in the same round trip."""
        args = [repr(now), lease, count, self.keys.group("")]
        return run_script(self._claim, [self.keys.groups], args, client)

    def schedule(self, key: str, at: float | None, client: Any = None) -> None:
        """Next due at ``at``; None: not scheduled (a new event schedules it again)."""
        target = client if client is not None else self.r
        if at is None:
            target.zrem(self.keys.groups, key)
        else:
            target.zadd(self.keys.groups, {key: at})

    def load(self, key: str) -> Group | None:
        """The group, or None when it does not exist (any more)."""
        return parse_group(key, self.r.hgetall(self.keys.group(key)))  # type: ignore[arg-type]

    def forget(self, group: Group, fields: Iterable[str], client: Any = None) -> Any:
        """Delete ``fields`` of the group that still hold what ``group`` read (a newer event that
        replaced one stays); then delete the group (and its message ref) if no member nor event
        is left: the script answers 1 then."""
        pairs = [x for f in fields if f in group.raw for x in (f, group.raw[f])]
        keys = [self.keys.group(group.key), self.keys.groups, self.keys.ref(group.key)]
        return run_script(self._forget, keys, [group.key, *pairs], client)


def due_of(reply: Any) -> float | None:
    """The due time in a :meth:`Groups.read_next_due` reply; None when no group is scheduled."""
    return float(reply[0][1]) if reply else None


def claimed(reply: Any) -> list[tuple[str, Group | None]]:
    """The groups of a :meth:`Groups.claim_due` reply: (key, the group or None if gone)."""
    items = list(reply or [])
    return [
        (str(key), parse_group(str(key), dict(zip(flat[::2], flat[1::2], strict=True))))
        for key, flat in zip(items[::2], items[1::2], strict=True)
    ]


def parse_group(key: str, raw: Mapping[str, str]) -> Group | None:
    """A group from its hash as read; None when it does not exist (any more)."""
    if "route" not in raw:
        return None
    sent = raw.get("sent_at")
    return Group(
        key=key,
        receiver=raw["receiver"],
        labels=json.loads(raw["labels"]),
        route=_route(raw["route"]),
        created_at=float(raw["created_at"]),
        sent_at=float(sent) if sent else None,
        queued=raw.get("queued") == "1",
        members=_alerts(raw, MEMBER),
        events=_alerts(raw, EVENT),
        raw=dict(raw),
    )


def read_alert(text: str | None) -> Alert | None:
    """An Alert from its JSON as stored; None for nothing or something unreadable (skipped)."""
    try:
        return Alert.model_validate_json(text) if text else None
    except ValueError:
        return None


def _alerts(raw: Mapping[str, str], prefix: str) -> dict[str, Alert]:
    """The alerts of the fields of ``raw`` named ``prefix`` + something, by that something."""
    found = {name[len(prefix) :]: read_alert(value) for name, value in raw.items() if name.startswith(prefix)}
    return {name: alert for name, alert in found.items() if alert is not None}


def settled_fields(group: Group, sent: Iterable[Alert]) -> list[str]:
    """The fields to forget once ``sent`` were notified: their events, and the members whose
    latest event was sent and ends them (resolved, or a one-off event without keys)."""
    ids = {a.id for a in sent}
    fields = [EVENT + i for i in ids]
    for fp, alert in group.members.items():
        if alert.id in ids and (alert.state == "resolved" or not alert.keys):
            fields.append(MEMBER + fp)
    return fields
