"""Report schedules: cron expressions evaluated in UTC (rq 3.0's CronScheduler uses local time,
so MonitorX computes slots itself), and the decision of what a tick does with a slot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from croniter import croniter

ON_TIME = 60.0
"""A slot enqueued within this many seconds of its time is on time; later, it is late."""


def latest_slot(schedule: Sequence[str], now: float) -> float | None:
    """The most recent slot at or before ``now`` (unix seconds), over every expression."""
    base = datetime.fromtimestamp(now + 1, UTC)  # get_prev excludes its base itself
    slots = (float(croniter(expr, base).get_prev(float)) for expr in schedule)
    return max((slot for slot in slots if slot <= now), default=None)


@dataclass(frozen=True)
class Decision:
    action: Literal["none", "send", "skip"]
    slot: float | None = None
    late: bool = False


def decide(schedule: Sequence[str], last: float | None, now: float, missed: str) -> Decision:
    """What to do at ``now`` given the last slot handled (None: never; the schedule starts with
    the next slot, or the current one if we are still inside its on-time window)."""
    slot = latest_slot(schedule, now)
    if slot is None:
        return Decision("none")
    if last is None and now - slot > ON_TIME:
        return Decision("skip", slot)
    if last is not None and slot <= last:
        return Decision("none")
    late = now - slot > ON_TIME
    if late and missed == "skip":
        return Decision("skip", slot, late=True)
    return Decision("send", slot, late=late)
