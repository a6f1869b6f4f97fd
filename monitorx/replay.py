"""Offline replay of a recording through the live checks, in virtual time (``monitorx backtest``).

:class:`Replay` mirrors the live pipeline (ingestor -> dispatcher -> workers) in memory:

* every frame is parsed as the ingestor parses it (``ingestor.frames``); a snapshot's time is
  the frame's ``received_at``;
* every snapshot is evaluated by each instance routed on it (``Plan.for_snapshot``) at
  now = received_at: every frame, no latest-wins coalescing (the legacy prototype ran every
  check on every frame);
* a virtual dispatcher tick every ``tick`` seconds from the first frame evaluates the
  time-driven instances (``Plan.on_tick``) on the newest snapshot of each seen account (and of
  the explicit accounts once ``stale_after`` has passed), then decides the report slots
  (``workers.schedule.decide``), as ``dispatcher.service.Dispatcher.tick`` does;
* the state of each (instance, account) pair moves through ``workers.runner.assess`` exactly as
  ``workers.runner.apply`` moves it in Redis, ``_now`` rule included (an evaluation at or before
  the pair's newest one changes nothing).

Three shortcuts save most of the work and change no result:

* quiet pairs: when every key of a pair is at rest and nothing is breached, assess would change
  nothing and alert nothing, so it is not called;
* screens: for a quiet pair, a check's screen (``CheckSpec.screen``) decides on the raw account
  object whether anything may be breached; when nothing may, neither the snapshot is built nor
  evaluate run (snapshots are built only when an evaluation, a tick or a report needs them);
* reuse: an account object identical to that account's previous one (same keys in the same
  order, same values of the same types) reuses its snapshot (with the new time), its screens'
  answers and the findings of the instances that are not time-driven, whose evaluate depends on
  snapshot and params only.

An engine may own a share of the accounts (``owns``): several engines then replay one recording
in parallel (``monitorx.replay_pool``) and their items merge by :class:`Order`; reports, which
need every account, are built from the engines' :class:`ReportPart` items by :func:`collect`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel

from ingestor import frames
from ingestor.frames import parse_account
from ingestor.normalize import Normalizer
from shared.feed import KeyLayout, Layouts
from shared.models import Alert, Snapshot
from workers.checks.base import Evaluate, Finding, Screen
from workers.plan import Bound, Plan
from workers.runner import ERROR_KEY, assess, report_accounts, report_alerts
from workers.schedule import decide
from workers.state import KeyState, Policy, step

DEFAULT_TICK = 5.0
"""Seconds of virtual time between two ticks (the dispatcher's MONITORX_TICK_SECONDS default)."""

Findings = tuple[Finding, ...]


class Order(NamedTuple):
    """Where an item comes in the replay; the same in every share of a parallel replay."""

    event: int
    """Number of the frame or tick (frames and ticks share one count)."""
    phase: int
    """0 a frame's evaluations, 1 a tick's evaluations, 2 a tick's reports, 3 a watermark."""
    rank: int
    """The account's position in the frame; on a tick, the instance's position."""
    account: str
    """On a tick, the account (ticks go through accounts in sorted order, as the dispatcher does)."""
    bound: int
    """The instance's position in the account's routes (frames)."""
    nth: int
    """The alert's position in its assessment."""


@dataclass(frozen=True)
class Fired:
    """An alert the pipeline would have sent, at virtual time ``at``."""

    order: Order
    at: float
    alert: Alert


@dataclass(frozen=True)
class ReportPart:
    """A report slot due at ``at``, with the newest snapshots of the accounts one engine owns."""

    order: Order
    at: float
    instance: str
    slot: float
    late: bool
    snapshots: dict[str, Snapshot | None]
    seen: frozenset[str]


@dataclass(frozen=True)
class Mark:
    """A watermark: the engine has emitted everything before ``order``."""

    order: Order


Item = Fired | ReportPart | Mark


@dataclass(frozen=True)
class Options:
    tick: float = DEFAULT_TICK
    start: float | None = None
    """Frames received before this unix time are left out."""
    end: float | None = None
    """Frames received at or after this unix time are left out."""
    reuse: bool = True
    """Reuse the snapshot and findings of an account object identical to the previous one."""
    screen: bool = True
    """Let the checks' screens settle the evaluations of quiet pairs (``CheckSpec.screen``)."""

    def inside(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


FRAME_FIELDS = ("lines", "bytes_read", "bad_lines", "outside", "frames", "malformed_frames", "ticks")
"""Counters every share of a parallel replay counts alike (each reads every frame)."""


@dataclass
class Stats:
    lines: int = 0
    bytes_read: int = 0
    bad_lines: int = 0
    """Recording lines that are not ``{"received_at": <number>, "frame": "<text>"}``."""
    outside: int = 0
    """Frames outside ``--from``/``--until``."""
    frames: int = 0
    malformed_frames: int = 0
    """Frames quarantined whole (not JSON, no ``pos`` object)."""
    ticks: int = 0
    snapshots: int = 0
    """Account objects taken (every object that is a JSON object), whether or not normalized."""
    quarantined: int = 0
    """Account objects quarantined alone."""
    evaluations: int = 0
    reused: int = 0
    """Snapshots taken from an identical previous account object."""
    screened: int = 0
    """Evaluations settled by the check's screen, without a snapshot or evaluate."""

    @classmethod
    def merged(cls, shares: Iterable[Stats]) -> Stats:
        """The counts of a parallel replay: frame counters from the first share, the rest summed."""
        parts = list(shares)
        total = cls(**{name: getattr(parts[0], name) for name in FRAME_FIELDS})
        for part in parts:
            for name in ("snapshots", "quarantined", "evaluations", "reused", "screened"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total


# ---------------------------------------------------------------- the recording


def decode(data: bytes | str) -> Any:
    """``json.loads(data)``, faster: orjson first, and ``json.loads`` whenever orjson refuses the
    text (``NaN``, ``Infinity``, numbers out of double range, lone surrogates, non-UTF-8), so
    every text decodes or fails exactly as it does live. One difference: an integer literal of
    2**64 or more decodes as the nearest float rather than an int, the number the feed's parser
    (``parse_number``) reads from either; checks read values through it and raw keys only."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def load_pos(text: str) -> tuple[dict[str, Any] | None, str]:
    """``ingestor.frames.load_pos``, decoding with :func:`decode`: the ``pos`` object of a frame,
    or None and the reason (found by ``ingestor.frames.load_pos`` itself) it is malformed."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return frames.load_pos(text)
    pos = data.get("pos") if type(data) is dict else None
    return (pos, "") if type(pos) is dict else frames.load_pos(text)


def _record(line: bytes) -> tuple[float, str] | None:
    try:
        data = decode(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    t, frame = data.get("received_at"), data.get("frame")
    if isinstance(t, bool) or not isinstance(t, int | float) or not isinstance(frame, str):
        return None
    return (float(t), frame) if math.isfinite(t) else None


def read_recording(
    path: Path, stats: Stats, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[float, str]]:
    """``(received_at, frame text)`` of each line of a recording (``ingestor.record``); lines that
    are not records are counted in ``stats.bad_lines`` and skipped, blank lines ignored."""
    with path.open("rb") as f:
        for line in f:
            stats.bytes_read += len(line)
            if progress is not None:
                progress(stats.bytes_read)
            if not line.strip():
                continue
            stats.lines += 1
            record = _record(line)
            if record is None:
                stats.bad_lines += 1
                continue
            yield record


# ---------------------------------------------------------------- state of one pair


def _at_rest(state: KeyState, forget_on_clear: bool) -> bool:
    """True when a clear leaves this key as it is and sends nothing."""
    return step(state, False, 0.0, Policy(None, 0.0, forget_on_clear)) == (state, None)


@dataclass
class PairState:
    """One (instance, account) pair: what ``mx:state:{instance}:{account}`` holds live."""

    states: dict[str, KeyState] = field(default_factory=dict)
    last: float | None = None
    """``_now``: the time of the newest evaluation."""
    quiet: bool = True
    """Every key at rest: an evaluation without a breach changes nothing."""

    def absorb(self, states: Mapping[str, KeyState], forget_on_clear: bool) -> None:
        """Write an assessment's states as ``apply`` does: a key at its initial state is deleted."""
        for key, state in states.items():
            if state == KeyState():
                self.states.pop(key, None)
            else:
                self.states[key] = state
        self.quiet = all(_at_rest(s, forget_on_clear and key != ERROR_KEY) for key, s in self.states.items())


def _findings(bound: Bound, snap: Snapshot | None, now: float) -> Findings | None:
    """The check's findings, or None when it raises (assess then reports the error)."""
    return _run(bound.check.evaluate, snap, bound.params, now)


def _run(evaluate: Evaluate[Any], snap: Snapshot | None, params: BaseModel, now: float) -> Findings | None:
    try:
        return tuple(evaluate(snap, params, now))
    except Exception:  # noqa: BLE001 - assess runs it again and turns the error into check_error
        return None


# ---------------------------------------------------------------- account objects


def same_object(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when ``new`` normalizes exactly like ``old``: equal keys in the same order and equal
    values of the same types (``1``, ``1.0`` and ``true`` compare equal in Python; ``0.0`` and
    ``-0.0`` too). Nested values are never taken as the same."""
    if old != new or list(old) != list(new):
        return False
    types = list(map(type, new.values()))
    if types != list(map(type, old.values())) or dict in types or list in types:
        return False
    values = list(new.values())
    return 0 not in values or _zero_signs(values) == _zero_signs(old.values())


def _zero_signs(values: Iterable[Any]) -> list[float]:
    return [math.copysign(1.0, v) for v in values if type(v) is float and v == 0.0]


class _Entry:
    """One account object as received (or a run of identical ones, retimed to the newest): its
    key layout and snapshot, each built when first needed, and what each instance's screen and
    evaluate found on it (both depend on the object and params only)."""

    __slots__ = ("account", "obj", "t", "seq", "_layout", "_snapshot", "screens", "findings")

    def __init__(self, account: str, obj: dict[str, Any], t: float, seq: int) -> None:
        self.account, self.obj, self.t, self.seq = account, obj, t, seq
        self._layout: KeyLayout | None = None
        self._snapshot: Snapshot | None = None
        self.screens: dict[str, bool] = {}
        self.findings: dict[str, Findings] = {}

    def layout(self, layouts: Layouts) -> KeyLayout:
        if self._layout is None:
            self._layout = layouts.of(tuple(self.obj))
        return self._layout

    def snapshot(self, normalize: Normalizer) -> Snapshot:
        """The snapshot of the object at the entry's time (an object that is a dict always
        normalizes: ``parse_account`` quarantines only non-objects and normalizer errors, and the
        trusted normalizer raises none)."""
        snap = self._snapshot
        if snap is None:
            snap = normalize(self.account, self.obj, self.t, self.seq)
        elif snap.observed_at != self.t or snap.seq != self.seq:
            snap = snap.model_copy(update={"observed_at": self.t, "seq": self.seq})
        self._snapshot = snap
        return snap


@dataclass(frozen=True)
class _Route:
    """One instance evaluated on each snapshot of an account, with the pair's state."""

    index: int
    """The instance's position in the account's routes."""
    bound: Bound
    evaluate: Evaluate[Any]
    params: BaseModel
    reusable: bool
    """Findings may be reused for an identical object: the check is not time-driven."""
    screen: Screen[Any] | None
    pair: PairState


def everyone(account: str) -> bool:
    return True


def _screen(route: _Route, entry: _Entry, layouts: Layouts) -> bool:
    """The route's screen on the entry's object: False when evaluate would find nothing breached
    and raise nothing; True when it may, or when the screen itself fails."""
    assert route.screen is not None
    try:
        return bool(route.screen(entry.obj, entry.layout(layouts), route.params))
    except Exception:  # noqa: BLE001 - a screen that cannot tell leaves the decision to evaluate
        return True


def _any_breached(found: Findings) -> bool:
    for finding in found:
        if finding.breached:
            return True
    return False


# ---------------------------------------------------------------- the engine


class Replay:
    """Replays frames through the plan; :meth:`run` yields the items in order."""

    def __init__(self, plan: Plan, options: Options, owns: Callable[[str], bool] = everyone) -> None:
        self.plan = plan
        self.options = options
        self.owns = owns
        self.stats = Stats()
        self._pairs: dict[tuple[str, str], PairState] = {}
        self._latest: dict[str, _Entry] = {}
        self._known: dict[str, _Entry] = {}
        self._normalize = Normalizer(trusted=True)  # objects come from decode: JSON as decoded
        self._routes: dict[str, tuple[_Route, ...] | None] = {}
        self._ticking = plan.on_tick()
        self._reports = plan.reports()
        self._slots: dict[str, float] = {}
        self._out: list[Item] = []
        self._event = 0
        self._seq = 0
        self._t0: float | None = None
        self._last: float | None = None

    def run(self, records: Iterable[tuple[float, str]]) -> Iterator[Item]:
        """Replay ``(received_at, frame text)`` records; yields alerts, report parts, watermarks."""
        for t, text in records:
            if not self.options.inside(t):
                self.stats.outside += 1
                continue
            self._ticks_until(t, inclusive=False)
            self.frame(t, text)
            yield from self._drain()
        if self._last is not None:
            self._ticks_until(self._last, inclusive=True)
        yield from self._drain()

    def _drain(self) -> list[Item]:
        out, self._out = self._out, []
        out.append(Mark(Order(self._event, 3, 0, "", 0, 0)))
        return out

    # -------------------------------------------------------- frames

    def frame(self, t: float, text: str) -> None:
        """Parse one frame and evaluate each owned account's snapshot."""
        if self._t0 is None:
            self._t0 = t
        self._last = t if self._last is None else max(self._last, t)
        self._event += 1
        self.stats.frames += 1
        pos, _ = load_pos(text)
        if pos is None:
            self.stats.malformed_frames += 1
            return
        for rank, (account, obj) in enumerate(pos.items()):
            self._seq += 1
            try:
                routes = self._routes[account]
            except KeyError:
                routes = self._routes[account] = self._routes_of(account)
            if routes is not None:
                self._account(rank, account, obj, t, self._seq, routes)

    def _routes_of(self, account: str) -> tuple[_Route, ...] | None:
        """The account's routes; None when this engine does not own it or nothing covers it
        (such accounts are parsed live but never used)."""
        if not (self.owns(account) and any(b.instance.covers(account) for b in self.plan.bound.values())):
            return None
        return tuple(
            _Route(
                index,
                bound,
                bound.check.evaluate,
                bound.params,
                self.options.reuse and "tick" not in bound.check.triggers,
                bound.check.screen if self.options.screen else None,
                self._pair(bound.name, account),
            )
            for index, bound in enumerate(self.plan.for_snapshot(account))
        )

    def _account(
        self, rank: int, account: str, obj: Any, t: float, seq: int, routes: tuple[_Route, ...]
    ) -> None:
        entry = self._entry(account, obj, t, seq)
        if entry is None:
            return
        self.stats.snapshots += 1
        current = self._latest.get(account)
        if current is None or t >= current.t:
            self._latest[account] = entry
        for route in routes:
            pair = route.pair
            if pair.last is not None and t <= pair.last:
                continue  # as _evaluate: an evaluation at or before the pair's newest changes nothing
            pair.last = t
            self.stats.evaluations += 1
            if pair.quiet and route.screen is not None and not self._maybe(route, entry):
                self.stats.screened += 1
                continue
            self._on_snapshot(route, account, entry, t, rank)

    def _maybe(self, route: _Route, entry: _Entry) -> bool:
        """The route's screen on the entry, computed once per object."""
        name = route.bound.name
        maybe = entry.screens.get(name)
        if maybe is None:
            maybe = entry.screens[name] = _screen(route, entry, self._normalize.layouts)
        return maybe

    def _on_snapshot(self, route: _Route, account: str, entry: _Entry, t: float, rank: int) -> None:
        """``_evaluate`` of a frame's snapshot, findings reused for an identical object."""
        name = route.bound.name
        found = entry.findings.get(name) if route.reusable else None
        snap = entry.snapshot(self._normalize)
        if found is None:
            found = _run(route.evaluate, snap, route.params, t)
            if route.reusable and found is not None:
                entry.findings[name] = found
        if found is not None and route.pair.quiet and not _any_breached(found):
            return
        order = Order(self._event, 0, rank, "", route.index, 0)
        self._assess(route.bound, route.pair, account, snap, t, order)

    def _entry(self, account: str, obj: Any, t: float, seq: int) -> _Entry | None:
        """The account's entry for this object: the previous one, retimed, when the object is
        identical; else a new one (None when the object is quarantined)."""
        if type(obj) is not dict:
            parsed = parse_account(account, obj, t, lambda: seq, self._normalize)
            assert not isinstance(parsed, Snapshot), "only an object normalizes"
            self.stats.quarantined += 1
            return None
        known = self._known.get(account)
        if self.options.reuse and known is not None and t >= known.t and same_object(known.obj, obj):
            self.stats.reused += 1
            known.t, known.seq = t, seq
            return known
        entry = _Entry(account, obj, t, seq)
        if self.options.reuse:
            self._known[account] = entry
        return entry

    def _latest_snapshot(self, account: str) -> Snapshot | None:
        entry = self._latest.get(account)
        return None if entry is None else entry.snapshot(self._normalize)

    # -------------------------------------------------------- evaluations

    def _pair(self, instance: str, account: str) -> PairState:
        pair = self._pairs.get((instance, account))
        if pair is None:
            pair = self._pairs[(instance, account)] = PairState()
        return pair

    def _evaluate(
        self,
        bound: Bound,
        account: str,
        snap: Snapshot | None,
        now: float,
        order: Order,
        found: Findings | None,
    ) -> Findings | None:
        """One evaluation, as ``workers.runner.apply`` runs it; returns the findings it used."""
        pair = self._pair(bound.name, account)
        if pair.last is not None and now <= pair.last:
            return found
        pair.last = now
        self.stats.evaluations += 1
        if found is None:
            found = _findings(bound, snap, now)
        if found is not None and pair.quiet and not _any_breached(found):
            return found
        self._assess(bound, pair, account, snap, now, order)
        return found

    def _assess(
        self, bound: Bound, pair: PairState, account: str, snap: Snapshot | None, now: float, order: Order
    ) -> None:
        """Move the pair's state as ``apply`` does and keep the alerts."""
        result = assess(bound, account, snap, now, pair.states, now)
        pair.absorb(result.states, bound.check.forget_on_clear)
        self._out.extend(Fired(order._replace(nth=i), now, a) for i, a in enumerate(result.alerts))

    # -------------------------------------------------------- ticks

    def _ticks_until(self, t: float, inclusive: bool) -> None:
        """Run every tick before ``t`` (or at ``t`` too): frames at a tick's time come first."""
        if self._t0 is None:
            return
        while True:
            now = self._t0 + self.stats.ticks * self.options.tick
            if now > t or (now == t and not inclusive):
                return
            self.stats.ticks += 1
            self._tick(now)

    def _tick(self, now: float) -> None:
        """The time-driven checks of every owned account they cover, then the report slots."""
        assert self._t0 is not None
        self._event += 1
        unseen_due = now - self._t0 >= self.plan.config.stale_after
        for rank, bound in enumerate(self._ticking):
            for account in filter(self.owns, bound.tick_accounts(self._latest, unseen_due)):
                order = Order(self._event, 1, rank, account, 0, 0)
                self._evaluate(bound, account, self._latest_snapshot(account), now, order, None)
        self._report_slots(now)

    def _report_slots(self, now: float) -> None:
        for rank, bound in enumerate(self._reports):
            inst = bound.instance
            decision = decide(bound.schedule, self._slots.get(inst.name), now, inst.missed)
            if decision.slot is None or decision.action == "none":
                continue
            self._slots[inst.name] = decision.slot
            if decision.action == "send":
                self._out.append(self._report_part(rank, bound, now, decision.slot, decision.late))

    def _report_part(self, rank: int, bound: Bound, now: float, slot: float, late: bool) -> ReportPart:
        accounts = [a for a in report_accounts(bound, self._latest) if self.owns(a)]
        snapshots = {a: self._latest_snapshot(a) for a in accounts}
        order = Order(self._event, 2, rank, "", 0, 0)
        return ReportPart(order, now, bound.name, slot, late, snapshots, frozenset(self._latest))


# ---------------------------------------------------------------- reports and output order


def _report(plan: Plan, parts: list[ReportPart]) -> list[Fired]:
    """The alerts of one report slot from every share's part, as ``run_report`` builds them."""
    first = parts[0]
    bound = plan.get(first.instance)
    assert bound is not None
    seen = frozenset().union(*(p.seen for p in parts))
    newest = {a: s for p in parts for a, s in p.snapshots.items()}
    snapshots = {a: newest.get(a) for a in report_accounts(bound, seen)}
    alerts = report_alerts(bound, snapshots, first.slot, first.late, first.at)
    return [Fired(first.order._replace(nth=i), first.at, a) for i, a in enumerate(alerts)]


def collect(plan: Plan, items: Iterable[Item]) -> Iterator[Fired]:
    """Alerts in order: report parts of one slot (adjacent in an ordered stream) become the
    report's alerts, watermarks are dropped."""
    parts: list[ReportPart] = []
    for item in items:
        if parts and not (isinstance(item, ReportPart) and item.order[:3] == parts[0].order[:3]):
            yield from _report(plan, parts)
            parts = []
        if isinstance(item, ReportPart):
            parts.append(item)
        elif isinstance(item, Fired):
            yield item
    if parts:
        yield from _report(plan, parts)
