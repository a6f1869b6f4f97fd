"""The synchronous core of the ingestor: frames in, snapshots, quarantine entries and counters out.

:meth:`Ingestor.accept` parses a frame into a pending batch (no I/O) and :meth:`Ingestor.flush`
writes the pending batch to Redis. When Redis is unavailable the batch is kept and the next flush
retries it. Every account of every frame is published: memory stays bounded by the number of
accounts, not of frames, because beyond ``max_pending`` pending snapshots only the newest snapshot
of each account is kept (the dispatcher reads ``latest:{account}`` anyway, so an older snapshot of
an account adds nothing), and only the newest ``max_pending`` quarantine entries (diagnostics).
Alerts queued with :meth:`Ingestor.queue_alerts` (the feed's ``feed_down``) ride in the same batch
and are never dropped. They go to the snapshots stream, as entries with the field ``alert`` (the
Alert JSON) instead of ``account``, which the dispatcher forwards to the alerts stream unchanged:
the ingestor's Redis user may write its own keys only, never the alerts stream (monitorx.aclcmd).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from ingestor.frames import ParsedFrame, QuarantineEntry, SequenceClock, parse_frame
from shared import metrics as M
from shared.keys import (
    COUNTER_FRAMES,
    COUNTER_INVALID_VALUES,
    COUNTER_MALFORMED,
    DISPATCH_GROUP,
    FEED_ALERT_FIELD,
    QUARANTINE_MAXLEN,
    Keys,
)
from shared.models import Alert, Snapshot
from shared.redisio import Outage, Publisher, ensure_group, safe_trim
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

TRIM_EVERY = 1000
"""Snapshots published between two trims of the snapshot stream."""
FEED = str(IngestSettings.model_fields["feed_name"].default)
"""The ``feed`` label of the frame counts when none is given (the ``feed_name`` setting's default)."""
FEED_COUNTS = {COUNTER_FRAMES: M.FEED_FRAMES, COUNTER_MALFORMED: M.FEED_MALFORMED}
"""Counters of a batch also counted per feed in ``Keys.metrics``, with the same flush."""
MAX_PENDING = 10_000
"""Pending snapshots past which only the newest snapshot of each account is kept (while Redis is
unavailable, or for a frame with more accounts than this); also the most quarantine entries kept."""


@dataclass
class _Batch:
    """Writes not yet in Redis."""

    snapshots: list[Snapshot] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    alerts: list[Alert] = field(default_factory=list)
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Hash key -> fields to set (the newest fields of a key win)."""

    def empty(self) -> bool:
        return not (self.snapshots or self.quarantine or self.counters or self.alerts or self.hashes)

    def add(self, parsed: ParsedFrame) -> None:
        self.snapshots.extend(parsed.snapshots)
        self.quarantine.extend(parsed.quarantined)
        counts = {
            COUNTER_FRAMES: 1,
            COUNTER_MALFORMED: len(parsed.quarantined),
            COUNTER_INVALID_VALUES: sum(len(s.invalid) for s in parsed.snapshots),
        }
        self.counters.update({name: n for name, n in counts.items() if n})

    def bound(self, limit: int) -> tuple[int, int]:
        """Past ``limit`` pending snapshots keep only the newest of each account (no account is
        ever dropped); keep the newest ``limit`` quarantine entries. Returns how many snapshots
        were superseded and how many quarantine entries dropped."""
        superseded = dropped = 0
        if len(self.snapshots) > limit:
            kept = _coalesce(self.snapshots)
            superseded, self.snapshots = len(self.snapshots) - len(kept), kept
        if len(self.quarantine) > limit:
            dropped = len(self.quarantine) - limit
            del self.quarantine[:-limit]
        return superseded, dropped


def _coalesce(snapshots: list[Snapshot]) -> list[Snapshot]:
    """The newest snapshot of each account, oldest first."""
    newest: dict[str, Snapshot] = {}
    for snap in snapshots:
        current = newest.get(snap.account)
        if current is None or (snap.observed_at, snap.seq) >= (current.observed_at, current.seq):
            newest[snap.account] = snap
    return sorted(newest.values(), key=lambda s: (s.observed_at, s.seq))


class Ingestor:
    """Frames to Redis. Thread-safe: :meth:`accept` may run while another thread flushes."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int,
        trim_every: int = TRIM_EVERY,
        max_pending: int = MAX_PENDING,
        feed: str = FEED,
    ) -> None:
        self._r = r
        self._keys = keys
        self._feed = feed
        self._publisher = Publisher(r, keys)
        self._stream_maxlen = stream_maxlen
        self._trim_every = trim_every
        self._max_pending = max_pending
        self._clock = SequenceClock()
        self._pending = _Batch()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._group_ready = False
        self._since_trim = 0
        self.outage = Outage("ingestor")
        """Redis availability as the writes see it (logged once per change)."""

    def accept(self, text: str, received_at: float) -> ParsedFrame:
        """Parse one frame into the pending batch; no I/O. Never raises."""
        parsed = parse_frame(text, received_at, self._clock.next)
        with self._lock:
            self._pending.add(parsed)
            self._pending.bound(self._max_pending)  # only coalesces: every account is kept
        return parsed

    def queue_alerts(self, alerts: Sequence[Alert], hashes: Mapping[str, Mapping[str, str]]) -> None:
        """Queue alerts for the snapshots stream (field ``alert``; the dispatcher forwards them to
        ``keys.alerts`` and counts them) and hash fields to set, written by the next flush after
        the pending snapshots; kept, in order, however long Redis is unavailable. No I/O."""
        with self._lock:
            self._pending.alerts.extend(alerts)
            for key, fields in hashes.items():
                self._pending.hashes[key] = dict(fields)

    @property
    def pending(self) -> int:
        """Snapshots and quarantine entries not yet written."""
        with self._lock:
            return len(self._pending.snapshots) + len(self._pending.quarantine)

    def flush(self) -> bool:
        """Write everything pending; on a Redis error keep it for the next call and return False."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, _Batch()
            if batch.empty():
                return True
            try:
                self._write(batch)
            except redis.RedisError as exc:
                self._give_back(batch)
                self._group_ready = False  # Redis may come back empty: create the group again
                self.outage.failed(exc)
                return False
            self.outage.succeeded()
            self._maybe_trim()
            return True

    def _give_back(self, batch: _Batch) -> None:
        """Put an unwritten batch back in front of what arrived meanwhile."""
        with self._lock:
            newer = self._pending
            batch.snapshots.extend(newer.snapshots)
            batch.quarantine.extend(newer.quarantine)
            batch.counters.update(newer.counters)
            batch.alerts.extend(newer.alerts)
            batch.hashes.update(newer.hashes)
            superseded, dropped = batch.bound(self._max_pending)
            self._pending = batch
        if superseded or dropped:
            log.warning(
                "Redis unavailable: keeping the newest snapshot of each of %d accounts (%d older "
                "snapshots superseded, %d quarantine entries dropped)",
                *(len(batch.snapshots), superseded, dropped),
            )

    def _write(self, batch: _Batch) -> None:
        """Snapshots in one round trip (Publisher), then quarantine, alerts, hashes and counters in another.
        Each part is cleared from ``batch`` once written, so a failure retries only the rest."""
        if not self._group_ready:
            ensure_group(self._r, self._keys.snapshots, DISPATCH_GROUP)
            self._group_ready = True
        if batch.snapshots:
            self._publisher.publish(batch.snapshots)
            self._since_trim += len(batch.snapshots)
            batch.snapshots = []
        if not batch.empty():
            self._write_side(batch)
            batch.quarantine, batch.counters, batch.alerts, batch.hashes = [], Counter(), [], {}

    def _write_side(self, batch: _Batch) -> None:
        pipe = self._r.pipeline(transaction=False)
        for entry in batch.quarantine:
            pipe.xadd(self._keys.quarantine, entry.fields(), maxlen=QUARANTINE_MAXLEN, approximate=True)  # type: ignore[arg-type]
        for alert in batch.alerts:
            pipe.xadd(self._keys.snapshots, {FEED_ALERT_FIELD: alert.model_dump_json()})
        for key, fields in batch.hashes.items():
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        for name, count in batch.counters.items():
            pipe.hincrby(self._keys.counters, name, count)
            if name in FEED_COUNTS:
                M.count(pipe, self._keys, FEED_COUNTS[name], {"feed": self._feed}, count)
        pipe.execute()

    def _maybe_trim(self) -> None:
        """Every ``trim_every`` published snapshots, trim the stream (never past unread entries)."""
        if self._since_trim < self._trim_every:
            return
        try:
            ensure_group(self._r, self._keys.snapshots, DISPATCH_GROUP)
            removed = safe_trim(self._r, self._keys.snapshots, self._stream_maxlen)
        except redis.RedisError as exc:
            log.warning("trimming %s failed (will retry): %s", self._keys.snapshots, exc)
            return
        self._since_trim = 0
        log.debug("trimmed %d entries from %s", removed, self._keys.snapshots)
