"""The whole running system in one typed :class:`Status`, read from Redis, and what is wrong with it.

:func:`read_status` reads, in a few pipelined round trips: the live heartbeats (processes by
role), every consumer group of the snapshots, alerts and ``notify:*`` streams (``XINFO GROUPS``,
the oldest pending and oldest undelivered entry), the RQ queue ``monitorx`` (waiting, started and
failed jobs, read without rq's registry cleanup, which would run failure callbacks), the data age
of every account (``Keys.seen``), the alerts firing now and which of them are silenced or
inhibited (decided by the alerter's own stages, :mod:`alerter.mute`), the dead letters, the
quarantined frames, the feeds (``Keys.feed``), the counters hash and the labelled metrics
(``Keys.metrics``); then, in one more round trip, the newest snapshot of every account
(``Keys.latest``: venue, totals, open positions) and the newest :data:`DEAD_SHOWN` dead letters.
The silences pending and active come with the alerts' read (``Keys.silences``), the last
canary arrival (``Keys.canary``: :class:`CanaryStatus`) and the last configuration reload
(``Keys.reload``) with the counters'. The processes, groups and dead letters are read by
``engine.health.read_health``, which the alerter's alerts about MonitorX use too. Every view
(``monitorx status``, ``monitorx health``, ``monitorx alerts``, ``monitorx web``) is built on it
and reads Redis no other way.

:func:`problems` lists what is unhealthy, worst first, by the rules of ``engine.health`` (the
alerter's alerts about MonitorX judge by them too) and what only the status knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import redis
from pydantic import Field, ValidationError, computed_field

from alerter.groups import read_alert
from alerter.inhibit import Rule, compile_rules
from alerter.mute import mute_of, parse_alerts
from engine.health import (
    Frozen,
    GroupLag,
    Health,
    Limits,
    Process,
    feeds_of,
    findings,
    fresh_processes,
    read_health,
    scan,
)
from engine.jobs import make_queue
from engine.reload import ReloadRecord
from ingestor.health import FeedStatus
from shared import keys as K
from shared.canary import CANARY_ACCOUNT, STALE_AFTER, CanaryTrip
from shared.config import Config
from shared.keys import Keys
from shared.metrics import Series, parse
from shared.models import Alert, Snapshot
from shared.silences import Silence, parse_silences

STALE_SHOWN = 10
"""Stale accounts named in one problem line; the others are counted."""
DEAD_SHOWN = 5
"""The newest dead letters read in full (:attr:`Status.dead_newest`); the others are counted."""

Mark = Literal["firing", "silenced", "inhibited"]
KINDS = ("process_missing", "feed_disconnected", "group_lagging", "dead_letters")
"""The kinds of ``engine.health`` findings, each placed in :func:`problems`' order."""


class QueueStatus(Frozen):
    """The RQ queue of check jobs."""

    name: str
    depth: int
    """Jobs waiting."""
    started: int
    """Jobs being run (entries of the started registry)."""
    failed: int
    """Failed jobs kept for inspection (``engine.jobs.FAILURE_TTL``)."""


class AccountAge(Frozen):
    """An account's newest data: ``observed_at`` of its newest snapshot, and that snapshot's venue
    and figures (empty when ``Keys.latest`` holds no readable snapshot)."""

    account: str
    observed_at: float
    age_s: float
    stale: bool
    """Older than the configuration's ``stale_after``."""
    venue: str = ""
    figures: dict[str, float] = Field(default_factory=dict)
    """The snapshot's totals (:attr:`shared.models.Snapshot.totals`: ``totalWalletBalance``...)."""
    positions: int = 0
    """Open positions: those with a size other than 0."""


class DeadLetter(Frozen):
    """One dead-letter entry (``Keys.dead``); ``account`` and ``title`` are empty when its alert
    is unreadable."""

    entry_id: str
    receiver: str
    account: str = ""
    title: str = ""
    error: str = ""
    failed_at: float
    """``failed_at`` (the alerter's clock), else the time in the entry id."""


