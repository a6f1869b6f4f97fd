"""The Prometheus metrics of ``monitorx web``'s ``/metrics``: the status model read on each scrape
(:class:`StatusCollector`) and yielded as metrics named by Prometheus' conventions (prefix
``monitorx_``, units in the name, ``_total`` on counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitorx.status import Status, problems
from shared import keys as K
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
}
"""Each counter of the counters hash (``Keys.counters``) exposed as ``monitorx_<name>_total``
(0 while absent), with its help text."""

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
    for name, help_text in COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, help_text, value=status.counters.get(name, 0))


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


def _alert_metrics(status: Status) -> Iterator[Metric]:
    firing = _gauge("alerts_firing", "Alerts firing now, by whether they are notified.", ["mark"])
    for mark, label in MARKS.items():
        firing.add_metric([label], sum(a.mark == mark for a in status.alerts))
    yield firing
    yield GaugeMetricFamily(PREFIX + "dead_letters", "Dead letters waiting.", value=status.dead_letters)
    yield GaugeMetricFamily(PREFIX + "quarantined_frames", "Frames quarantined.", value=status.quarantined)
