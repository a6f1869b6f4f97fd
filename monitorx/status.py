"""The whole running system in one typed :class:`Status`, read from Redis, and what is wrong with it.

:func:`read_status` reads, in a few pipelined round trips: the live heartbeats (processes by
role), every consumer group of the snapshots, alerts and ``notify:*`` streams (``XINFO GROUPS``,
the oldest pending and oldest undelivered entry), the RQ queue ``monitorx`` (waiting, started and
failed jobs, read without rq's registry cleanup, which would run failure callbacks), the data age
of every account (``Keys.seen``), the alerts firing now and which of them are silenced or
inhibited (decided by the alerter's own stages, :mod:`alerter.mute`), the dead letters, the
quarantined frames, the feeds (``Keys.feed``) and the counters hash. Every view (``monitorx
status``, ``monitorx health``, ``monitorx alerts``) is built on it and reads Redis no other way.

:func:`problems` lists what is unhealthy, worst first, by the rules of :class:`Rules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, computed_field

from alerter.inhibit import Rule, compile_rules
from alerter.mute import Mute, mute_from, parse_alerts, read_mute
from engine.jobs import make_queue
from ingestor.health import FeedStatus
from shared import keys as K
from shared.config import Config
from shared.heartbeat import ROLES, Heartbeat, Role, read_heartbeats
from shared.keys import Keys
from shared.models import Alert

LAG_LIMIT_S = 60.0
"""A consumer group whose oldest entry not yet acknowledged (pending or never delivered) is older
than this many seconds is lagging (default 60)."""
LAG_LIMIT_ENTRIES = 1000
"""A consumer group with more than this many entries not yet delivered is lagging (default 1000)."""
STALE_SHOWN = 10
"""Stale accounts named in one problem line; the others are counted."""

Mark = Literal["firing", "silenced", "inhibited"]


class _Frozen(BaseModel):
    """Frozen; unknown members are ignored, so the JSON (computed fields included) reads back."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Process(_Frozen):
    """One process by its heartbeat; ``fresh``: its last step is within the heartbeat TTL."""

    heartbeat: Heartbeat
    fresh: bool
    age_s: float
    """Seconds since its last step."""


class GroupLag(_Frozen):
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


class QueueStatus(_Frozen):
    """The RQ queue of check jobs."""

    name: str
    depth: int
    """Jobs waiting."""
    started: int
    """Jobs being run (entries of the started registry)."""
    failed: int
    """Failed jobs kept for inspection (``engine.jobs.FAILURE_TTL``)."""


class AccountAge(_Frozen):
    """An account's newest data: ``observed_at`` of its newest snapshot."""

    account: str
    observed_at: float
    age_s: float
    stale: bool
    """Older than the configuration's ``stale_after``."""


class Feed(_Frozen):
    """The ingestor's view of one feed (``Keys.feed``); ``state`` is ``unknown`` when unreadable."""

    name: str
    state: Literal["up", "down", "unknown"]
    reason: str = ""
    since: float | None = None
    updated_at: float | None = None


