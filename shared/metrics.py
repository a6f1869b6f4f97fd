"""Labelled counters and histograms of every process, kept in ONE Redis hash (``Keys.metrics``), so
the process serving ``/metrics`` reads them all with one ``HGETALL``: forking workers and
replicas need no multiprocess mode.

Promises:

* A field is one series: its name, then its labels as compact JSON with sorted keys, e.g.
  ``check_evaluations_total{"check":"low_balance"}`` -> an integer (``HINCRBY``). No labels:
  ``name{}``.
* A histogram ``h`` (its bucket bounds: a constant per histogram, :data:`HISTOGRAMS`) is, per
  label set, ``h_bucket{...,"le":"<bound>"}``: the observations that fell in that bucket ONLY,
  not cumulative (one ``HINCRBY`` per observation whatever the number of buckets; the reader
  cumulates, :func:`histograms`); the bucket of a value is the smallest bound ``>=`` it, as
  Prometheus' ``le``, and ``"le":"+Inf"`` for a value above the last bound; ``h_sum{...}``
  (``HINCRBYFLOAT``, seconds) and ``h_count{...}``.
* :func:`count` and :func:`observe` only queue commands on the client given (the pipeline the
  caller already sends, or a :class:`Pending`): nothing here makes a round trip of its own.
  ``HINCRBY`` is atomic: processes writing one field at once lose no count.
* :func:`parse` reads the hash back; a field it cannot read is skipped, never raised.

Every series name is a constant here (producers and the reader, ``monitorx.metrics``, use them).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.keys import Keys

Labels = Mapping[str, str]

FEED_FRAMES = "feed_frames_total"
"""Frames received, label ``feed`` (the ingestor, per flushed batch)."""
FEED_MALFORMED = "feed_frames_malformed_total"
"""Frames quarantined, label ``feed`` (the ingestor)."""
CHECK_EVALUATIONS = "check_evaluations_total"
"""Evaluation jobs run, label ``check`` (the check's name, not the instance; the worker's read)."""
CHECK_ERRORS = "check_evaluation_errors_total"
"""Evaluations whose check raised or timed out, label ``check`` (the worker)."""
CHECK_DURATION = "check_evaluation_duration_seconds"
"""Seconds the check's own code took per evaluation, label ``check`` (the worker)."""
ALERTS = "alerts_total"
"""Alerts emitted, labels ``check`` (the alert's: ``check_error``, ``feed_down``... included) and
``state`` (firing, resolved): the workers' compare-and-set script and ``engine.alerts.emit``."""
NOTIFICATIONS = "notifications_total"
"""Notifications sent, label ``receiver`` (the alerter's record)."""
NOTIFICATIONS_FAILED = "notifications_failed_total"
"""Failed send attempts, labels ``receiver`` and ``reason`` (``alerter.service.REASONS``)."""
NOTIFICATION_LATENCY = "notification_latency_seconds"
"""Seconds from the newest alert event of a notification (its ``emitted_at``) to its send done."""
DEAD_LETTERS = "dead_letters_written_total"
"""Alerts written to the dead-letter stream, label ``receiver`` (``*``: an unreadable alert)."""

CHECK_DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Bounds of :data:`CHECK_DURATION` (seconds; default 0.5 ms to 30 s, the job timeout's default)."""
NOTIFICATION_LATENCY_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
"""Bounds of :data:`NOTIFICATION_LATENCY` (seconds; default 0.1 s to an hour, ``retry_for``'s
default: it includes group waits and pacing)."""
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    CHECK_DURATION: CHECK_DURATION_BUCKETS,
    NOTIFICATION_LATENCY: NOTIFICATION_LATENCY_BUCKETS,
}
"""Every histogram and its bucket bounds."""

INF = "+Inf"