class CanaryStatus(Frozen):
    """The last dead-man's switch canary that came through (``Keys.canary``, ``shared.canary``)."""

    seq: int
    sent_at: float
    arrived_at: float
    round_trip_s: float
    """Seconds from the ingestor sending it to the alerter receiving it (two hosts' clocks)."""
    every: float
    """The period it was sent with (``MONITORX_CANARY_SECONDS`` of its ingestor)."""
    worker: str | None = None
    age_s: float
    """Seconds since it arrived."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def overdue(self) -> bool:
        """None came through for over ``STALE_AFTER × every`` seconds: some layer is stuck."""
        return self.age_s > STALE_AFTER * self.every


def canary_from(fields: Mapping[str, str], now: float) -> CanaryStatus | None:
    """The last canary arrival at ``now`` from ``Keys.canary``'s fields; None when none was
    recorded (or it is unreadable)."""
    trip = CanaryTrip.from_hash(fields)
    if trip is None or trip.arrived_at is None or trip.round_trip_s is None:
        return None
    fields = trip.model_dump(include={"seq", "sent_at", "arrived_at", "every", "worker"})
    return CanaryStatus(**fields, round_trip_s=trip.round_trip_s, age_s=max(0.0, now - trip.arrived_at))


class Feed(Frozen):
    """One feed: ``state`` as a fresh ingestor's heartbeat reports it (``up``, ``down``,
    ``connecting``), else as its record (``Keys.feed``) says when that is ``down``, else
    ``unknown`` (no ingestor watches it). ``reason`` and ``since`` come from the record while it
    is down."""

    name: str
    state: Literal["up", "down", "connecting", "unknown"]
    reason: str = ""
    since: float | None = None
    updated_at: float | None = None


class FiringAlert(Frozen):
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


class Status(Frozen):
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
    dead_newest: tuple[DeadLetter, ...] = ()
    """The newest :data:`DEAD_SHOWN` dead letters, newest first."""
    silences: tuple[Silence, ...] = ()
    """Silences pending or active, oldest first."""
    quarantined: int
    feeds: tuple[Feed, ...]
    counters: dict[str, int]
    canary: CanaryStatus | None = None
    """The last canary that came through (None: none yet, or the canary is off)."""
    series: tuple[Series, ...] = ()
    """The labelled counters and histograms (``Keys.metrics``, :func:`shared.metrics.parse`)."""
    reload: ReloadRecord | None = None
    """The latest configuration reload, taken or refused (None: none recorded)."""

    def fresh(self, role: str, host: str | None = None) -> list[Process]:
        """The processes of ``role`` with a fresh heartbeat (on ``host`` when given)."""
        return fresh_processes(self.processes, role, host)


# -- reading ----------------------------------------------------------------------------------


def read_status(r: redis.Redis, keys: Keys, config: Config, now: float) -> Status:
    """The status at ``now`` (unix seconds); ``r`` decodes responses. Redis errors are the
    caller's. The inhibit rules and ``stale_after`` come from ``config``."""
    rules = compile_rules(config.inhibit_rules)
    health = read_health(r, keys, now)
    feed_keys = scan(r, keys.feed("*"), "hash")
    queue = make_queue(r)  # key names only: counts are read below, never with rq's cleanup
    pipe = r.pipeline(transaction=False)
    pipe.xlen(keys.quarantine)
    pipe.zrange(keys.seen, 0, -1, withscores=True)
    pipe.hgetall(keys.counters)
    pipe.hgetall(keys.metrics)
    pipe.llen(queue.key)
    pipe.zcard(queue.started_job_registry.key)
    pipe.zcard(queue.failed_job_registry.key)
    pipe.get(keys.reload)
    pipe.hgetall(keys.canary)
    for key in feed_keys:
        pipe.hgetall(key)
    pipe.hgetall(keys.firing)
    pipe.hgetall(keys.silences)
    replies: list[Any] = pipe.execute()
    quarantined, seen, counters, metrics, depth, started, failed, reload, canary = replies[:9]
    feeds, rest = replies[9 : 9 + len(feed_keys)], replies[9 + len(feed_keys) :]
    alerts = firing_from(rest[0], rest[1], rules, now)
    accounts, dead_newest = _read_latest(r, keys, _accounts(seen, now, config.stale_after))
    records = {key.removeprefix(keys.feed("")): f for key, f in zip(feed_keys, feeds, strict=True)}
    return Status(
        at=now,
        processes=health.processes,
        groups=health.groups,
        queue=QueueStatus(name=K.QUEUE_NAME, depth=depth, started=started, failed=failed),
        stale_after=config.stale_after,
        accounts=accounts,
        alerts=tuple(alerts),
        firing=len(alerts),
        silenced=sum(a.mark == "silenced" for a in alerts),
        inhibited=sum(a.mark == "inhibited" for a in alerts),
        dead_letters=health.dead_letters,
        dead_newest=dead_newest,
        silences=tuple(s for s in parse_silences(rest[1]) if s.state(now) != "expired"),
        quarantined=quarantined,
        feeds=_feeds(records, health.processes),
        counters={str(k): int(v) for k, v in counters.items() if str(v).lstrip("-").isdigit()},
        series=tuple(parse(metrics)),
        canary=canary_from(canary, now),
        reload=_reload(reload),
    )


