"""Every Redis key, stream and consumer group MonitorX uses, in one place.

All keys live under one prefix (``mx:`` by default) so a deployment can share a Redis with other
tools, and tests can inspect everything with one ``SCAN``. The producer and consumer of each key
are named in its docstring; the record layouts are the models in :mod:`shared.models`.

Streams
    ``{p}snapshots``   ingestor -> dispatcher. Fields: ``account``, ``seq``, ``observed_at``
                       (identifiers only: jobs read ``latest:{account}``). Group ``dispatch``.
                       Or, instead of those, one field ``alert`` (FEED_ALERT_FIELD: Alert JSON
                       of a FEED_ALERT_CHECK alert): the ingestor's feed_down alerts, which the
                       dispatcher forwards to ``{p}alerts`` unchanged (the ingestor's Redis user
                       may not write that stream); any other alert there is counted in
                       COUNTER_MALFORMED_ENTRIES and dropped.
                       Or a canary (shared.canary, every MONITORX_CANARY_SECONDS, ingestor):
                       ``account`` = CANARY_ACCOUNT, ``seq``, ``observed_at`` (sent at),
                       ``every`` and ``canary`` = 1; the dispatcher never routes it to a check.
    ``{p}quarantine``  ingestor. Frames set aside: ``reason``, ``received_at``, ``excerpt``
                       (at most QUARANTINE_EXCERPT characters of the raw frame). Capped, approximate.
    ``{p}alerts``      workers and the dispatcher (config_error, the ingestor's feed_down
                       forwarded) -> alerter. Field ``alert`` (Alert
                       JSON), and ``replay`` (a receiver) on an entry ``monitorx dlq replay``
                       wrote. Read by the alerter's router through the group ``alert:route``.
                       Or one field ``canary`` (a CanaryTrip as JSON: shared.canary), written by
                       the canary job of a worker; the router never routes it to a receiver.
    ``{p}dead``        alerter. Alerts a receiver gave up on: ``alert``, ``sink`` (the
                       receiver), ``error``, ``attempts``, ``failed_at``.
    ``{p}notify:{receiver}``  alerter router -> that receiver's delivery loop. Field ``group``
                       (a group key), ``repeat`` (1: a route repeat): "this group is due",
                       the content is read from the group when it is sent. Group ``deliver``.
    ``{p}sendlog``      alerter. One entry per send attempt: ``receiver``, ``group``, ``status``
                       (sent, retry, dead), ``latency_ms``, ``alerts``, ``error``, ``at``.
                       Capped (NOTIFY_LOG_MAXLEN, approximate); read by ``monitorx alerts log``.
Plain keys
    ``{p}latest:{account}``  hash ``observed_at``, ``seq``, ``snapshot`` (Snapshot JSON): the
                             newest snapshot of the account (compare-and-set on ``observed_at``
                             then ``seq``: older snapshots never overwrite; see redisio.Publisher).
                             Read by the check jobs and the status model (the web page's figures).
    ``{p}seen``              sorted set account -> observed_at of its newest snapshot.
    ``{p}queued:{instance}:{account}``  string, id of the job waiting for that pair (latest wins:
                             set by the dispatcher, deleted by the job when it starts). Has a TTL.
    ``{p}hold:{instance}:{account}``    string, set by a job whose check ran into the job
                             timeout; while it lives (TTL) the dispatcher queues no job for the pair.
    ``{p}state:{instance}:{account}``   hash, alert state of one pair: field ``_now`` (time of
                             the newest evaluation), ``_in`` (its gate while at rest:
                             engine.inputs) and one field per key (KeyState JSON). Written by
                             workers (engine.store), ``_in`` read by the dispatcher.
    ``{p}sent:{sink}:{alert_id}``       string, delivery marker of one alert on one sink. TTL.
    ``{p}attempts:{alert_id}``          hash sink -> failed attempts so far. TTL.
    ``{p}counters``          hash of monotonic counters (see COUNTER_* names).
    ``{p}metrics``           hash of labelled counters and histograms (shared.metrics: a field is a
                             series name plus its labels as JSON). Written by the ingestor (frames
                             per feed), the workers (evaluations, errors, durations, alerts per
                             check), the dispatcher and anyone emitting alerts (engine.alerts) and
                             the alerter (notifications per receiver); read by the status model
                             (``monitorx web``'s ``/metrics``).
    ``{p}slot:{instance}``   string, last schedule slot (unix seconds) that fired.
    ``{p}feed:{name}``       hash ``state`` (up/down), ``reason``, ``since``, ``updated_at``: the
                             ingestor's view of its feed, written with each ``feed_down`` alert
                             (which it XADDs to ``{p}snapshots``) and read by it at start.
    ``{p}firing``            hash fingerprint -> Alert JSON of its latest firing event: what fires
                             now. Written by the alerter's router (HDEL on resolution), read by its
                             inhibition stage and ``monitorx alerts``.
    ``{p}inhibitors``        hash fingerprint -> labels JSON of each firing alert that matches the
                             source side of an inhibit rule: the index of ``{p}firing`` the
                             inhibit stage reads (alerter.mute). Written by the router with
                             ``{p}firing``, rebuilt from it at the router's start.
    ``{p}group:{key}``       hash, one notification group (alerter.groups): ``receiver``,
                             ``labels``, ``timers``, ``created_at``, ``version``, ``flushed``,
                             ``sent_at`` and one field ``m:{fingerprint}`` per member (Alert
                             JSON of its latest event). Router and delivery loops of the alerter.
    ``{p}groups``            sorted set group key -> when it is due (router; claimed with a lease;
                             ``silence expire`` makes every group due at once).
    ``{p}ref:{key}``         string, MessageRef JSON of the group's message (Slack bot mode).
    ``{p}pace:{channel}``    string, unix time before which nothing is posted to the channel
                             (one message per second, and a 429's Retry-After). Alerter replicas.
    ``{p}canary``            hash, the last canary arrival (shared.canary.CanaryTrip.hash_fields:
                             ``seq``, ``sent_at``, ``every``, ``worker``, ``job_started_at``,
                             ``arrived_at``, ``round_trip_s``). Written by the alerter's router,
                             read by ``monitorx status`` and ``/metrics``.
    ``{p}inflight:{receiver}:{key}``  string, alert ids being sent: found at the next send, they
                             count a possible duplicate (a crash between a send and its record).
    ``{p}hb:{role}:{name}``  string, Heartbeat JSON of one running process (shared.heartbeat),
                             with a TTL: written by every long-running process in its loop, read
                             by ``monitorx status`` / ``health`` and the web page.
    ``{p}silences``          hash silence id -> Silence JSON (shared.silences). Written by
                             ``monitorx silence add`` and ``expire`` (which rewrites ``ends_at``)
                             and the web page's forms (the same SilenceStore calls), read by the
                             alerter's silence stage, ``monitorx silence list`` and the status model.
                             An entry is dropped SILENCE_RETENTION (5 days) after its end, by the
                             next ``add`` or ``list``.
    ``{p}reload``            string, ReloadRecord JSON of the latest configuration reload, taken
                             or refused (engine.reload: dispatcher and workers), read by
                             ``monitorx status``.
    ``{p}health``            hash ``{check}|{key}`` -> JSON ``since`` and ``finding``: the problems
                             of MonitorX itself alerted now (alerter.selfcheck: written, claimed
                             with WATCH/MULTI, by the alerter replicas; HDEL when resolved).
RQ
    Queue ``monitorx`` holds the check jobs (JSON serializer). Job ids are
    ``{instance}-{account}-{n}`` reduced to ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "mx:"
"""Prefix of every MonitorX key."""

QUEUE_NAME = "monitorx"
"""The RQ queue of check jobs."""

DISPATCH_GROUP = "dispatch"
FEED_ALERT_FIELD = "alert"
"""The field of a snapshots stream entry carrying an alert (and of every alerts stream entry)."""
FEED_ALERT_CHECK = "feed_down"
"""The one check whose alerts ride the snapshots stream: the ingestor's feed alert."""
QUARANTINE_EXCERPT = 512
"""Characters of a malformed frame kept in the quarantine stream."""
QUARANTINE_MAXLEN = 10_000
"""Approximate cap of the quarantine stream (it is diagnostic, never read by a consumer group)."""
DEAD_MAXLEN = 100_000
"""Approximate cap of the dead-letter stream."""
NOTIFY_LOG_MAXLEN = 10_000
"""Approximate cap of the send-attempt log (``{p}sendlog``)."""
ROUTE_GROUP = "alert:route"
"""The alerter's router reads the alerts stream through this consumer group."""
DELIVER_GROUP = "deliver"
"""Each receiver's delivery loop reads its ``notify:{receiver}`` stream through this group."""

