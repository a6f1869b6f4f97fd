"""Stale data: an account whose newest snapshot is older than ``max_age`` seconds fires, and
resolves when data returns. Evaluated on every dispatcher tick (so a silent or disconnected feed
shows up) and on every snapshot (so recovery is noticed at once)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from engine.checks import fmt
from engine.checks.base import CheckSpec, Finding, Message, Params
from shared.config import DEFAULT_STALE_AFTER
from shared.models import Snapshot

KEY = "data"


class StaleDataParams(Params):
    max_age: float = Field(default=DEFAULT_STALE_AFTER, gt=0)
    """Seconds without a snapshot after which the account is stale."""


def evaluate(snap: Snapshot | None, params: StaleDataParams, now: float) -> list[Finding]:
    if snap is None:
        return [Finding(KEY, True, {"age": None})]
    age = now - snap.observed_at
    return [Finding(KEY, age > params.max_age, {"age": age, "last": snap.observed_at})]


def render(account: str, snap: Snapshot | None, params: StaleDataParams, fired: Sequence[Finding]) -> Message:
    detail = fired[0].detail
    if detail["age"] is None:
        text = f"No data received for {account} (limit {params.max_age:g}s)."
    else:
        text = (
            f"No data for {account} for {detail['age']:.0f}s (limit {params.max_age:g}s); "
            f"last snapshot at {fmt.clock(detail['last'])}."
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