def firing_now(r: redis.Redis, keys: Keys, rules: tuple[Rule, ...], now: float) -> list[FiringAlert]:
    """The alerts firing now with their mute reason, in one round trip (see :func:`firing_from`)."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.firing)
    pipe.hgetall(keys.silences)
    firing, silences = pipe.execute()
    return firing_from(firing, silences, rules, now)


def firing_from(
    firing: Mapping[str, str], silences: Mapping[str, str], rules: tuple[Rule, ...], now: float
) -> list[FiringAlert]:
    """The alerts of a ``Keys.firing`` reply, each once (by id), by account, check and id, with
    why each is muted (``alerter.mute.Mute.reason``: every alert firing is a possible source)."""
    unique = {a.id: a for a in parse_alerts(firing.values())}
    mute = mute_of(silences, [a.labels for a in unique.values()], rules, now)
    ordered = sorted(unique.values(), key=lambda a: (a.account, a.check, a.id))
    return [FiringAlert(alert=a, muted=mute.reason(a)) for a in ordered]


def _accounts(seen: Iterable[tuple[str, float]], now: float, stale_after: float) -> tuple[AccountAge, ...]:
    ages = [
        AccountAge(account=a, observed_at=t, age_s=max(0.0, now - t), stale=now - t > stale_after)
        for a, t in seen
        if a != CANARY_ACCOUNT  # never in seen (shared.canary), and never shown if it were
    ]
    return tuple(sorted(ages, key=lambda x: (-x.age_s, x.account)))


def _read_latest(
    r: redis.Redis, keys: Keys, ages: tuple[AccountAge, ...]
) -> tuple[tuple[AccountAge, ...], tuple[DeadLetter, ...]]:
    """One round trip: each account's newest snapshot (its figures) and the newest dead letters."""
    pipe = r.pipeline(transaction=False)
    pipe.xrevrange(keys.dead, count=DEAD_SHOWN)
    for age in ages:
        pipe.hget(keys.latest(age.account), "snapshot")
    dead, *latest = pipe.execute()
    figures = tuple(_with_figures(a, raw) for a, raw in zip(ages, latest, strict=True))
    return figures, tuple(_dead_letter(str(i), f) for i, f in dead)


def _with_figures(age: AccountAge, raw: str | None) -> AccountAge:
    try:
        snap = Snapshot.model_validate_json(raw or "")
    except ValidationError:
        return age
    opened = sum(1 for p in snap.positions.values() if p.size)
    return age.model_copy(update={"venue": snap.venue, "figures": snap.totals, "positions": opened})


