"""The dispatcher loop. ``while not stopping: dispatcher.step()``; tests call ``step()`` directly.

Each step reclaims entries a dead dispatcher left pending, reads new snapshot entries through the
consumer group, enqueues one job per routed (instance, account) pair, acknowledges the entries
only after the jobs are in the queue, and on each tick enqueues the time-driven checks.

Latest wins: while a pair has a job waiting (``queued:{instance}:{account}`` names it and that
job is still QUEUED in RQ), no second one is queued; that job reads the newest snapshot when it
starts, and deletes the marker first, so a frame arriving while it runs queues a fresh job. A
marker naming a job in any other state (a worker died after dequeuing it and before it cleared
the marker: the job is STARTED, later FAILED) no longer holds the pair: the next snapshot or tick
queues a fresh job at once.

Canary (shared.canary): a snapshot entry with the field ``canary`` is never routed to a check and
never moves ``read_lag_s``; the newest canary of a batch becomes one ``run_canary`` job, latest
wins under the marker ``queued:canary:monitorx-canary`` as a pair's job does, so workers that are
down hold one canary job, not a pile. It is not counted in ``jobs_enqueued``.

Faults: :meth:`Dispatcher.start` (re)creates the consumer group and, on its next step, handles
the entries this consumer left pending (a restart under the same stable consumer name resumes at
once; XAUTOCLAIM after ``claim_idle_ms`` is only for entries of other, dead dispatchers). The
process runs under :func:`shared.redisio.ride_out`, which calls ``start()`` again after any Redis
error, so an outage of any length, or a Redis that came back empty, is ridden out. Each tick also
runs RQ's clean-up of abandoned jobs (a worker died mid-job), which fails them and reports them as
``check_error`` alerts (see workers.jobs.on_job_failure) within seconds of their timeout,
rather than at a worker's next maintenance.

Feed alerts: the ingestor may not write the alerts stream, so its ``feed_down`` alerts come as
snapshot entries with the field ``alert`` (shared.keys). Each is forwarded to the alerts stream
as it is (same id and fields; ``engine.alerts.emit``, which counts it) before its entry is
acknowledged: a crash in between forwards it twice, with the same id, which the alerter delivers
once. An entry whose alert is unreadable or of any other check is logged, counted in
``snapshot_entries_malformed``, acknowledged and dropped.

Heartbeat: with a ``beater`` (built by ``monitorx dispatch``), every step ends with
:meth:`shared.heartbeat.Beater.beat` (one SET at most every 5 s, no read), whose details are
``read_lag_s``: when the newest snapshot entry handled so far (by its ``observed_at`` field) was
handled, how many seconds after its observation that was (None before the first entry); and
``newest_observed_at``, that observation time, from which a reader gets the data's age.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import ValidationError
from rq import Queue
from rq.registry import StartedJobRegistry

from engine.alerts import emit
from engine.inputs import Gate, still_valid
from engine.jobs import RUN_CANARY, RUN_CHECK, RUN_REPORT, CheckJob, job_data, make_queue
from engine.plan import Plan
from engine.reload import PlanSource
from engine.store import GATE_FIELD
from engine.tick import report_decision, time_driven
from shared import keys as K
from shared.canary import CANARY_ACCOUNT, CANARY_FIELD, CANARY_INSTANCE, CanaryTrip
from shared.heartbeat import Beater
from shared.keys import Keys, job_id_part
from shared.models import Alert
from shared.redisio import ensure_group, run_script

log = logging.getLogger(__name__)

MARKER_TTL = 600
"""Seconds a latest-wins marker lives at most (a lost job can hold its pair no longer)."""

# KEYS[1] marker, KEYS[2] hold, KEYS[3] the queue's intermediate list (jobs a worker took but did
# not start yet). ARGV: new job id, ttl, rq job key prefix. 1: enqueue it; 0: coalesced (the
# marker names a job still waiting in the queue: any other state, or a job a worker took and
# perhaps died with, means it may never run) or held (the pair's check timed out lately:
# engine.store.HOLD_SECONDS). At worst a pair is evaluated twice, which changes nothing.
_MARK = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('HGET', ARGV[3] .. cur, 'status') == 'queued'
   and not redis.call('LPOS', KEYS[3], cur) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""

# KEYS[1] slot key. ARGV[1] slot. Moves the last slot forward only.
_CLAIM = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]); return 1 end
return 0
"""

Pair = tuple[str, str, float | None]
"""(instance, account, at): ``at`` is the evaluation time of time-driven runs, else None."""