class FiringAlert(_Frozen):
    """An alert firing now and whether the alerter's stages mute it."""

    alert: Alert
    muted: str | None
    """``inhibited by ...``, ``silenced by ID (reason)`` (alerter.mute), or None: notified."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mark(self) -> Mark:
        """``firing`` (notified), ``silenced`` or ``inhibited``."""
        if self.muted is None:
            return "firing"
        return "inhibited" if self.muted.startswith("inhibited") else "silenced"


class Status(_Frozen):
    """Everything ``monitorx status`` knows, at ``at`` (unix seconds)."""

    at: float
    processes: tuple[Process, ...]
    groups: tuple[GroupLag, ...]
    queue: QueueStatus
    stale_after: float
    accounts: tuple[AccountAge, ...]
    """Oldest data first."""
    alerts: tuple[FiringAlert, ...]
    firing: int
    """Alerts firing now (muted ones included)."""
    silenced: int
    inhibited: int
    dead_letters: int
    quarantined: int
    feeds: tuple[Feed, ...]
    counters: dict[str, int]

    def fresh(self, role: str, host: str | None = None) -> list[Process]:
        """The processes of ``role`` with a fresh heartbeat (on ``host`` when given)."""
        return fresh_processes(self.processes, role, host)


def fresh_processes(processes: Iterable[Process], role: str, host: str | None = None) -> list[Process]:
    """The processes of ``role`` with a fresh heartbeat (on ``host`` when given), latest first."""
    found = [
        p
        for p in processes
        if p.fresh and p.heartbeat.role == role and (host is None or p.heartbeat.host == host)
    ]
    return sorted(found, key=lambda p: p.age_s)


# -- reading ----------------------------------------------------------------------------------


def read_status(r: redis.Redis, keys: Keys, config: Config, now: float) -> Status:
    """The status at ``now`` (unix seconds); ``r`` decodes responses. Redis errors are the
    caller's. The inhibit rules and ``stale_after`` come from ``config``."""
    rules = compile_rules(config.inhibit_rules)
    streams = [keys.snapshots, keys.alerts, *_scan(r, keys.notify("*"), "stream")]
    feed_keys = _scan(r, keys.feed("*"), "hash")
    queue = make_queue(r)  # key names only: counts are read below, never with rq's cleanup
    pipe = r.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    for name in (keys.dead, keys.quarantine):
        pipe.xlen(name)
    pipe.zrange(keys.seen, 0, -1, withscores=True)
    pipe.hgetall(keys.counters)
    pipe.llen(queue.key)
    pipe.zcard(queue.started_job_registry.key)
    pipe.zcard(queue.failed_job_registry.key)
    for key in feed_keys:
        pipe.hgetall(key)
    pipe.hgetall(keys.firing)
    read_mute(pipe, keys, rules)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    _raise_errors(replies, missing_ok=len(streams))
    infos, rest = replies[: len(streams)], replies[len(streams) :]
    dead, quarantined, seen, counters, depth, started, failed = rest[:7]
    feeds, rest = rest[7 : 7 + len(feed_keys)], rest[7 + len(feed_keys) :]
    alerts = firing_from(rest[0], mute_from(rest[1:], rules, now))
    return Status(
        at=now,
        processes=read_processes(r, keys, now),
        groups=_groups(r, streams, infos, now),
        queue=QueueStatus(name=K.QUEUE_NAME, depth=depth, started=started, failed=failed),
        stale_after=config.stale_after,
        accounts=_accounts(seen, now, config.stale_after),
        alerts=tuple(alerts),
        firing=len(alerts),
        silenced=sum(a.mark == "silenced" for a in alerts),
        inhibited=sum(a.mark == "inhibited" for a in alerts),
        dead_letters=dead,
        quarantined=quarantined,
        feeds=tuple(
            _feed(key.removeprefix(keys.feed("")), f) for key, f in zip(feed_keys, feeds, strict=True)
        ),
        counters={str(k): int(v) for k, v in counters.items() if str(v).lstrip("-").isdigit()},
    )