@dataclass(frozen=True)
class Series:
    """One field of the hash: ``name`` (``h_bucket``, ``h_sum``, ``h_count`` for a histogram),
    its ``labels`` (``le`` included for a bucket) and its value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    """One label set of a histogram as Prometheus wants it: cumulative ``buckets`` (bound label,
    count), every bound of the histogram and ``+Inf`` last, with ``sum`` and ``count``."""

    labels: dict[str, str]
    buckets: list[tuple[str, float]]
    sum: float
    count: float


def series_field(name: str, labels: Labels) -> str:
    """The hash field of a series: ``name`` then its labels as compact JSON with sorted keys."""
    return name + json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def bound_label(bound: float) -> str:
    """A bucket bound as its ``le`` label (``0.0005``, ``1.0``, ``+Inf``), as Prometheus' client
    writes it."""
    return INF if bound == float("inf") else repr(float(bound))


def count(client: Any, keys: Keys, name: str, labels: Labels, by: int = 1) -> None:
    """Queue ``HINCRBY`` of the series by ``by`` on ``client`` (a pipeline, or a :class:`Pending`)."""
    client.hincrby(keys.metrics, series_field(name, labels), by)


def observe(
    client: Any, keys: Keys, name: str, labels: Labels, seconds: float, buckets: Sequence[float]
) -> None:
    """Queue one observation of the histogram ``name`` on ``client``: its bucket (the smallest
    bound ``>= seconds``, else ``+Inf``), its sum and its count."""
    i = bisect_left(buckets, seconds)
    le = bound_label(buckets[i]) if i < len(buckets) else INF
    client.hincrby(keys.metrics, series_field(f"{name}_bucket", {**labels, "le": le}), 1)
    client.hincrbyfloat(keys.metrics, series_field(f"{name}_sum", labels), seconds)
    client.hincrby(keys.metrics, series_field(f"{name}_count", labels), 1)


@dataclass
class Pending:
    """Increments held for a later write: :func:`count` and :func:`observe` queue on it as on a
    pipeline (the key is ``Keys.metrics`` always). :meth:`args` hands them to a script,
    :meth:`send` to a pipeline; both leave it empty."""

    ints: dict[str, int] = field(default_factory=dict)
    floats: dict[str, float] = field(default_factory=dict)

    def hincrby(self, key: str, name: str, by: int) -> None:
        self.ints[name] = self.ints.get(name, 0) + by

    def hincrbyfloat(self, key: str, name: str, by: float) -> None:
        self.floats[name] = self.floats.get(name, 0.0) + by

    def __bool__(self) -> bool:
        return bool(self.ints or self.floats)

    def args(self) -> list[str | int]:
        """``n_ints, field, by, ..., n_floats, field, by, ...`` (floats as ``repr``)."""
        out: list[str | int] = [len(self.ints)]
        for name, by in self.ints.items():
            out += [name, by]
        out.append(len(self.floats))
        for name, value in self.floats.items():
            out += [name, repr(value)]
        self.clear()
        return out

    def send(self, pipe: Any, keys: Keys) -> None:
        """Queue every increment on ``pipe``."""
        for name, by in self.ints.items():
            pipe.hincrby(keys.metrics, name, by)
        for name, value in self.floats.items():
            pipe.hincrbyfloat(keys.metrics, name, value)
        self.clear()

    def clear(self) -> None:
        self.ints, self.floats = {}, {}


def parse(fields: Mapping[str, str]) -> list[Series]:
    """The series of an ``HGETALL`` of ``Keys.metrics`` (a decoded reply), by field; unreadable
    fields (no ``{``, bad JSON or value) are skipped."""
    found = []
    for raw, value in sorted(fields.items()):
        name, brace, text = str(raw).partition("{")
        try:
            labels = json.loads(brace + text)
            number = float(value)
        except ValueError:
            continue
        if name and isinstance(labels, dict):
            found.append(Series(name, {str(k): str(v) for k, v in labels.items()}, number))
    return found


def histograms(series: Iterable[Series], name: str, bounds: Sequence[float]) -> list[Histogram]:
    """The histogram ``name`` per label set (sorted), cumulated: every bound of ``bounds`` (plus
    any other stored one), then ``+Inf``, the count."""
    parts: dict[str, _Parts] = {}
    for s in series:
        kind = s.name[len(name) + 1 :] if s.name.startswith(f"{name}_") else ""
        if kind not in ("bucket", "sum", "count"):
            continue
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        part = parts.setdefault(series_field("", labels), _Parts(labels))
        if kind == "sum":
            part.sum = s.value
        elif kind == "count":
            part.count = s.value
        elif _bound(s.labels.get("le", "")) is not None:
            part.buckets[s.labels["le"]] = s.value
    return [parts[k].cumulated(bounds) for k in sorted(parts)]


@dataclass
class _Parts:
    """The stored fields of one label set of a histogram (``buckets``: ``le`` -> its count only)."""

    labels: dict[str, str]
    buckets: dict[str, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def cumulated(self, bounds: Sequence[float]) -> Histogram:
        finite = {bound_label(b): float(b) for b in bounds}
        finite |= {le: float(le) for le in self.buckets if le != INF}
        buckets, total = [], 0.0
        for le, _ in sorted(finite.items(), key=lambda item: item[1]):
            total += self.buckets.get(le, 0.0)
            buckets.append((le, total))
        count = max(self.count, total + self.buckets.get(INF, 0.0))
        return Histogram(self.labels, [*buckets, (INF, count)], self.sum, count)


def _bound(le: str) -> float | None:
    """The bound of an ``le`` label, None when it is no number."""
    try:
        return float(le)
    except ValueError:
        return None
