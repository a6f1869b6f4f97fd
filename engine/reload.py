"""Hot reload of the configuration, shared by the dispatcher and the workers.

A reload is requested by SIGHUP or noticed as a change of the file's modification time (polled
at most once per POLL_SECONDS). A file that does not validate is refused: the last good plan
keeps running and a ``config_error`` alert says why. Its id derives from the file's content, so
the dispatcher and every worker refusing the same file produce one alert, delivered once.
Alert state lives in Redis under the instance name, so unchanged instances keep it.

Every reload, taken or refused, is recorded in ``Keys.reload`` (:class:`ReloadRecord`: when, by
which process, the file, the result), which ``monitorx status`` shows; the latest one wins.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis
from pydantic import BaseModel, ConfigDict

from engine.alerts import emit, make_alert
from engine.checks.base import Message
from engine.plan import Plan, load_plan
from shared.config import ConfigError
from shared.keys import Keys
from shared.models import Alert

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often the file's modification time is compared (seconds)."""
RELOAD_ERROR_CHARS = 2000
"""Characters of a refused file's problems kept in its :class:`ReloadRecord`."""


class ReloadRecord(BaseModel):
    """One reload of the configuration: ``ok`` when the new file was taken (``instances`` of
    it), else ``error`` says why it was refused (the last good one keeps running)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    at: float
    ok: bool
    file: str
    by: str
    """``host:pid`` of the process that reloaded."""
    instances: int | None = None
    error: str = ""


def record_reload(r: redis.Redis, keys: Keys, ok: bool, file: str, instances: int | None, error: str) -> None:
    """Write the latest reload (``Keys.reload``); a Redis error is logged, never raised (the reload
    itself succeeded or failed already)."""
    record = ReloadRecord(
        at=time.time(),
        ok=ok,
        file=file,
        by=f"{socket.gethostname()}:{os.getpid()}",
        instances=instances,
        error=error[:RELOAD_ERROR_CHARS],
    )
    try:
        r.set(keys.reload, record.model_dump_json())
    except redis.RedisError as exc:
        log.warning("reload not recorded: %s", exc)


def _mtime(path: Path | None) -> float | None:
    try:
        return None if path is None else path.stat().st_mtime
    except OSError:
        return None


@dataclass
class PlanSource:
    """The current plan of a process and how to replace it."""

    path: Path | None
    plan: Plan
    clock: Callable[[], float] = time.monotonic
    requested: bool = False
    _mtime: float | None = None
    _next_poll: float = 0.0

    def __post_init__(self) -> None:
        self._mtime = _mtime(self.path)

    def install_sighup(self) -> PlanSource:
        signal.signal(signal.SIGHUP, self._on_sighup)
        return self

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def due(self) -> bool:
        """True when a reload was requested or the file changed (cheap: polls the mtime)."""
        if self.requested:
            return True
        now = self.clock()
        if self.path is None or now < self._next_poll:
            return False
        self._next_poll = now + POLL_SECONDS
        return _mtime(self.path) != self._mtime

    def reload(self, r: redis.Redis, keys: Keys) -> bool:
        """Load the file again; on success swap the plan, on failure alert and keep the old one."""
        self.requested = False
        self._mtime = _mtime(self.path)
        try:
            plan = load_plan(self.path)
        except ConfigError as exc:
            log.error("configuration reload refused, the last good configuration keeps running:\n%s", exc)
            emit(r, keys, [refused_alert(exc, self.path)])
            record_reload(r, keys, False, exc.file, None, str(exc))
            return False
        log.info("configuration reloaded from %s: %d instances", plan.config.source, len(plan.bound))
        self.plan = plan
        record_reload(r, keys, True, str(plan.config.source), len(plan.bound), "")
        return True

    def refresh(self, r: redis.Redis, keys: Keys) -> bool:
        """Reload if due; True when the plan changed."""
        return self.due() and self.reload(r, keys)


def refused_alert(exc: ConfigError, path: Path | None) -> Alert:
    """The ``config_error`` of a refused file: instance ``config``, account ``*``, only the
    built-in labels (the refused file's labels are not trusted, the last good one's not meant)."""
    now = time.time()
    return make_alert(
        instance="config",
        check="config_error",
        account="*",
        state="firing",
        message=Message(
            f"Configuration reload refused: {exc.file}",
            "The last good configuration keeps running. Problems:\n" + str(exc),
            "critical",
        ),
        observed_at=now,
        emitted_at=now,
        event=("config-refused", exc.file, _content_digest(path)),
    )


def _content_digest(path: Path | None) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else "-"
    except OSError:
        return "unreadable"
