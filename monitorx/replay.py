"""Offline replay of a recording through the engine, in virtual time (``monitorx backtest``).

:class:`Replay` drives the engine as the live pipeline does (ingestor -> dispatcher -> workers),
with the engine's in-memory store (``engine.store.MemoryStore``) and a virtual clock:

* every frame is parsed as the ingestor parses it (``ingestor.frames``, ``ingestor.normalize``);
  a snapshot's time is the frame's ``received_at``;
* every snapshot is evaluated by each instance routed on it (``Plan.for_snapshot``) at
  now = received_at, through ``engine.store.evaluate_pair``: every frame, no latest-wins
  coalescing (the legacy prototype ran every check on every frame);
* a virtual tick every ``tick`` seconds from the first frame evaluates the time-driven pairs
  (``engine.tick.time_driven``) on the newest snapshot of each account, then handles the report
  slots (``engine.tick.report_decision``), as ``dispatcher.service.Dispatcher.tick`` does.

State, the ``_now`` rule, ticks and slots are the engine's; nothing of them is written here.

**The fast path** (``--jobs`` over 1): the checks are pure, so their evaluations on a frame's
snapshots need no alert state and can run ahead, in parallel processes, on stretches of the
recording (:class:`Screener`, ``monitorx.replay_pool``). Each sends back, per account, the mask
of the routes whose evaluation found a breach or raised. In recording order, a pair at rest
whose route's bit is clear is settled without a snapshot: the engine would find it unchanged
(``engine.assess.pair_at_rest``); any other pair is evaluated by the engine on the snapshot
(its frame read again by offset). Nothing of a check is written twice: the screeners run the
check's own ``evaluate``. ``tests/test_golden.py`` runs both ways on the same recordings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from engine.assess import pair_at_rest, report_accounts, report_alerts
from engine.plan import Bound, Plan
from engine.store import MemoryStore, evaluate_pair
from engine.tick import report_decision, time_driven
from ingestor import frames
from ingestor.normalize import Normalizer
from shared.models import Alert, Snapshot

DEFAULT_TICK = 5.0
"""Seconds of virtual time between two ticks (the dispatcher's MONITORX_TICK_SECONDS default)."""


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

    def inside(self, t: float) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


SCAN_FIELDS = ("lines", "bad_lines", "outside", "frames", "malformed_frames")
"""Counters of the screening phase (``Screener``); the others belong to the ordered phase."""


@dataclass
class Stats:
    lines: int = 0
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
    settled: int = 0
    """Evaluations settled by the fast path, without a snapshot."""

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


# ---------------------------------------------------------------- the fast path: screening

QUARANTINED = -1
"""The mask of an account value that is not an object (quarantined, never evaluated)."""
UNSCREENED = None
"""No mask: every route of the account is evaluated by the engine."""


class Scan(NamedTuple):
    """One frame for the ordered phase: its time, where to read it again, and what screening found."""

    t: float
    offset: int
    """Byte offset of the recording line (-1 when the frame does not come from a file)."""
    size: int
    """Accounts in the frame's ``pos`` (they all take a snapshot sequence number); -1 when the
    frame is malformed."""
    accounts: Sequence[tuple[int, str, int | None]]
    """``(rank, account, mask)`` of each account of the frame some instance covers: bit ``i`` of
    the mask set when route ``i``'s evaluation found a breach or raised; QUARANTINED when the
    account's value is not an object; UNSCREENED (None)."""


class Screener:
    """Decodes each frame and finds which accounts it covers; with ``evaluate``, it also runs
    every route's check on each account's snapshot (the fast path: free of alert state, so any
    stretch of a recording can be screened in any process)."""

    def __init__(
        self, plan: Plan, options: Options, stats: Stats | None = None, evaluate: bool = False
    ) -> None:
        self.plan = plan
        self.options = options
        self.stats = stats if stats is not None else Stats()
        self.evaluate = evaluate
        self._covered: dict[str, bool] = {}
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
                yield Scan(t, offset, -1, ()), None
                continue
            yield self._scan(t, offset, pos), pos

    def _scan(self, t: float, offset: int, pos: dict[str, Any]) -> Scan:
        covered = [(rank, account) for rank, account in enumerate(pos) if self._covers(account)]
        return Scan(t, offset, len(pos), [(n, a, self._mask(a, pos[a], t)) for n, a in covered])

    def _covers(self, account: str) -> bool:
        """False when no instance covers the account (such accounts are parsed live, never used)."""
        covered = self._covered.get(account)
        if covered is None:
            covered = self._covered[account] = any(
                b.instance.covers(account) for b in self.plan.bound.values()
            )
        return covered

    def _mask(self, account: str, obj: Any, t: float) -> int | None:
        if type(obj) is not dict:
            return QUARANTINED
        if not self.evaluate:
            return UNSCREENED
        snap, mask = self._normalize(account, obj, t), 0
        for index, bound in enumerate(self.plan.for_snapshot(account)):
            if _alarming(bound, snap, t):
                mask |= 1 << index
        return mask


def _alarming(bound: Bound, snap: Snapshot, now: float) -> bool:
    """True when the check finds a breach on the snapshot, or raises."""
    try:
        return any(f.breached for f in bound.check.evaluate(snap, bound.params, now))
    except Exception:  # noqa: BLE001 - the engine evaluates it again and reports the error
        return True


# ---------------------------------------------------------------- in recording order

Fetch = Callable[[int], dict[str, Any]]
"""The ``pos`` object of the frame at a byte offset of the recording."""


def _no_fetch(offset: int) -> dict[str, Any]:
    raise RuntimeError("this replay was given every frame's objects: nothing is read again")


class _Entry:
    """One account object: the object itself (None: read again from the recording when needed)
    and its snapshot once built."""

    __slots__ = ("account", "obj", "offset", "seq", "snap", "t")

    def __init__(self, account: str, obj: dict[str, Any] | None, offset: int, t: float, seq: int) -> None:
        self.account, self.obj, self.offset, self.t, self.seq = account, obj, offset, t, seq
        self.snap: Snapshot | None = None


class Replay:
    """The engine over the frames in recording order: pair states (``MemoryStore``), ticks and
    reports. :meth:`run` replays ``(received_at, text)`` records in this process; :meth:`apply`
    takes scans from screeners elsewhere (``monitorx.replay_pool``), with a ``fetch`` that reads
    a frame again when a snapshot is needed."""

    def __init__(self, plan: Plan, options: Options, fetch: Fetch = _no_fetch) -> None:
        self.plan = plan
        self.options = options
        self.stats = Stats()
        self.store = MemoryStore()
        self._fetch = fetch
        self._latest: dict[str, _Entry] = {}
        self._normalize = Normalizer(trusted=True)  # objects come from decode: JSON as decoded
        self._slots: dict[str, float] = {}
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

    def frame(self, scan: Scan, pos: dict[str, Any] | None) -> None:
        """Evaluate each account snapshot of one frame, unless the fast path settled it."""
        t = scan.t
        if self._t0 is None:
            self._t0 = t
        self._last = t if self._last is None else max(self._last, t)
        self.offset = scan.offset
        if scan.size < 0:
            return
        base, self._seq = self._seq, self._seq + scan.size
        for rank, account, mask in scan.accounts:
            if mask == QUARANTINED:
                self.stats.quarantined += 1
                continue
            entry = _Entry(account, None if pos is None else pos[account], scan.offset, t, base + rank + 1)
            self._account(entry, mask)

    def _account(self, entry: _Entry, mask: int | None) -> None:
        self.stats.snapshots += 1
        current = self._latest.get(entry.account)
        if current is None or entry.t >= current.t:
            self._latest[entry.account] = entry
        for index, bound in enumerate(self.plan.for_snapshot(entry.account)):
            if mask is not None and not mask >> index & 1 and self._at_rest(bound, entry.account):
                self.stats.evaluations += 1
                self.stats.settled += 1
            else:
                self._evaluate(bound, entry.account, self._snapshot(entry), entry.t)

    def _at_rest(self, bound: Bound, account: str) -> bool:
        record = self.store.pairs.get((bound.name, account))
        return record is None or pair_at_rest(record.states, bound.check.forget_on_clear)

    def _evaluate(self, bound: Bound, account: str, snap: Snapshot | None, now: float) -> None:
        self.stats.evaluations += 1
        evaluate_pair(self.store, bound, account, snap, now, lambda: now)
        if self.store.alerts:
            self._out.extend(Fired(now, a) for a in self.store.alerts)
            self.store.alerts.clear()

    def _snapshot(self, entry: _Entry) -> Snapshot:
        """The entry's snapshot, built once (an object that is a dict always normalizes:
        ``parse_account`` quarantines only non-objects and normalizer errors, and the trusted
        normalizer raises none)."""
        if entry.snap is None:
            obj = entry.obj if entry.obj is not None else self._fetch(entry.offset)[entry.account]
            entry.obj = None  # the snapshot keeps it (raw)
            entry.snap = self._normalize(entry.account, obj, entry.t, entry.seq)
        return entry.snap

    def _latest_snapshot(self, account: str) -> Snapshot | None:
        entry = self._latest.get(account)
        return None if entry is None else self._snapshot(entry)

    # -------------------------------------------------------- ticks

    def _ticks_until(self, t: float, inclusive: bool) -> None:
        """Run every tick before ``t`` (or at ``t`` too): frames at a tick's time come first."""
        if self._t0 is None:
            return
        while (now := self._t0 + self.stats.ticks * self.options.tick) < t or (inclusive and now == t):
            self.stats.ticks += 1
            self._tick(now)

    def _tick(self, now: float) -> None:
        """The time-driven checks of every account they cover, then the report slots."""
        assert self._t0 is not None
        for bound, account in time_driven(self.plan, self._latest, now, self._t0):
            self._evaluate(bound, account, self._latest_snapshot(account), now)
        for bound in self.plan.reports():
            self._report_slot(bound, now)

    def _report_slot(self, bound: Bound, now: float) -> None:
        name = bound.instance.name
        decision = report_decision(bound, self._slots.get(name), now)
        if decision.slot is None or decision.action == "none":
            return
        self._slots[name] = decision.slot
        if decision.action == "send":
            snapshots = {a: self._latest_snapshot(a) for a in report_accounts(bound, self._latest)}
            alerts = report_alerts(bound, snapshots, decision.slot, decision.late, now)
            self._out.extend(Fired(now, a) for a in alerts)
