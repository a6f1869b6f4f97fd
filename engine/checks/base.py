"""The contract between a check and the framework that runs it.

A check is a pair of small pure functions over one account:

``evaluate(snapshot, params, now) -> list[Finding]``
    One Finding per key it evaluated (a pair, an asset, a metric), breached or not. A key it did
    not evaluate (absent from the snapshot) is simply not listed: its state is left alone.
    ``snapshot`` is None when the account has never reported; ``now`` is the framework's time
    (the snapshot's observed time, or the tick time for time-driven checks).
``render(account, snapshot, params, fired) -> Message``
    The text of one alert, given the breached Findings whose delay and cooldown let them fire
    now (never empty). All figures are formatted here, as the legacy spec writes them.

The framework owns everything else: which snapshot, time, delay, cooldown, state in Redis,
resolved notices, errors and delivery. A check that raises (``InvalidValue`` included) becomes
a ``check_error`` alert for that pair only.

Scheduled multi-account reports use :class:`ReportSpec` instead: ``build(snapshots, params,
slot) -> [(label, Message), ...]`` over the newest snapshot of each account (``None`` for an
account that never reported), in the instance's account order; ``slot`` is the scheduled time.
The label is the account a message is about, or ``*`` for a message about all of them.

Params models may declare ``delay`` and ``cooldown`` fields: the framework fills them with the
instance's effective values (for messages that quote them, as the legacy delta does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict

from shared.models import Severity, Snapshot

P = TypeVar("P", bound=BaseModel)

Trigger = Literal["snapshot", "tick"]


class Params(BaseModel):
    """Base of every check's params model: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(NamedTuple):
    """The outcome of one key of one evaluation. ``detail`` carries the figures render needs."""

    key: str
    breached: bool
    detail: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Message:
    """The human text of one alert."""

    title: str
    text: str
    severity: Severity = "warning"


Evaluate = Callable[[Snapshot | None, P, float], Sequence[Finding]]
Render = Callable[[str, Snapshot | None, P, Sequence[Finding]], Message]
Build = Callable[[Mapping[str, Snapshot | None], P, float], Sequence[tuple[str, Message]]]


@dataclass(frozen=True)
class CheckSpec(Generic[P]):
    """A stateful per-account check.

    ``forget_on_clear``: a clear forgets both clocks (delta, hedge, stale data), or keeps the time
    of the last alert so a recovery and new breach inside the cooldown stay silent (low balance,
    margin risk). ``default_delay`` None fires on the first breaching evaluation; a number starts
    the legacy delay clock. ``triggers``: evaluated on each snapshot, on each dispatcher tick, or both.
    """

    name: str
    params: type[P]
    evaluate: Evaluate[P]
    render: Render[P]
    summary: str
    triggers: frozenset[Trigger] = frozenset({"snapshot"})
    forget_on_clear: bool = True
    default_delay: float | None = None
    default_cooldown: float = 300.0
    default_resolved: bool = False


@dataclass(frozen=True)
class ReportSpec(Generic[P]):
    """A scheduled report over many accounts (stateless apart from the last slot sent)."""

    name: str
    params: type[P]
    build: Build[P]
    summary: str
    default_schedule: tuple[str, ...] = ("0 0,6,12,18 * * *",)


AnySpec = CheckSpec[Any] | ReportSpec[Any]