@dataclass
class Dispatcher:
    r: redis.Redis
    rq_connection: redis.Redis
    keys: Keys
    plan: Plan
    consumer: str
    job_timeout: int = 30
    result_ttl: int = 0
    batch: int = 500
    block_ms: int = 500
    tick_seconds: float = 5.0
    claim_idle_ms: int = 30_000
    clock: Callable[[], float] = time.time
    source: PlanSource | None = None
    """Where a new plan comes from on SIGHUP or a file change (None: the plan never changes)."""
    beater: Beater | None = None
    """Where each step's heartbeat goes (None: no heartbeat; tests that call step())."""
    started_at: float = field(default=0.0)
    read_lag_s: float | None = None
    """Seconds between the observation of the newest snapshot entry handled and its handling."""
    newest_observed_at: float | None = None
    """The ``observed_at`` of the newest snapshot entry handled (None before the first)."""
    behind: bool = False
    """The last step read a full batch of new snapshot entries (more are waiting)."""
    _next_tick: float = 0.0
    _next_claim: float = 0.0
    _queue: Queue | None = None
    _started: StartedJobRegistry | None = None
    _mark: Any = None
    _claim: Any = None
    _resume: bool = False
    """True from start() until this consumer's own pending entries are all handled."""

    def start(self) -> Dispatcher:
        """(Re)create the consumer group and scripts; the next steps first handle the entries
        this consumer left pending. Safe to call again after any Redis error."""
        ensure_group(self.r, self.keys.snapshots, K.DISPATCH_GROUP)
        self._queue = make_queue(self.rq_connection)
        self._started = StartedJobRegistry(queue=self._queue, job_class=CheckJob)
        self._mark = self.r.register_script(_MARK)
        self._claim = self.r.register_script(_CLAIM)
        self.started_at = self.started_at or self.clock()
        self._resume = True
        return self

    def step(self) -> int:
        """One round: own pending entries, reclaim, read, enqueue, ack, tick. Returns the number
        of jobs enqueued."""
        now = self.clock()
        enqueued = 0
        if self._resume:
            enqueued += self._handle(self._own_pending())
        if now >= self._next_claim:
            self._next_claim = now + self.claim_idle_ms / 1000
            enqueued += self._handle(self._reclaim())
        entries = self._read()
        self.behind = len(entries) >= self.batch
        enqueued += self._handle(entries)
        if self.source is not None and self.source.refresh(self.r, self.keys):
            self.plan = self.source.plan
        if self.clock() >= self._next_tick:
            self._next_tick = self.clock() + self.tick_seconds
            enqueued += self.tick(self.clock())
        if self.beater is not None:
            self.beater.beat({"read_lag_s": self.read_lag_s, "newest_observed_at": self.newest_observed_at})
        return enqueued

    def _read(self, start: str = ">") -> list[tuple[str, dict[str, str]]]:
        """New entries (``>``: blocking at most ``block_ms``, and never past the next tick), or a
        page of this consumer's own pending ones (``0``: no wait; a trimmed entry has no fields)."""
        wait = int(max(0.0, self._next_tick - self.clock()) * 1000) or 1
        block = max(1, min(self.block_ms, wait)) if start == ">" else None
        reply: Any = self.r.xreadgroup(
            K.DISPATCH_GROUP, self.consumer, {self.keys.snapshots: start}, count=self.batch, block=block
        )
        return [(eid, fields or {}) for _, found in reply or [] for eid, fields in found]

    def _own_pending(self) -> list[tuple[str, dict[str, str]]]:
        """A page of the entries this consumer read and never acknowledged (it was killed, or
        Redis failed between enqueue and ack), handled at once; none left ends the resume."""
        entries = self._read("0")
        if entries:
            log.info("handling %d snapshot entries this dispatcher left pending", len(entries))
        else:
            self._resume = False
        return entries

    def _reclaim(self) -> list[tuple[str, dict[str, str]]]:
        reply: Any = self.r.xautoclaim(
            self.keys.snapshots, K.DISPATCH_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        entries = [(eid, fields or {}) for eid, fields in reply[1]]
        if entries:
            log.info("reclaimed %d pending snapshot entries", len(entries))
        return entries + [(eid, {}) for eid in (reply[2] if len(reply) > 2 else [])]

    def _handle(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        if not entries:
            return 0
        self._observe(entries)
        self._forward([f[K.FEED_ALERT_FIELD] for _, f in entries if K.FEED_ALERT_FIELD in f])
        pairs = [
            (b.name, f["account"], None)
            for _, f in entries
            if "account" in f and CANARY_FIELD not in f
            for b in self.plan.for_snapshot(f["account"])
        ]
        todo, held = self.changed(pairs)
        last = self.r.pipeline(transaction=False)  # counters and the ack: one round trip, last
        enqueued = self.enqueue(todo, last) + self._canary(entries)
        if held:
            last.hincrby(self.keys.counters, K.COUNTER_UNCHANGED, held)
        last.xack(self.keys.snapshots, K.DISPATCH_GROUP, *[eid for eid, _ in entries])
        last.execute()
        return enqueued

    def _forward(self, texts: Sequence[str]) -> None:
        """Forward the feed alerts of snapshot entries to the alerts stream, in one round trip;
        count the others (unreadable, or of another check) as malformed."""
        if not texts:
            return
        alerts = [alert for alert in map(_feed_alert, texts) if alert is not None]
        pipe = self.r.pipeline(transaction=False)
        emit(pipe, self.keys, alerts)
        if len(alerts) < len(texts):
            pipe.hincrby(self.keys.counters, K.COUNTER_MALFORMED_ENTRIES, len(texts) - len(alerts))
        pipe.execute()

    def _observe(self, entries: Sequence[tuple[str, dict[str, str]]]) -> None:
        """Move ``newest_observed_at`` and ``read_lag_s`` forward to the newest of ``entries``
        (an entry without a readable ``observed_at`` is ignored)."""
        times = [_observed_at(f) for _, f in entries]
        newest = max((t for t in times if t is not None), default=None)
        if newest is not None and (self.newest_observed_at is None or newest >= self.newest_observed_at):
            self.newest_observed_at = newest
            self.read_lag_s = round(self.clock() - newest, 3)  # negative: the clocks differ

    def changed(self, pairs: Sequence[Pair]) -> tuple[list[Pair], int]:
        """The snapshot pairs that need an evaluation: all but those whose gate holds for their
        account's newest snapshot (at rest, and what the check read is unchanged: see
        ``engine.inputs``), and how many were held so (``evaluations_skipped``, the caller's to
        count). Two round trips for a whole batch: the gates, then the snapshots."""
        unique = list(dict.fromkeys(pairs))
        pipe = self.r.pipeline(transaction=False)
        for instance, account, _ in unique:
            pipe.hget(self.keys.state(instance, account), GATE_FIELD)
        gates = {pair: Gate.from_json(g) for pair, g in zip(unique, pipe.execute(), strict=True) if g}
        if not gates:
            return unique, 0
        raws = self._newest_raw(sorted({account for _, account, _ in gates}))
        held = {pair for pair, gate in gates.items() if self._holds(gate, pair, raws)}
        return [pair for pair in unique if pair not in held], len(held)

    def _newest_raw(self, accounts: Sequence[str]) -> dict[str, dict[str, Any]]:
        pipe = self.r.pipeline(transaction=False)
        for account in accounts:
            pipe.hget(self.keys.latest(account), "snapshot")
        found = zip(accounts, pipe.execute(), strict=True)
        return {account: json.loads(text)["raw"] for account, text in found if text is not None}

    def _holds(self, gate: Gate, pair: Pair, raws: dict[str, dict[str, Any]]) -> bool:
        bound, raw = self.plan.get(pair[0]), raws.get(pair[1])
        return bound is not None and raw is not None and still_valid(gate, bound, raw)

    def tick(self, now: float) -> int:
        """Fail the jobs of dead workers, then enqueue the time-driven checks of every account
        they cover and the reports due."""
        assert self._started is not None, "start() first"
        self._started.cleanup(timestamp=now)
        seen: Any = self.r.zrange(self.keys.seen, 0, -1)
        pairs = [(b.name, a, now) for b, a in time_driven(self.plan, seen, now, self.started_at)]
        return self.enqueue(pairs) + self.reports(now)

    def reports(self, now: float) -> int:
        """Enqueue every report whose slot is due. The job goes in first, then the slot is
        recorded (compare-and-set, never backwards): a crash in between re-sends a slot whose
        alerts carry the same ids, which the alerter delivers once."""
        sent = 0
        for bound in self.plan.reports():
            inst = bound.instance
            last: Any = self.r.get(self.keys.slot(inst.name))
            decision = report_decision(bound, None if last is None else float(last), now)
            if decision.action == "send" and decision.slot is not None:
                self._push_report(inst.name, decision.slot, decision.late)
                sent += 1
            if decision.action != "none" and decision.slot is not None:
                self._claim(keys=[self.keys.slot(inst.name)], args=[repr(decision.slot)])
                log.info(
                    "report %s slot %s: %s%s",
                    inst.name,
                    decision.slot,
                    decision.action,
                    " (late)" if decision.late else "",
                )
        return sent

    def _push_report(self, instance: str, slot: float, late: bool) -> None:
        job_id = f"{job_id_part(instance)}-report-{int(slot)}-{uuid.uuid4().hex[:8]}"
        self._enqueue_many([self._job(RUN_REPORT, [instance, "*", slot, late], job_id)])

    def _job(self, func: str, args: list[Any], job_id: str) -> Any:
        return job_data(
            func, args, job_id, prefix=self.keys.prefix, timeout=self.job_timeout, result_ttl=self.result_ttl
        )

    def _enqueue_many(self, datas: Sequence[Any]) -> None:
        assert self._queue is not None, "start() first"
        pipe = self.rq_connection.pipeline()
        self._queue.enqueue_many(datas, pipeline=pipe)
        pipe.execute()

    def _canary(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        """Enqueue the canary job of the newest canary among ``entries`` (shared.canary), latest
        wins: none while the previous canary's job still waits. Returns 1 when enqueued."""
        trips = [t for _, f in entries if (t := CanaryTrip.from_entry(f)) is not None]
        if not trips:
            return 0
        trip = max(trips, key=lambda t: (t.sent_at, t.seq))
        job_id = f"canary-{trip.seq}-{uuid.uuid4().hex[:8]}"
        assert self._queue is not None, "start() first"
        pair = (CANARY_INSTANCE, CANARY_ACCOUNT)
        keys = [self.keys.queued(*pair), self.keys.hold(*pair), self._queue.intermediate_queue_key]
        if not self._mark(keys=keys, args=[job_id, MARKER_TTL, CheckJob.redis_job_namespace_prefix]):
            return 0
        self._enqueue_many([self._job(RUN_CANARY, trip.job_args(), job_id)])
        return 1

    def enqueue(self, pairs: Iterable[Pair], counts: Any = None) -> int:
        """Enqueue one job per pair not already waiting; returns how many were enqueued. The
        counters go on ``counts`` (a pipeline the caller sends after this returns), or in a round
        trip of their own. Two round trips otherwise: the latest-wins marks, then the jobs."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return 0
        ids = [f"{job_id_part(i)}-{job_id_part(a)}-{uuid.uuid4().hex[:12]}" for i, a, _ in unique]
        assert self._queue is not None, "start() first"
        taken = self._queue.intermediate_queue_key
        pipe = self.r.pipeline(transaction=False)
        for (instance, account, _), job_id in zip(unique, ids, strict=True):
            keys = [self.keys.queued(instance, account), self.keys.hold(instance, account), taken]
            run_script(self._mark, keys, [job_id, MARKER_TTL, CheckJob.redis_job_namespace_prefix], pipe)
        marks = pipe.execute()
        todo = [(pair, job_id) for pair, job_id, ok in zip(unique, ids, marks, strict=True) if ok]
        if todo:
            self._enqueue_many([self._job(RUN_CHECK, [i, a, at], job_id) for (i, a, at), job_id in todo])
        own = counts is None
        counts = self.r.pipeline(transaction=False) if own else counts
        counts.hincrby(self.keys.counters, K.COUNTER_JOBS, len(todo))
        counts.hincrby(self.keys.counters, K.COUNTER_COALESCED, len(unique) - len(todo))
        if own:
            counts.execute()
        return len(todo)


def _observed_at(fields: dict[str, str]) -> float | None:
    """The ``observed_at`` field of a snapshot entry, None when absent or unreadable, or for a
    canary (it carries no data)."""
    if CANARY_FIELD in fields:
        return None
    try:
        return float(fields["observed_at"])
    except (KeyError, ValueError):
        return None


def _feed_alert(text: str) -> Alert | None:
    """The alert of a snapshot entry when it is a feed alert; None (logged) otherwise."""
    try:
        alert = Alert.model_validate_json(text)
    except ValidationError as exc:
        log.warning("dropped an unreadable alert from the snapshots stream: %d problems", exc.error_count())
        return None
    if alert.check != K.FEED_ALERT_CHECK:
        log.warning("dropped a %r alert from the snapshots stream: only feed alerts come so", alert.check)
        return None
    return alert