COUNTER_FRAMES = "frames"
COUNTER_MALFORMED = "frames_malformed"
COUNTER_INVALID_VALUES = "values_invalid"
COUNTER_SNAPSHOTS = "snapshots"
COUNTER_JOBS = "jobs_enqueued"
COUNTER_COALESCED = "jobs_coalesced"
COUNTER_UNCHANGED = "evaluations_skipped"
"""Snapshot evaluations the dispatcher did not queue: the pair at rest, its inputs unchanged."""
COUNTER_EVALS = "evaluations"
COUNTER_ALERTS = "alerts_emitted"
COUNTER_DELIVERED = "alerts_delivered"
COUNTER_DEAD = "alerts_dead"
COUNTER_CHECK_ERRORS = "check_errors"
COUNTER_REJECTED_JOBS = "jobs_rejected"
COUNTER_NOTIFICATIONS = "notifications_sent"
COUNTER_MAYBE_DUPLICATED = "notifications_maybe_duplicated"
"""Sends that may have repeated an earlier one: the alerter died between a send and its record."""
COUNTER_MALFORMED_ENTRIES = "snapshot_entries_malformed"
"""Alerts on the snapshots stream the dispatcher did not forward: unreadable, or not a feed alert."""
COUNTER_CANARY_PINGS = "canary_pings"
"""Dead-man's switch pings answered 2xx (alerter.deadman)."""
COUNTER_CANARY_PING_FAILURES = "canary_ping_failures"
"""Dead-man's switch pings that failed (an error status, a timeout, a connection error)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def job_id_part(text: str) -> str:
    """Reduce text to RQ's job-id alphabet ``[A-Za-z0-9_-]`` (colons and dots become ``_``)."""
    return _UNSAFE.sub("_", text)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Build once per process from its settings."""

    prefix: str = DEFAULT_PREFIX

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}snapshots"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}quarantine"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def seen(self) -> str:
        return f"{self.prefix}seen"

    @property
    def counters(self) -> str:
        return f"{self.prefix}counters"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}metrics"

    def latest(self, account: str) -> str:
        return f"{self.prefix}latest:{account}"

    def queued(self, instance: str, account: str) -> str:
        return f"{self.prefix}queued:{instance}:{account}"

    def hold(self, instance: str, account: str) -> str:
        return f"{self.prefix}hold:{instance}:{account}"

    def state(self, instance: str, account: str) -> str:
        return f"{self.prefix}state:{instance}:{account}"

    def sent(self, sink: str, alert_id: str) -> str:
        return f"{self.prefix}sent:{sink}:{alert_id}"

    def attempts(self, alert_id: str) -> str:
        return f"{self.prefix}attempts:{alert_id}"

    def slot(self, instance: str) -> str:
        return f"{self.prefix}slot:{instance}"

    def feed(self, name: str) -> str:
        return f"{self.prefix}feed:{name}"

    @property
    def silences(self) -> str:
        return f"{self.prefix}silences"

    def heartbeat(self, role: str, name: str) -> str:
        return f"{self.prefix}hb:{role}:{name}"

    def notify(self, receiver: str) -> str:
        return f"{self.prefix}notify:{receiver}"

    @property
    def sendlog(self) -> str:
        return f"{self.prefix}sendlog"

    @property
    def firing(self) -> str:
        return f"{self.prefix}firing"

    @property
    def inhibitors(self) -> str:
        return f"{self.prefix}inhibitors"

    def group(self, key: str) -> str:
        return f"{self.prefix}group:{key}"

    @property
    def groups(self) -> str:
        return f"{self.prefix}groups"

    def ref(self, key: str) -> str:
        return f"{self.prefix}ref:{key}"

    def pace(self, channel: str) -> str:
        return f"{self.prefix}pace:{channel}"

    @property
    def reload(self) -> str:
        return f"{self.prefix}reload"

    @property
    def health(self) -> str:
        return f"{self.prefix}health"

    @property
    def canary(self) -> str:
        return f"{self.prefix}canary"

    def inflight(self, receiver: str, key: str) -> str:
        return f"{self.prefix}inflight:{receiver}:{key}"
