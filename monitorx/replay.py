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
  (``engine.schedule.decide``), as ``dispatcher.service.Dispatcher.tick`` does;
* the state of each (instance, account) pair moves through ``engine.assess.assess`` exactly as
  ``engine.store.evaluate_pair`` moves it in Redis, ``_now`` rule included (an evaluation at or before
  the pair's newest one changes nothing).

Three shortcuts save most of the work and change no result:

* quiet pairs: when every key of a pair is at rest and nothing is breached, assess would change
  nothing and alert nothing, so it is not called;
* screens: for a quiet pair, a check's screen (``monitorx.screens``) decides on the raw account
  object whether anything may be breached; when nothing may, neither the snapshot is built nor
  evaluate run (snapshots are built only when an evaluation, a tick or a report needs them);
* reuse: a snapshot to build whose account object is identical to the one of the account's
  previous built snapshot (same keys in the same order, same values of the same types) is that
  snapshot with the new time, and shares its findings of the instances that are not
  time-driven, whose evaluate depends on snapshot and params only.

A replay runs in two phases. Screening (:class:`Screener`) decodes each frame and runs the
screens; it keeps no alert state, so stretches of a recording can be screened in parallel
processes (``monitorx.replay_pool``), each sending back small :class:`Scan` records. The ordered
phase (:class:`Replay`) applies the scans in recording order: pair states, ticks and reports,
reading a frame again by its offset when an evaluation, a tick or a report needs its snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel

from engine.assess import assess, pair_at_rest, quiet_states, report_accounts, report_alerts
from engine.checks.base import Evaluate, Finding
from engine.plan import Bound, Plan
from engine.schedule import next_slot
from engine.state import INITIAL, KeyState
from engine.tick import report_decision, time_driven
from ingestor import frames
from ingestor.normalize import Normalizer
from monitorx.screens import AGE_SCREENS, SCREENS, Screen
from shared.feed import Layouts
from shared.models import Alert, Snapshot

DEFAULT_TICK = 5.0
"""Seconds of virtual time between two ticks (the dispatcher's MONITORX_TICK_SECONDS default)."""

Findings = tuple[Finding, ...]


@dataclass(frozen=True)
class Fired:
    """An alert the pipeline would have sent, at virtual time ``at``."""

    at: float
    alert: Alert


@dataclass(frozen=True)
class Options:
    tick: float = DEFAULT_TICK
    start: float | None = None
    """Frames received before this unix time are left out."""
    end: float | None = None
    """Frames received at or after this unix time are left out."""
    reuse: bool = True
    """Reuse the snapshot and findings of an account object identical to the previous built one."""
    screen: bool = True
    """Let the checks' screens settle the evaluations of quiet pairs (``monitorx.screens``)."""

    def inside(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


SCAN_FIELDS = ("lines", "bytes_read", "bad_lines", "outside", "frames", "malformed_frames")
"""Counters of the screening phase (``Screener``); the others belong to the ordered phase."""


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
    stepped: int = 0
    """Evaluations that moved a pair's state from the screeners' verdicts, without a snapshot."""

    @classmethod
    def merged(cls, ordered: Stats, scans: Iterable[Stats]) -> Stats:
        """The counts of a parallel replay: the screening counters summed over the screeners,
        the rest from the ordered phase."""
        total, parts = dataclasses.replace(ordered), list(scans)
        for name in SCAN_FIELDS:
            setattr(total, name, sum(getattr(part, name) for part in parts))
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


READ_BUFFER = 2**20
"""Bytes read at a time: frames are tens of KiB, and the default buffer (8 KiB) reads each in
several system calls (a fifth of a day's replay time went into reading)."""


def read_recording(
    path: Path, stats: Stats, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[float, str]]:
    """``(received_at, frame text)`` of each line of a recording (``ingestor.record``); lines that
    are not records are counted in ``stats.bad_lines`` and skipped, blank lines ignored."""
    for _, t, text in records_at(path, stats, progress=progress):
        yield t, text


def records_at(
    path: Path,
    stats: Stats,
    start: int = 0,
    end: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, float, str]]:
    """``(offset, received_at, frame text)`` of the lines that start in ``[start, end)`` bytes
    (``start`` at the beginning of a line), as :func:`read_recording` reads them."""
    with path.open("rb", buffering=READ_BUFFER) as f:
        f.seek(start)
        offset = start
        for line in f:
            if end is not None and offset >= end:
                return
            at, offset = offset, offset + len(line)
            stats.bytes_read += len(line)
            if progress is not None:
                progress(offset)
            if line.isspace():  # (strip() would copy every line)
                continue
            stats.lines += 1
            record = _record(line)
            if record is None:
                stats.bad_lines += 1
                continue
            yield at, *record


def frame_at(path: Path, offset: int) -> dict[str, Any]:
    """The ``pos`` object of the well-formed frame on the recording line at ``offset``."""
    with path.open("rb") as f:
        f.seek(offset)
        record = _record(f.readline())
    pos = None if record is None else load_pos(record[1])[0]
    if pos is None:
        raise ValueError(f"{path}: no frame with a pos object at byte {offset}")
    return pos


# ---------------------------------------------------------------- state of one pair


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
            if state == INITIAL:
                self.states.pop(key, None)
            else:
                self.states[key] = state
        self.quiet = pair_at_rest(self.states, forget_on_clear)


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
    if types != list(map(type, old.values())):
        return False
    kinds = set(types)
    if dict in kinds or list in kinds:
        return False
    if float not in kinds or 0.0 not in new.values():
        return True
    return _zero_signs(new.values()) == _zero_signs(old.values())


def _zero_signs(values: Iterable[Any]) -> list[float]:
    return [math.copysign(1.0, v) for v in values if v == 0.0 and type(v) is float]


# ---------------------------------------------------------------- phase one: screening

QUARANTINED = -1
"""The mask of an account value that is not an object (quarantined, never evaluated)."""


class Scan(NamedTuple):
    """What screening found in one frame: all the ordered phase needs, without the frame itself
    (which it reads again by ``offset`` if a pair turns out to need a snapshot)."""

    t: float
    offset: int
    """Byte offset of the recording line (-1 when the frame does not come from a file)."""
    size: int
    """Accounts in the frame's ``pos`` (they all take a snapshot sequence number); -1 when the
    frame is malformed."""
    shape: Shape
    """``(rank, account)`` of each account of the frame some instance covers (the same object
    for every frame of one screener with the same accounts in the same places)."""
    masks: Sequence[int]
    """One per account of ``shape``: bit ``i`` is set when route ``i`` may find a breach (its
    screen said so, or it has none); QUARANTINED when the account's value is not an object."""
    verdicts: Sequence[Verdicts] = ()
    """Empty, or one per account of ``shape``: route index -> the ``(key, breached)`` of each
    finding of the route's evaluate at the frame's time, for the routes whose bit is set (and
    whose evaluate did not raise)."""


Shape = tuple[tuple[int, str], ...]
Verdicts = Mapping[int, Sequence[tuple[str, bool]]]
NO_VERDICTS: Verdicts = MappingProxyType({})
SHAPES_LIMIT = 1024
"""Distinct shapes a screener keeps before it starts again."""


@dataclass(frozen=True)
class _Screens:
    """The screens of one account's routes: ``always`` has the bits of the routes without one."""

    always: int
    screens: tuple[tuple[int, Screen, BaseModel], ...]
    """``(bit, screen, params)`` of each route with a screen."""
    evaluates: tuple[tuple[Evaluate[Any], BaseModel], ...]
    """Each route's evaluate and params, by route index."""

    def verdicts(self, snap: Snapshot, mask: int) -> Verdicts:
        """The verdicts of the routes whose bit is set, at the snapshot's time."""
        found: dict[int, list[tuple[str, bool]]] = {}
        for index, (evaluate, params) in enumerate(self.evaluates):
            if mask >> index & 1:
                try:
                    found[index] = [(f.key, f.breached) for f in evaluate(snap, params, snap.observed_at)]
                except Exception:  # noqa: BLE001 - the ordered phase evaluates again and reports it
                    continue
        return found

    def mask(self, obj: dict[str, Any], layouts: Layouts) -> int:
        mask, layout = self.always, None
        for bit, screen, params in self.screens:
            if layout is None:
                layout = layouts.of(tuple(obj))
            try:
                if screen(obj, layout, params):
                    mask |= bit
            except Exception:  # noqa: BLE001 - a screen that cannot tell leaves it to evaluate
                mask |= bit
        return mask


class Screener:
    """Phase one of a replay, free of alert state, so that it can run on any stretch of a
    recording in any process: decodes each frame and runs the screens of every account's routes
    (``Plan.for_snapshot``) on its raw object."""

    def __init__(self, plan: Plan, options: Options, stats: Stats | None = None) -> None:
        self.plan = plan
        self.options = options
        self.stats = stats if stats is not None else Stats()
        self._routes: dict[str, _Screens | None] = {}
        self._layouts = Layouts()
        self._shapes: dict[Shape, Shape] = {}
        self._normalize = Normalizer(trusted=True)

    def scan(self, records: Iterable[tuple[int, float, str]]) -> Iterator[tuple[Scan, dict[str, Any] | None]]:
        """``(scan, pos)`` of each ``(offset, received_at, text)`` record inside the window."""
        for offset, t, text in records:
            if not self.options.inside(t):
                self.stats.outside += 1
                continue
            self.stats.frames += 1
            pos, _ = load_pos(text)
            if pos is None:
                self.stats.malformed_frames += 1
                yield Scan(t, offset, -1, (), ()), None
                continue
            yield self._scan(t, offset, pos), pos

    def _scan(self, t: float, offset: int, pos: dict[str, Any]) -> Scan:
        places, masks, verdicts = [], [], []
        for rank, (account, obj) in enumerate(pos.items()):
            try:
                screens = self._routes[account]
            except KeyError:
                screens = self._routes[account] = self._screens_of(account)
            if screens is None:
                continue
            places.append((rank, account))
            mask = screens.mask(obj, self._layouts) if type(obj) is dict else QUARANTINED
            masks.append(mask)
            if mask > 0 and self.options.screen:
                verdicts.append(screens.verdicts(self._normalize(account, obj, t), mask))
            else:
                verdicts.append(NO_VERDICTS)
        shape = tuple(places)
        if len(self._shapes) >= SHAPES_LIMIT:
            self._shapes.clear()
        return Scan(t, offset, len(pos), self._shapes.setdefault(shape, shape), masks, verdicts)

    def _screens_of(self, account: str) -> _Screens | None:
        """None when no instance covers the account (such accounts are parsed live, never used)."""
        if not any(b.instance.covers(account) for b in self.plan.bound.values()):
            return None
        always, screens = 0, []
        bounds = self.plan.for_snapshot(account)
        for index, bound in enumerate(bounds):
            screen = SCREENS.get(bound.check.name) if self.options.screen else None
            if screen is None:
                always |= 1 << index
            else:
                screens.append((1 << index, screen, bound.params))
        return _Screens(always, tuple(screens), tuple((b.check.evaluate, b.params) for b in bounds))


# ---------------------------------------------------------------- phase two: in order

Fetch = Callable[[int], dict[str, Any]]
"""The ``pos`` object of the frame at a byte offset of the recording."""


def _no_fetch(offset: int) -> dict[str, Any]:
    raise RuntimeError("this replay was given every frame's objects: nothing is read again")


class _Entry:
    """One account object: the object itself (None when it is read again from the recording if
    needed), its snapshot once built, and the findings of the instances whose evaluate depends on
    snapshot and params only (shared by a run of identical objects)."""

    __slots__ = ("account", "findings", "obj", "offset", "seq", "snap", "t")

    def __init__(self, account: str, obj: dict[str, Any] | None, offset: int, t: float, seq: int) -> None:
        self.account, self.obj, self.offset, self.t, self.seq = account, obj, offset, t, seq
        self.snap: Snapshot | None = None
        self.findings: dict[str, Findings] = {}


@dataclass(frozen=True)
class _Route:
    """One instance evaluated on each snapshot of an account, with the pair's state."""

    index: int
    """The instance's position in the account's routes."""
    bit: int
    """``1 << index``: the route's bit in a scan's mask."""
    bound: Bound
    evaluate: Evaluate[Any]
    params: BaseModel
    reusable: bool
    """Findings may be reused for an identical object: the check is not time-driven."""
    pair: PairState


def _aged_out(bound: Bound, age: float) -> bool:
    """True when the check's age screen settles an evaluation on a snapshot of that age."""
    age_screen = AGE_SCREENS.get(bound.check.name)
    if age_screen is None:
        return False
    try:
        return not age_screen(age, bound.params)
    except Exception:  # noqa: BLE001 - a screen that cannot tell leaves the decision to evaluate
        return False


def _any_breached(found: Findings) -> bool:
    for finding in found:
        if finding.breached:
            return True
    return False


class Replay:
    """Phase two of a replay: alert state, ticks and reports, over the scans in recording order.
    :meth:`run` replays ``(received_at, text)`` records in this process (screening included);
    :meth:`apply` takes scans from screeners elsewhere (``monitorx.replay_pool``), with a
    ``fetch`` that reads a frame again when a snapshot is needed."""

    def __init__(self, plan: Plan, options: Options, fetch: Fetch = _no_fetch) -> None:
        self.plan = plan
        self.options = options
        self.stats = Stats()
        self._fetch = fetch
        self._pairs: dict[tuple[str, str], PairState] = {}
        self._latest: dict[str, _Entry] = {}
        self._known: dict[str, _Entry] = {}
        self._normalize = Normalizer(trusted=True)  # objects come from decode: JSON as decoded
        self._routes: dict[str, tuple[_Route, ...]] = {}
        self._reports = plan.reports()
        self._slots: dict[str, float] = {}
        self._due: dict[str, float] = {}
        """Instance -> its next slot after the last one handled."""
        self._out: list[Fired] = []
        self._seq = 0
        self._t0: float | None = None
        self._last: float | None = None
        self.offset = 0
        """Byte offset of the newest frame applied (progress)."""

    def run(self, records: Iterable[tuple[float, str]]) -> Iterator[Fired]:
        """Replay ``(received_at, frame text)`` records; yields the alerts in order."""
        screener = Screener(self.plan, self.options, self.stats)
        return self.apply(screener.scan((-1, t, text) for t, text in records))

    def apply(self, scans: Iterable[tuple[Scan, dict[str, Any] | None]]) -> Iterator[Fired]:
        """Replay scans in recording order, each with its frame's ``pos`` or None (then objects
        are fetched when needed)."""
        for scan, pos in scans:
            self._ticks_until(scan.t, inclusive=False)
            self.frame(scan, pos)
            yield from self._drain()
        if self._last is not None:
            self._ticks_until(self._last, inclusive=True)
        yield from self._drain()

    def _drain(self) -> list[Fired]:
        out, self._out = self._out, []
        return out

    # -------------------------------------------------------- frames

    def frame(self, scan: Scan, pos: dict[str, Any] | None) -> None:
        """Evaluate each account snapshot of one frame whose pair is not settled by its screen."""
        t = scan.t
        if self._t0 is None:
            self._t0 = t
        self._last = t if self._last is None else max(self._last, t)
        self.offset = scan.offset
        if scan.size < 0:
            return
        base, self._seq = self._seq, self._seq + scan.size
        verdicts = scan.verdicts
        for i, ((rank, account), mask) in enumerate(zip(scan.shape, scan.masks, strict=True)):
            if mask == QUARANTINED:
                self.stats.quarantined += 1
                continue
            try:
                routes = self._routes[account]
            except KeyError:
                routes = self._routes[account] = self._routes_of(account)
            obj = None if pos is None else pos[account]
            entry = _Entry(account, obj, scan.offset, t, base + rank + 1)
            self._account(account, entry, mask, verdicts[i] if verdicts else NO_VERDICTS, routes)

    def _routes_of(self, account: str) -> tuple[_Route, ...]:
        return tuple(
            _Route(
                index,
                1 << index,
                bound,
                bound.check.evaluate,
                bound.params,
                self.options.reuse and "tick" not in bound.check.triggers,
                self._pair(bound.name, account),
            )
            for index, bound in enumerate(self.plan.for_snapshot(account))
        )

    def _account(
        self,
        account: str,
        entry: _Entry,
        mask: int,
        verdicts: Verdicts,
        routes: tuple[_Route, ...],
    ) -> None:
        stats, t = self.stats, entry.t
        stats.snapshots += 1
        current = self._latest.get(account)
        if current is None or t >= current.t:
            self._latest[account] = entry
        for route in routes:
            pair = route.pair
            last = pair.last
            if last is not None and t <= last:
                continue  # as _evaluate: an evaluation at or before the pair's newest changes nothing
            pair.last = t
            stats.evaluations += 1
            if pair.quiet and not mask & route.bit:
                stats.screened += 1
                continue
            verdict = verdicts.get(route.index)
            if verdict is None:
                self._on_snapshot(route, account, entry, t)
            elif not self._step(route, verdict, t):
                self._assess(route.bound, pair, account, self._snapshot(entry), t)

    def _step(self, route: _Route, verdict: Sequence[tuple[str, bool]], t: float) -> bool:
        """Move the pair from a screener's verdict alone, as assess would; False when an alert is
        due (only assess, with the snapshot, can render it)."""
        pair = route.pair
        if pair.quiet and not any(breached for _, breached in verdict):
            self.stats.screened += 1
            return True
        states = quiet_states(route.bound, pair.states, t, verdict)
        if states is None:
            return False
        self.stats.stepped += 1
        pair.absorb(states, route.bound.check.forget_on_clear)
        return True

    def _on_snapshot(self, route: _Route, account: str, entry: _Entry, t: float) -> None:
        """``_evaluate`` of a frame's snapshot, findings reused for an identical object."""
        name = route.bound.name
        snap = self._snapshot(entry)
        found = entry.findings.get(name) if route.reusable else None
        if found is None:
            found = _run(route.evaluate, snap, route.params, t)
            if route.reusable and found is not None:
                entry.findings[name] = found
        if found is not None and route.pair.quiet and not _any_breached(found):
            return
        self._assess(route.bound, route.pair, account, snap, t, found)

    def _latest_snapshot(self, account: str) -> Snapshot | None:
        entry = self._latest.get(account)
        return None if entry is None else self._snapshot(entry)

    def _snapshot(self, entry: _Entry) -> Snapshot:
        """The entry's snapshot, built once: the previous built one of the account, retimed, with
        its findings, when the object is identical (``same_object``); else normalized (an object
        that is a dict always normalizes: ``parse_account`` quarantines only non-objects and
        normalizer errors, and the trusted normalizer raises none)."""
        if entry.snap is not None:
            return entry.snap
        obj = entry.obj if entry.obj is not None else self._fetch(entry.offset)[entry.account]
        entry.obj = None  # the snapshot keeps it (raw)
        known = self._known.get(entry.account)
        if known is not None and known.snap is not None and same_object(known.snap.raw, obj):
            self.stats.reused += 1
            entry.snap = known.snap.model_copy(update={"observed_at": entry.t, "seq": entry.seq})
            entry.findings = known.findings
        else:
            entry.snap = self._normalize(entry.account, obj, entry.t, entry.seq)
        if self.options.reuse:
            self._known[entry.account] = entry
        return entry.snap

    # -------------------------------------------------------- evaluations

    def _pair(self, instance: str, account: str) -> PairState:
        pair = self._pairs.get((instance, account))
        if pair is None:
            pair = self._pairs[(instance, account)] = PairState()
        return pair

    def _evaluate(self, bound: Bound, account: str, now: float) -> None:
        """One evaluation on a tick, as ``engine.store.evaluate_pair`` runs it, on the account's newest
        snapshot (built only when the check's ``age_screen`` cannot settle it)."""
        pair = self._pair(bound.name, account)
        if pair.last is not None and now <= pair.last:
            return
        pair.last = now
        self.stats.evaluations += 1
        entry = self._latest.get(account)
        if pair.quiet and entry is not None and self.options.screen and _aged_out(bound, now - entry.t):
            self.stats.screened += 1
            return
        snap = None if entry is None else self._snapshot(entry)
        found = _run(bound.check.evaluate, snap, bound.params, now)
        if found is not None and pair.quiet and not _any_breached(found):
            return
        self._assess(bound, pair, account, snap, now, found)

    def _assess(
        self,
        bound: Bound,
        pair: PairState,
        account: str,
        snap: Snapshot | None,
        now: float,
        found: Findings | None = None,
    ) -> None:
        """Move the pair's state as ``apply`` does and keep the alerts (``found``: the findings
        of this evaluation when already computed; None evaluates, and reports an error)."""
        result = assess(bound, account, snap, now, pair.states, now, found)
        pair.absorb(result.states, bound.check.forget_on_clear)
        self._out.extend(Fired(now, a) for a in result.alerts)

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
        """The time-driven checks of every account they cover, then the report slots."""
        assert self._t0 is not None
        for bound, account in time_driven(self.plan, self._latest, now, self._t0):
            self._evaluate(bound, account, now)
        self._report_slots(now)

    def _report_slots(self, now: float) -> None:
        for bound in self._reports:
            inst = bound.instance
            last = self._slots.get(inst.name)
            if last is not None and now < self._due[inst.name]:
                continue  # decide would answer none until the next slot
            decision = report_decision(bound, last, now)
            if decision.slot is None or decision.action == "none":
                continue
            self._slots[inst.name] = decision.slot
            self._due[inst.name] = next_slot(bound.schedule, decision.slot)
            if decision.action == "send":
                snapshots = {a: self._latest_snapshot(a) for a in report_accounts(bound, self._latest)}
                alerts = report_alerts(bound, snapshots, decision.slot, decision.late, now)
                self._out.extend(Fired(now, a) for a in alerts)