def firing_now(r: redis.Redis, keys: Keys, rules: tuple[Rule, ...], now: float) -> list[FiringAlert]:
    """The alerts firing now with their mute reason, in one round trip (see :func:`firing_from`)."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.firing)
    read_mute(pipe, keys, rules)
    replies = pipe.execute()
    return firing_from(replies[0], mute_from(replies[1:], rules, now))


def firing_from(firing: Mapping[str, str], mute: Mute) -> list[FiringAlert]:
    """The alerts of a ``Keys.firing`` reply, each once (by id), by account, check and id, with
    ``mute.reason``."""
    unique = {a.id: a for a in parse_alerts(firing.values())}
    ordered = sorted(unique.values(), key=lambda a: (a.account, a.check, a.id))
    return [FiringAlert(alert=a, muted=mute.reason(a)) for a in ordered]


def read_processes(r: redis.Redis, keys: Keys, now: float) -> tuple[Process, ...]:
    """The processes with a live heartbeat, by role then name (what ``monitorx health`` reads)."""
    return tuple(_process(b, now) for b in read_heartbeats(r, keys))


def _scan(r: redis.Redis, pattern: str, kind: str) -> list[str]:
    return sorted(str(k) for k in r.scan_iter(match=pattern, count=500, _type=kind))


def _raise_errors(replies: Sequence[Any], missing_ok: int) -> None:
    """Raise the first error reply, except "no such key" in the first ``missing_ok`` replies
    (XINFO GROUPS on a stream not created yet: it has no groups)."""
    for i, reply in enumerate(replies):
        if isinstance(reply, Exception) and not (i < missing_ok and "no such key" in str(reply)):
            raise reply


def _process(beat: Heartbeat, now: float) -> Process:
    return Process(heartbeat=beat, fresh=beat.fresh(now), age_s=max(0.0, now - beat.last_step_at))


def _entry_age(entry_id: str | None, now: float) -> float | None:
    """Seconds since the entry was added (its id's milliseconds, Redis' clock), never negative."""
    if not entry_id:
        return None
    return max(0.0, now - int(str(entry_id).split("-")[0]) / 1000)


def _groups(r: redis.Redis, streams: Sequence[str], infos: Sequence[Any], now: float) -> tuple[GroupLag, ...]:
    """One more round trip: per group its oldest pending entry and its first undelivered one."""
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
    groups = []
    for i, (stream, g) in enumerate(found):
        pending, undelivered = replies[2 * i], replies[2 * i + 1]
        lag = g.get("lag")
        groups.append(
            GroupLag(
                stream=stream,
                group=str(g["name"]),
                consumers=int(g["consumers"]),
                pending=int(g["pending"]),
                lag=None if lag is None else int(lag),
                oldest_pending_age_s=_entry_age(pending.get("min"), now) if g["pending"] else None,
                oldest_undelivered_age_s=_entry_age(undelivered[0][0], now) if undelivered else None,
            )
        )
    return tuple(groups)


def _accounts(seen: Iterable[tuple[str, float]], now: float, stale_after: float) -> tuple[AccountAge, ...]:
    ages = [
        AccountAge(account=a, observed_at=t, age_s=max(0.0, now - t), stale=now - t > stale_after)
        for a, t in seen
    ]
    return tuple(sorted(ages, key=lambda x: (-x.age_s, x.account)))


def _feed(name: str, fields: Mapping[str, str]) -> Feed:
    status = FeedStatus.from_fields(fields)
    if status is None:
        return Feed(name=name, state="unknown")
    return Feed(
        name=name, state=status.state, reason=status.reason, since=status.since, updated_at=status.updated_at
    )


# -- problems ---------------------------------------------------------------------------------


class Rules(_Frozen):
    """What :func:`problems` calls unhealthy. Defaults next to their constants."""

    roles: tuple[Role, ...] = ROLES
    """Each of these roles needs at least one process with a fresh heartbeat (default: all four)."""
    lag_limit_s: float = LAG_LIMIT_S
    lag_limit_entries: int = LAG_LIMIT_ENTRIES


def problems(status: Status, rules: Rules | None = None) -> list[str]:
    """What is unhealthy, worst first, one line each:

    1. a role without a fresh process (ingestor, dispatcher, worker, alerter: nothing moves);
    2. a feed down (no data comes in);
    3. a consumer group lagging: its oldest unacknowledged entry older than ``lag_limit_s``, or
       more than ``lag_limit_entries`` entries not delivered;
    4. accounts stale (no snapshot for longer than ``stale_after``), in one line;
    5. dead letters waiting (alerts a receiver gave up on: ``monitorx dlq``).
    """
    rules = rules or Rules()
    found = [f"no {role} running (no fresh heartbeat)" for role in rules.roles if not status.fresh(role)]
    found += [
        f"feed {f.name} down since {f.since:.0f}: {f.reason}" for f in status.feeds if f.state == "down"
    ]
    found += [line for g in status.groups if (line := _lagging(g, rules)) is not None]
    stale = [a.account for a in status.accounts if a.stale]
    if stale:
        named = ", ".join(stale[:STALE_SHOWN]) + (
            f" and {len(stale) - STALE_SHOWN} more" if len(stale) > STALE_SHOWN else ""
        )
        found.append(f"{len(stale)} account(s) stale (no data for over {status.stale_after:g} s): {named}")
    if status.dead_letters:
        found.append(f"{status.dead_letters} dead letter(s) waiting (monitorx dlq list)")
    return found


def _lagging(g: GroupLag, rules: Rules) -> str | None:
    if g.behind_s > rules.lag_limit_s:
        return f"group {g.group} on {g.stream} is {g.behind_s:.0f} s behind (limit {rules.lag_limit_s:g} s)"
    if g.lag is not None and g.lag > rules.lag_limit_entries:
        return (
            f"group {g.group} on {g.stream} has {g.lag} entries undelivered (limit {rules.lag_limit_entries})"
        )
    return None
