"""Stale data: an account whose newest snapshot is older than ``max_age`` seconds fires, and
resolves when data returns. Evaluated on every dispatcher tick (so a silent or disconnected feed
shows up) and on every snapshot (so recovery is noticed at once)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import Field

from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.config import DEFAULT_STALE_AFTER
from shared.models import Snapshot

KEY = "data"


class StaleDataParams(Params):
    max_age: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    """Seconds without a snapshot after which the account is stale."""


def evaluate(snap: Snapshot | None, params: StaleDataParams, now: float) -> list[Finding]:
    if snap is None:
        return [Finding(KEY, True, {"age": None, "max_age": params.max_age, "last": None})]
    age = now - snap.observed_at
    return [
        Finding(KEY, age > params.max_age, {"age": age, "max_age": params.max_age, "last": snap.observed_at})
    ]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def render(account: str, snap: Snapshot | None, params: StaleDataParams, fired: Sequence[Finding]) -> Message:
    detail = fired[0].detail
    if detail["age"] is None:
        text = f"No data received for {account} (limit {params.max_age:g}s)."
    else:
        text = (
            f"No data for {account} for {detail['age']:.0f}s (limit {params.max_age:g}s); "
            f"last snapshot at {_when(detail['last'])}."
        )
    return Message(title=f"Stale data: {account}", text=text, severity="critical")


SPEC = CheckSpec(
    name="stale_data",
    params=StaleDataParams,
    evaluate=evaluate,
    render=render,
    summary="No snapshot for an account within max_age seconds",
    triggers=frozenset({"snapshot", "tick"}),
    forget_on_clear=True,
    default_delay=None,
    default_cooldown=300.0,
    default_resolved=True,
)
