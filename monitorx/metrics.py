"""The Prometheus metrics of ``monitorx web``'s ``/metrics``: the status model read on each scrape
(:class:`StatusCollector`) and yielded as metrics named by Prometheus' conventions (prefix
``monitorx_``, units in the name, ``_total`` on counters).

Three kinds: gauges of the current figures; the unlabelled counters of ``Keys.counters``
(:data:`COUNTERS`); the labelled counters and histograms of ``Keys.metrics`` (:data:`LABELLED`,
:data:`HISTOGRAMS`, ``shared.metrics``), each family exposed even before its first sample, every
histogram with every bucket of its bounds (so series of one histogram always share their ``le``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from alerter.service import REASONS
from monitorx.status import Status, problems
from shared import keys as K
from shared import metrics as M
from shared.heartbeat import ROLES

PREFIX = "monitorx_"

COUNTERS: dict[str, str] = {
    K.COUNTER_FRAMES: "Frames received from the feeds.",
    K.COUNTER_MALFORMED: "Frames that could not be read (quarantined).",
    K.COUNTER_INVALID_VALUES: "Invalid values found in snapshots (skipped).",
    K.COUNTER_SNAPSHOTS: "Snapshots published to the snapshots stream.",
    K.COUNTER_JOBS: "Check jobs enqueued.",
    K.COUNTER_COALESCED: "Snapshots coalesced into a job already queued.",
    K.COUNTER_UNCHANGED: "Evaluations skipped: the pair at rest, its inputs unchanged.",
    K.COUNTER_EVALS: "Check evaluations run.",
    K.COUNTER_ALERTS: "Alerts emitted by the checks.",
    K.COUNTER_DELIVERED: "Alerts delivered to a receiver.",
    K.COUNTER_DEAD: "Alerts given up on (dead letters written).",
    K.COUNTER_CHECK_ERRORS: "Check evaluations that raised an error.",
    K.COUNTER_REJECTED_JOBS: "Jobs refused by the job allowlist.",
    K.COUNTER_NOTIFICATIONS: "Notifications sent.",
    K.COUNTER_MAYBE_DUPLICATED: "Sends that may have repeated an earlier one.",
    K.COUNTER_MALFORMED_ENTRIES: "Snapshot-stream entries the dispatcher could not use (dropped).",
}
"""Each counter of the counters hash (``Keys.counters``) exposed as ``monitorx_<name>_total``
(0 while absent), with its help text."""

LABELLED: dict[str, tuple[str, tuple[str, ...]]] = {
    M.FEED_FRAMES: ("Frames received from the feed.", ("feed",)),
    M.FEED_MALFORMED: ("Frames of the feed that could not be read (quarantined).", ("feed",)),
    M.CHECK_EVALUATIONS: ("Evaluation jobs run, per check.", ("check",)),
    M.CHECK_ERRORS: ("Evaluations whose check raised an error or timed out, per check.", ("check",)),
    M.ALERTS: ("Alerts emitted, per check and state (firing, resolved).", ("check", "state")),
    M.NOTIFICATIONS: ("Notifications sent, per receiver.", ("receiver",)),
    M.NOTIFICATIONS_FAILED: (
        f"Failed send attempts, per receiver and reason ({', '.join(REASONS)}).",
        ("receiver", "reason"),
    ),
    M.DEAD_LETTERS: ("Alerts written to the dead-letter stream, per receiver.", ("receiver",)),
}
"""Each labelled counter of ``Keys.metrics`` -> (help, labels), exposed as ``monitorx_<name>``."""

HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    M.CHECK_DURATION: ("Seconds the check's code took per evaluation, per check.", ("check",)),
    M.NOTIFICATION_LATENCY: (
        "Seconds from the newest alert event of a notification to its send done, per receiver "
        "(group wait and pacing included; repeats of an unchanged group not observed).",
        ("receiver",),
    ),
}
"""Each histogram of ``Keys.metrics`` -> (help, labels); its buckets: ``shared.metrics.HISTOGRAMS``."""

MARKS = {"firing": "notified", "silenced": "silenced", "inhibited": "inhibited"}
"""A firing alert's :attr:`~monitorx.status.FiringAlert.mark` -> the ``mark`` label of
``monitorx_alerts_firing``."""


# -- metrics ----------------------------------------------------------------------------------


class StatusCollector(Collector):
    """Reads the status model on each scrape (``read``) and yields it as metrics. A Redis error
    is raised out of ``generate_latest`` (the caller answers 503)."""

    def __init__(self, read: Callable[[], Status]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        yield from status_metrics(self.read())


def status_metrics(status: Status) -> Iterator[Metric]:
    """Every metric of one status: gauges of the current figures, then the counters."""
    yield from _process_metrics(status)
    yield from _stream_metrics(status)
    yield from _alert_metrics(status)
    yield from canary_metrics(status)
    for name, help_text in COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, help_text, value=status.counters.get(name, 0))
    yield from labelled_metrics(status.series)


def labelled_metrics(series: Sequence[M.Series]) -> Iterator[Metric]:
    """The families of :data:`LABELLED` and :data:`HISTOGRAMS` from the parsed series."""
    for name, (help_text, labels) in LABELLED.items():
        family = CounterMetricFamily(PREFIX + name, help_text, labels=labels)
        for s in series:
            if s.name == name:
                family.add_metric([s.labels.get(label, "") for label in labels], s.value)
        yield family
    for name, (help_text, labels) in HISTOGRAMS.items():
        histogram = HistogramMetricFamily(PREFIX + name, help_text, labels=labels)
        for h in M.histograms(series, name, M.HISTOGRAMS[name]):
            values = [h.labels.get(label, "") for label in labels]
            histogram.add_metric(values, h.buckets, h.sum)
        yield histogram


def _gauge(name: str, help_text: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, labels=list(labels))


def _process_metrics(status: Status) -> Iterator[Metric]:
    up = _gauge("processes_up", "Processes with a fresh heartbeat, per role.", ["role"])
    for role in ROLES:
        up.add_metric([role], len(status.fresh(role)))
    feed = _gauge("feed_up", "1 when the ingestor's feed is up, else 0.", ["feed"])
    for f in status.feeds:
        feed.add_metric([f.name], 1 if f.state == "up" else 0)
    age = _gauge("account_data_age_seconds", "Seconds since the newest snapshot of the account.", ["account"])
    for a in status.accounts:
        age.add_metric([a.account], a.age_s)
    found = problems(status)
    yield up
    yield feed
    yield age
    yield GaugeMetricFamily(
        PREFIX + "healthy", "1 when monitorx status finds no problem.", value=0 if found else 1
    )
    yield GaugeMetricFamily(PREFIX + "problems", "Problems monitorx status finds.", value=len(found))


def _stream_metrics(status: Status) -> Iterator[Metric]:
    labels = ["stream", "group"]
    pending = _gauge("stream_pending_entries", "Entries delivered and not acknowledged.", labels)
    lag = _gauge("stream_lag_entries", "Entries not delivered to the group yet.", labels)
    behind = _gauge("stream_behind_seconds", "Age of the group's oldest unacknowledged entry.", labels)
    for g in status.groups:
        pending.add_metric([g.stream, g.group], g.pending)
        behind.add_metric([g.stream, g.group], g.behind_s)
        if g.lag is not None:  # Redis cannot tell after entries inside the range were deleted
            lag.add_metric([g.stream, g.group], g.lag)
    q = status.queue
    jobs = _gauge("queue_jobs", "Check jobs in the RQ queue by state.", ["queue", "state"])
    for state, value in (("waiting", q.depth), ("started", q.started), ("failed", q.failed)):
        jobs.add_metric([q.name, state], value)
    yield from (pending, lag, behind, jobs)


CANARY_COUNTERS: dict[str, str] = {
    K.COUNTER_CANARY_PINGS: "Dead-man's switch pings answered 2xx.",
    K.COUNTER_CANARY_PING_FAILURES: "Dead-man's switch pings that failed.",
}
"""The dead-man's switch counters of ``Keys.counters``, exposed as ``monitorx_<name>_total``."""


def canary_metrics(status: Status) -> Iterator[Metric]:
    """The last canary's round trip and the age of its arrival (no sample before the first),
    and the dead-man's switch ping counters (``shared.canary``, ``alerter.deadman``)."""
    trip = _gauge("canary_round_trip_seconds", "Seconds the last canary took from ingestor to alerter.")
    age = _gauge("canary_last_arrival_age_seconds", "Seconds since the last canary came through.")
    if status.canary is not None:
        trip.add_metric([], status.canary.round_trip_s)
        age.add_metric([], status.canary.age_s)
    yield from (trip, age)
    for name, help_text in CANARY_COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, help_text, value=status.counters.get(name, 0))


def _alert_metrics(status: Status) -> Iterator[Metric]:
    firing = _gauge("alerts_firing", "Alerts firing now, by whether they are notified.", ["mark"])
    for mark, label in MARKS.items():
        firing.add_metric([label], sum(a.mark == mark for a in status.alerts))
    yield firing
    yield GaugeMetricFamily(PREFIX + "dead_letters", "Dead letters waiting.", value=status.dead_letters)
    yield GaugeMetricFamily(PREFIX + "quarantined_frames", "Frames quarantined.", value=status.quarantined)
