"""The health of MonitorX itself, read from Redis, and the rules that call it unhealthy: below
every process, so ``monitorx status`` (``monitorx.status``) and the alerter's alerts about
MonitorX (``alerter.selfcheck``) judge by the same rules and the same figures.

:func:`read_health` reads the live heartbeats (processes by role), every consumer group of the
snapshots, alerts and ``notify:*`` streams (``XINFO GROUPS``, then the oldest pending and the
oldest undelivered entry of each) and the number of dead letters, in three pipelined round trips.

:func:`findings` applies the rules, worst first, each finding with a stable ``check`` and ``key``
(its identity as an alert) and one line of text:

1. ``process_missing``: a role without a fresh heartbeat (nothing moves through it);
2. ``feed_disconnected``: ingestors run but none reports a feed up, nor one down (which has its
   own ``feed_down`` alert): they are still connecting, or report no feed (heartbeat details);
3. ``group_lagging``: a consumer group whose oldest unacknowledged entry is older than
   ``lag_limit_s``, or with more than ``lag_limit_entries`` entries not delivered;
4. ``dead_letters``: alerts a receiver gave up on are waiting (``monitorx dlq``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, computed_field

from engine.alerts import make_alert
from engine.checks.base import Message
from shared.heartbeat import ROLES, Heartbeat, Role, read_heartbeats
from shared.keys import Keys
from shared.models import Alert, AlertState, Severity

LAG_LIMIT_S = 60.0
"""A consumer group whose oldest entry not yet acknowledged (pending or never delivered) is older
than this many seconds is lagging (default 60)."""
LAG_LIMIT_ENTRIES = 1000
"""A consumer group with more than this many entries not yet delivered is lagging (default 1000)."""
INSTANCE = "monitorx"
"""Instance and account of the alerts about MonitorX itself."""

Kind = Literal["process_missing", "feed_disconnected", "group_lagging", "dead_letters"]


class Frozen(BaseModel):
    """Frozen; unknown members are ignored, so the JSON (computed fields included) reads back."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Process(Frozen):
    """One process by its heartbeat; ``fresh``: its last step is within the heartbeat TTL."""

    heartbeat: Heartbeat
    fresh: bool
    age_s: float
    """Seconds since its last step."""


class GroupLag(Frozen):
    """One consumer group of one stream."""

    stream: str
    group: str
    consumers: int
    pending: int
    """Entries delivered to a consumer and not acknowledged yet."""
    lag: int | None
    """Entries not delivered to any consumer yet (Redis' ``lag``; None when Redis cannot tell,
    after entries inside the range were deleted)."""
    oldest_pending_age_s: float | None
    oldest_undelivered_age_s: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def behind_s(self) -> float:
        """Age in seconds of its oldest entry not yet acknowledged (0 when none)."""
        ages = (self.oldest_pending_age_s, self.oldest_undelivered_age_s)
        return max((a for a in ages if a is not None), default=0.0)


class Health(Frozen):
    """What :func:`findings` judges: the processes, the consumer groups, the dead letters."""

    processes: tuple[Process, ...]
    groups: tuple[GroupLag, ...]
    dead_letters: int


class Limits(Frozen):
    """What :func:`findings` calls unhealthy. Defaults next to their constants."""

    roles: tuple[Role, ...] = ROLES
    """Each of these roles needs at least one process with a fresh heartbeat (default: all four)."""
    lag_limit_s: float = LAG_LIMIT_S
    lag_limit_entries: int = LAG_LIMIT_ENTRIES


class Finding(Frozen):
    """One thing wrong: ``check`` and ``key`` identify it (as an alert), ``text`` says it."""

    check: Kind
    key: str
    severity: Severity
    text: str


# -- reading ----------------------------------------------------------------------------------


def read_health(r: redis.Redis, keys: Keys, now: float) -> Health:
    """The health at ``now`` (unix seconds); ``r`` decodes responses. Redis errors are the caller's."""
    streams = [keys.snapshots, keys.alerts, *scan(r, keys.notify("*"), "stream")]
    pipe = r.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    pipe.xlen(keys.dead)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    raise_errors(replies, missing_ok=len(streams))
    return Health(
        processes=read_processes(r, keys, now),
        groups=read_groups(r, streams, replies[: len(streams)], now),
        dead_letters=int(replies[-1]),
    )


def read_processes(r: redis.Redis, keys: Keys, now: float) -> tuple[Process, ...]:
    """The processes with a live heartbeat, by role then name (what ``monitorx health`` reads)."""
    return tuple(
        Process(heartbeat=b, fresh=b.fresh(now), age_s=max(0.0, now - b.last_step_at))
        for b in read_heartbeats(r, keys)
    )


def fresh_processes(processes: Iterable[Process], role: str, host: str | None = None) -> list[Process]:
    """The processes of ``role`` with a fresh heartbeat (on ``host`` when given), latest first."""
    found = [
        p
        for p in processes
        if p.fresh and p.heartbeat.role == role and (host is None or p.heartbeat.host == host)
    ]
    return sorted(found, key=lambda p: p.age_s)


def scan(r: redis.Redis, pattern: str, kind: str) -> list[str]:
    """The keys of type ``kind`` matching ``pattern``, sorted."""
    return sorted(str(k) for k in r.scan_iter(match=pattern, count=500, _type=kind))


