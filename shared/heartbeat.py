"""Heartbeats: every long-running process says, in its loop, that it is alive and what only it
knows. A heartbeat is one Redis string per process (``Keys.heartbeat(role, name)``, a
:class:`Heartbeat` as JSON) written with a TTL, so a process that dies disappears by itself
within :data:`HEARTBEAT_TTL` seconds; nothing ever deletes one but the process itself when it
stops cleanly (:meth:`Beater.stop`).

Writers call :meth:`Beater.beat` from their loop as often as they like: it writes at most once
per :data:`HEARTBEAT_EVERY` seconds (one SET, no read). Readers (``monitorx status``, ``monitorx
health``, the web page) use :func:`read_heartbeats`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.keys import Keys

HEARTBEAT_EVERY = 5.0
"""Seconds between two writes of one process's heartbeat."""
HEARTBEAT_TTL = 15
"""Seconds a heartbeat lives without a new one (three beats): a dead process is gone after it."""

Role = Literal["ingestor", "dispatcher", "worker", "alerter"]
ROLES: tuple[Role, ...] = ("ingestor", "dispatcher", "worker", "alerter")


class Heartbeat(BaseModel):
    """What a process says of itself. ``details`` is what only its role knows (the ingestor's
    feeds, the dispatcher's read lag, a worker's current job, the alerter's backlog per
    receiver); JSON values only."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    role: Role
    name: str
    host: str
    pid: int
    version: str
    started_at: float
    last_step_at: float
    details: dict[str, Any] = Field(default_factory=dict)

    def fresh(self, now: float, ttl: float = HEARTBEAT_TTL) -> bool:
        """Whether its last step is at most ``ttl`` seconds before ``now``."""
        return now - self.last_step_at <= ttl


def monitorx_version() -> str:
    """The installed MonitorX version (``0+unknown`` when not installed as a package)."""
    try:
        return version("monitorx")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass
class Beater:
    """The heartbeat writer of one process (build one in ``main()``)."""

    r: redis.Redis
    keys: Keys
    role: Role
    name: str
    every: float = HEARTBEAT_EVERY
    ttl: int = HEARTBEAT_TTL
    clock: Callable[[], float] = time.time
    started_at: float = 0.0
    _last: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()

    @property
    def key(self) -> str:
        return self.keys.heartbeat(self.role, self.name)

    def due(self) -> bool:
        """Whether :meth:`beat` would write now: lets a caller build costly details (a Redis
        read) only when they are written."""
        return self.clock() - self._last >= self.every

    def beat(self, details: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Write the heartbeat if ``every`` seconds passed since the last write (or ``force``);
        True when written. Redis errors are the caller's (its loop rides them out)."""
        now = self.clock()
        if not force and now - self._last < self.every:
            return False
        beat = Heartbeat(
            role=self.role,
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=monitorx_version(),
            started_at=self.started_at,
            last_step_at=now,
            details=dict(details or {}),
        )
        self.r.set(self.key, beat.model_dump_json(), ex=self.ttl)
        self._last = now
        return True

    def stop(self) -> None:
        """A clean stop: the heartbeat goes at once (a Redis error here is ignored: it expires)."""
        try:
            self.r.delete(self.key)
        except redis.RedisError:
            return


def read_heartbeats(r: redis.Redis, keys: Keys) -> list[Heartbeat]:
    """Every live heartbeat, by role then name (unreadable ones are skipped)."""
    names = sorted(str(k) for k in r.scan_iter(match=keys.heartbeat("*", "*"), count=500))
    values: Any = r.mget(names) if names else []
    beats = []
    for value in values:
        if value is None:
            continue
        try:
            beats.append(Heartbeat.model_validate_json(value))
        except ValidationError:
            continue
    return sorted(beats, key=lambda b: (ROLES.index(b.role), b.name))
