"""Capped, jittered exponential backoff: the one delay rule of every retry loop in MonitorX
(Galio reconnects, Redis outages, delivery retries)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays double from ``minimum`` per consecutive failure, capped at ``maximum``.
    ``stable_after``: seconds a session must last to reset the count (the Galio client's rule)."""

    minimum: float
    maximum: float
    stable_after: float = 0.0


def backoff_delay(policy: BackoffPolicy, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before the next attempt after ``failures`` (>= 1) consecutive failures.

    The base is ``minimum * 2**(failures-1)`` capped at ``maximum``; the delay is drawn
    uniformly from ``[max(minimum, base/2), base]`` ("equal jitter"): never below ``minimum``,
    never above ``maximum``, and at least half the base, so a run of failures keeps slowing down.
    """
    exponent = min(max(failures - 1, 0), 64)
    base = min(policy.maximum, policy.minimum * 2.0**exponent)
    low = min(base, max(policy.minimum, base / 2))
    return low + (base - low) * rand()