def _dead_letter(entry_id: str, fields: Mapping[str, str]) -> DeadLetter:
    alert = read_alert(fields.get("alert"))
    return DeadLetter(
        entry_id=entry_id,
        receiver=fields.get("sink", "*"),
        account="" if alert is None else alert.account,
        title="" if alert is None else alert.title,
        error=fields.get("error", ""),
        failed_at=_failed_at(entry_id, fields.get("failed_at", "")),
    )


def _failed_at(entry_id: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return int(entry_id.split("-")[0]) / 1000


def _feeds(records: Mapping[str, Mapping[str, str]], processes: Sequence[Process]) -> tuple[Feed, ...]:
    """Every feed a record or a fresh ingestor names, by name (see :class:`Feed`)."""
    reported: dict[str, str] = {}
    for p in reversed(fresh_processes(processes, "ingestor")):  # the freshest wins
        reported.update({name: str(f.get("state", "unknown")) for name, f in feeds_of(p).items()})
    return tuple(
        _feed(name, records.get(name, {}), reported.get(name)) for name in sorted({*records, *reported})
    )


def _feed(name: str, fields: Mapping[str, str], reported: str | None) -> Feed:
    status = FeedStatus.from_fields(fields)
    down = status is not None and status.state == "down"
    state = reported if reported in ("up", "down", "connecting") else ("down" if down else "unknown")
    if status is None or not down or state != "down":
        return Feed(name=name, state=state)
    return Feed(
        name=name, state="down", reason=status.reason, since=status.since, updated_at=status.updated_at
    )


def _reload(raw: str | None) -> ReloadRecord | None:
    try:
        return None if raw is None else ReloadRecord.model_validate_json(raw)
    except ValidationError:
        return None


# -- problems ---------------------------------------------------------------------------------


def problems(status: Status, rules: Limits | None = None) -> list[str]:
    """What is unhealthy, worst first, one line each: the findings of ``engine.health`` (the
    rules the alerter's alerts about MonitorX use too) merged with what only the status knows:

    1. a role without a fresh process (ingestor, dispatcher, worker, alerter: nothing moves);
    2. a feed down (no data comes in), or ingestors running none of which is connected;
    3. the canary overdue: none came through for over twice its period (some layer is stuck;
       ``shared.canary``);
    4. the last configuration reload refused (the last good configuration keeps running);
    5. a consumer group lagging: its oldest unacknowledged entry older than ``lag_limit_s``, or
       more than ``lag_limit_entries`` entries not delivered;
    6. accounts stale (no snapshot for longer than ``stale_after``), in one line;
    7. dead letters waiting (alerts a receiver gave up on: ``monitorx dlq``).
    """
    health = Health(processes=status.processes, groups=status.groups, dead_letters=status.dead_letters)
    found = {kind: [f.text for f in findings(health, rules) if f.check == kind] for kind in KINDS}
    lines = found["process_missing"]
    lines += [_down(f) for f in status.feeds if f.state == "down"]
    lines += found["feed_disconnected"]
    if status.canary is not None and status.canary.overdue:
        lines.append(f"the canary has not come through for {status.canary.age_s:.0f} s: some layer is stuck")
    if status.reload is not None and not status.reload.ok:
        lines.append(f"configuration reload of {status.reload.file} refused: the last good one keeps running")
    lines += found["group_lagging"]
    lines += _stale(status)
    return lines + found["dead_letters"]


def _down(feed: Feed) -> str:
    since = "" if feed.since is None else f" since {feed.since:.0f}"
    return f"feed {feed.name} down{since}: {feed.reason or 'its ingestor says so'}"


def _stale(status: Status) -> list[str]:
    stale = [a.account for a in status.accounts if a.stale]
    if not stale:
        return []
    more = f" and {len(stale) - STALE_SHOWN} more" if len(stale) > STALE_SHOWN else ""
    named = ", ".join(stale[:STALE_SHOWN]) + more
    return [f"{len(stale)} account(s) stale (no data for over {status.stale_after:g} s): {named}"]