def raise_errors(replies: Sequence[Any], missing_ok: int) -> None:
    """Raise the first error reply, except "no such key" in the first ``missing_ok`` replies
    (XINFO GROUPS on a stream not created yet: it has no groups)."""
    for i, reply in enumerate(replies):
        if isinstance(reply, Exception) and not (i < missing_ok and "no such key" in str(reply)):
            raise reply


def read_groups(
    r: redis.Redis, streams: Sequence[str], infos: Sequence[Any], now: float
) -> tuple[GroupLag, ...]:
    """The groups of ``streams`` from their ``XINFO GROUPS`` replies (``infos``, an error for a
    stream not there), and one more round trip: per group its oldest pending entry and its first
    undelivered one."""
    found = [
        (stream, dict(g))
        for stream, info in zip(streams, infos, strict=True)
        if not isinstance(info, Exception)
        for g in info
    ]
    pipe = r.pipeline(transaction=False)
    for stream, g in found:
        pipe.xpending(stream, g["name"])
        pipe.xrange(stream, f"({g['last-delivered-id']}", "+", count=1)
    replies: list[Any] = pipe.execute()
    return tuple(
        _group(stream, g, replies[2 * i], replies[2 * i + 1], now) for i, (stream, g) in enumerate(found)
    )


def _group(stream: str, g: dict[str, Any], pending: Any, undelivered: Any, now: float) -> GroupLag:
    lag = g.get("lag")
    return GroupLag(
        stream=stream,
        group=str(g["name"]),
        consumers=int(g["consumers"]),
        pending=int(g["pending"]),
        lag=None if lag is None else int(lag),
        oldest_pending_age_s=_entry_age(pending.get("min"), now) if g["pending"] else None,
        oldest_undelivered_age_s=_entry_age(undelivered[0][0], now) if undelivered else None,
    )


def _entry_age(entry_id: str | None, now: float) -> float | None:
    """Seconds since the entry was added (its id's milliseconds, Redis' clock), never negative."""
    if not entry_id:
        return None
    return max(0.0, now - int(str(entry_id).split("-")[0]) / 1000)


# -- rules ------------------------------------------------------------------------------------


def findings(health: Health, limits: Limits | None = None) -> list[Finding]:
    """What is wrong, worst first (see the module's docstring)."""
    limits = limits or Limits()
    found = [_missing(role) for role in limits.roles if not fresh_processes(health.processes, role)]
    found += _disconnected(health.processes)
    found += [f for g in health.groups if (f := lagging(g, limits)) is not None]
    if health.dead_letters:
        text = f"{health.dead_letters} dead letter(s) waiting (monitorx dlq list)"
        found.append(Finding(check="dead_letters", key="dead", severity="warning", text=text))
    return found


def _missing(role: str) -> Finding:
    text = f"no {role} running (no fresh heartbeat)"
    return Finding(check="process_missing", key=role, severity="critical", text=text)


def _disconnected(processes: Sequence[Process]) -> list[Finding]:
    """One finding when ingestors run and none reports a feed ``up`` or ``down`` in its heartbeat."""
    ingestors = fresh_processes(processes, "ingestor")
    states = {f"{name}: {feed.get('state', '?')}" for p in ingestors for name, feed in feeds_of(p).items()}
    if not ingestors or any(s.endswith((": up", ": down")) for s in states):
        return []  # connected, or a feed down, which says more on its own (its record, its alert)
    text = f"no ingestor connected to a feed ({', '.join(sorted(states)) or 'no feed reported'})"
    return [Finding(check="feed_disconnected", key="ingestor", severity="critical", text=text)]


def feeds_of(process: Process) -> dict[str, dict[str, Any]]:
    """The ``feeds`` detail of an ingestor's heartbeat: feed -> ``state``, ``last_frame_at``."""
    feeds = process.heartbeat.details.get("feeds")
    return {str(k): v for k, v in feeds.items() if isinstance(v, dict)} if isinstance(feeds, dict) else {}


def lagging(g: GroupLag, limits: Limits) -> Finding | None:
    """The finding of a group behind by more than the limits, else None."""
    if g.behind_s > limits.lag_limit_s:
        text = f"group {g.group} on {g.stream} is {g.behind_s:.0f} s behind (limit {limits.lag_limit_s:g} s)"
    elif g.lag is not None and g.lag > limits.lag_limit_entries:
        limit = limits.lag_limit_entries
        text = f"group {g.group} on {g.stream} has {g.lag} entries undelivered (limit {limit})"
    else:
        return None
    return Finding(check="group_lagging", key=f"{g.stream}/{g.group}", severity="warning", text=text)


# -- alerts -----------------------------------------------------------------------------------


def health_alert(finding: Finding, state: AlertState, since: float, now: float) -> Alert:
    """The alert of a finding (firing) or of its end (resolved, with the finding that fired):
    instance and account ``monitorx``, the finding's key as the alert's key, its id from
    (check, key, state, since), so every alerter replica writing it writes the same alert."""
    firing = state == "firing"
    title = f"MonitorX: {finding.text}" if firing else f"Resolved: MonitorX {finding.check} ({finding.key})"
    text = finding.text if firing else f"Was: {finding.text}."
    return make_alert(
        instance=INSTANCE,
        check=finding.check,
        account=INSTANCE,
        state=state,
        message=Message(title, text, finding.severity if firing else "info"),
        observed_at=now,
        emitted_at=now,
        keys=(finding.key,),
        event=(INSTANCE, finding.check, finding.key, state, repr(since)),
    )
