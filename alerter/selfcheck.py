"""Alerts about MonitorX itself, routed like any other: every :data:`SELF_CHECK_EVERY` seconds the
alerter reads the health of the system (``engine.health.read_health``) and, for each finding of
the kinds in :data:`ALERTED` (no ingestor, dispatcher or worker running; a consumer group lagging;
dead letters waiting), writes a firing alert when it starts and a resolved one when it ends.

A finding starts only when two consecutive looks see it (Prometheus's ``for``, one period long):
an orderly stop of the whole stack, which deletes the heartbeats a few seconds before the alerter
stops, or a process restarting, raises nothing. An end is written at the first look without it.

The state lives in Redis (``Keys.health``: one field per finding, ``{check}|{key}``, holding when
it started and the finding), claimed atomically (``WATCH`` of the hash, then one ``MULTI`` that
writes the field and the alert), so several alerter replicas write each start and each end once,
and a restarted alerter carries on where the last one stopped. For one heartbeat TTL after the
alerter starts it does not call a role missing (the others may be starting with it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from engine.alerts import emit
from engine.health import Finding, Kind, Limits, findings, health_alert, read_health
from shared.heartbeat import HEARTBEAT_TTL, Role
from shared.keys import Keys
from shared.models import Alert

log = logging.getLogger(__name__)

SELF_CHECK_EVERY = 10.0
"""Seconds between two looks at the system's health (default 10; the alerter's setting
``MONITORX_SELF_CHECK_SECONDS``, 0 to turn the alerts about MonitorX off)."""
ALERTED: frozenset[Kind] = frozenset({"process_missing", "group_lagging", "dead_letters"})
"""The findings that become alerts (a feed that is down has its own ``feed_down`` alert)."""
WATCHED: tuple[Role, ...] = ("ingestor", "dispatcher", "worker")
"""The roles whose absence is alerted (an alerter cannot tell that no alerter runs)."""


@dataclass
class SelfCheck:
    """The loop of the alerts about MonitorX: ``while not stopping: step()``."""

    r: redis.Redis
    keys: Keys
    wait: Callable[[float], object] = time.sleep
    clock: Callable[[], float] = time.time
    every: float = SELF_CHECK_EVERY
    limits: Limits = field(default_factory=lambda: Limits(roles=WATCHED))
    started_at: float = 0.0
    _next: float = 0.0
    _waiting: set[str] = field(default_factory=set)
    """The findings not firing that the last look saw: this look starts those it sees again."""

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()

    def start(self) -> SelfCheck:
        return self

    def step(self) -> int:
        """Wait until the next look is due, then look: the number of alerts written."""
        delay = self._next - self.clock()
        if delay > 0:
            self.wait(delay)
            return 0
        now = self.clock()
        self._next = now + self.every
        return self.look(now)

    def look(self, now: float) -> int:
        """Read the health, start the findings the last look saw too, end the ones gone; alerts
        written."""
        found = {_field(f): f for f in self.current(now)}
        known = {str(name) for name in self.r.hkeys(self.keys.health)}
        waiting = {name for name in found if name not in known}
        started = sum(self._start(name, found[name], now) for name in sorted(waiting & self._waiting))
        self._waiting = waiting
        ended = sum(self._end(name, now) for name in known if name not in found)
        return started + ended

    def current(self, now: float) -> list[Finding]:
        """The findings alerted on now (roles only once a heartbeat TTL passed since start)."""
        roles = self.limits.roles if now - self.started_at >= HEARTBEAT_TTL else ()
        limits = self.limits.model_copy(update={"roles": roles})
        return [f for f in findings(read_health(self.r, self.keys, now), limits) if f.check in ALERTED]

    def _start(self, name: str, finding: Finding, now: float) -> int:
        record = json.dumps({"since": now, "finding": finding.model_dump()})
        return self._claim(name, None, record, [health_alert(finding, "firing", now, now)])

    def _end(self, name: str, now: float) -> int:
        record = self.r.hget(self.keys.health, name)
        if record is None:
            return 0
        state = json.loads(record)
        alert = health_alert(Finding.model_validate(state["finding"]), "resolved", state["since"], now)
        return self._claim(name, str(record), None, [alert])

    def _claim(self, name: str, expected: str | None, record: str | None, alerts: Sequence[Alert]) -> int:
        """Set the field from ``expected`` to ``record`` (None: absent) and write the alerts, in one
        transaction; 0 when another alerter changed the field first."""
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.health)  # type: ignore[no-untyped-call]  # untyped in redis-py
                if pipe.hget(self.keys.health, name) != expected:
                    return 0
                pipe.multi()
                if record is None:
                    pipe.hdel(self.keys.health, name)
                else:
                    pipe.hset(self.keys.health, name, record)
                emit(pipe, self.keys, alerts)
                pipe.execute()
            except redis.WatchError:
                return 0
        log.warning("%s: %s", "MonitorX problem" if record else "MonitorX problem over", name)
        return len(alerts)


def _field(finding: Finding) -> str:
    return f"{finding.check}|{finding.key}"
