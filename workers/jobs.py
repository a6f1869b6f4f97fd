"""The job functions the workers run (named in ``engine.jobs``), thin: they read what a job needs
from Redis and hand it to the engine.

Idempotent by construction: a pair's state remembers the time of its newest evaluation and
refuses one at the same or an older time, so a job that runs twice (RQ retries abandoned jobs) or
an older snapshot changes nothing; alert ids derive from the event, so even a duplicate that got
through is recognised by the alerter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError

from engine.alerts import emit
from engine.assess import job_failure_alert, report_accounts, report_alerts
from engine.checks.base import ReportSpec
from engine.jobs import RUN_CANARY
from engine.store import RedisStore, decode, evaluate_pair
from shared import keys as K
from shared import metrics as M
from shared.canary import CANARY_ACCOUNT, CANARY_INSTANCE, CanaryTrip
from shared.keys import Keys
from shared.models import Snapshot
from workers import context

log = logging.getLogger(__name__)


def run_check(instance: str, account: str, at: float | None = None) -> str:
    """The RQ job: evaluate one (instance, account) pair on the account's newest snapshot.

    ``at`` is the evaluation time of time-driven runs (dispatcher ticks); otherwise the time is
    the snapshot's observed time, so a replay behaves like live. One round trip reads (and clears
    the latest-wins marker first, so a frame arriving from now on queues a fresh job, and counts
    the evaluation, ``check_evaluations_total`` per check too), one writes, with the metrics of
    the check's run (``engine.store.RedisStore``); an evaluation that writes nothing sends those
    in one round trip of their own."""
    ctx = context.current()
    bound = ctx.plan.get(instance)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.delete(ctx.keys.queued(instance, account))
    pipe.hget(ctx.keys.latest(account), "snapshot")
    pipe.hgetall(ctx.keys.state(instance, account))
    pipe.hincrby(ctx.keys.counters, K.COUNTER_EVALS, 1)
    if bound is not None:
        M.count(pipe, ctx.keys, M.CHECK_EVALUATIONS, {"check": bound.spec.name})
    _, raw, stored, *_ = pipe.execute()
    if bound is None:
        log.warning("job for unknown instance %s (configuration changed?)", instance)
        return "unknown-instance"
    snap = None if raw is None else Snapshot.model_validate_json(raw)
    now = at if at is not None else (snap.observed_at if snap else None)
    if now is None:
        return "no-data"
    store = RedisStore(ctx.redis, ctx.keys)
    outcome = evaluate_pair(
        store, bound, account, snap, now, ctx.clock, decode(stored), on_snapshot=at is None
    )
    store.flush()
    return outcome


def on_job_failure(job: Any, connection: redis.Redis, exc_type: Any, value: Any, tb: Any) -> None:
    """RQ failure callback (a crash outside the check, a timeout, an abandoned job). It may run in
    another process, even an operator's ``rq info``: it uses only the job and the connection.
    A failed canary job alerts nobody (the canary never reaches a person): it is logged."""
    if job.func_name == RUN_CANARY:
        log.warning("canary job %s failed (%s): the next canary tries again", job.id, exc_type)
        return
    prefix = str(job.meta.get("prefix", K.DEFAULT_PREFIX))
    args = list(job.args or ())
    instance, account = (str(args[0]), str(args[1])) if len(args) >= 2 else ("?", "?")
    alert = job_failure_alert(job.id, instance, account, failure_text(job.id, exc_type, value), time.time())
    emit(connection, Keys(prefix), [alert])


def failure_text(job_id: str, exc_type: Any, value: Any) -> str:
    """Plain words for a failed job. rq passes an ``AbandonedJobError`` (older versions None) when
    the worker running the job died; that is said as such, not as an exception name."""
    if value is None or isinstance(value, AbandonedJobError):
        return (
            f"The worker running this check died (killed or lost) before the check finished; "
            f"job {job_id} was abandoned and is not retried. The pair is evaluated again on its "
            f"next snapshot or tick."
        )
    return f"Job {job_id} failed: {getattr(exc_type, '__name__', exc_type)}: {value}"


def run_canary(seq: int, sent_at: float, every: float) -> str:
    """The RQ job of one dead-man's switch canary (``shared.canary``): clear its latest-wins
    marker and XADD the trip, with this worker's name and the job's start, to the alerts stream
    as its one field ``canary``, in one round trip. Nothing else: no evaluation, no counter."""
    ctx = context.current()
    job = get_current_job()
    worker = None if job is None else job.worker_name
    trip = CanaryTrip(seq=seq, sent_at=sent_at, every=every, worker=worker, job_started_at=ctx.clock())
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.delete(ctx.keys.queued(CANARY_INSTANCE, CANARY_ACCOUNT))
    pipe.xadd(ctx.keys.alerts, trip.alert_fields())  # type: ignore[arg-type]
    pipe.execute()
    return "canary"


def run_report(instance: str, account: str, at: float, late: bool = False) -> str:
    """The RQ job of a scheduled report: build it from the newest snapshot of every account of
    the instance at slot ``at``. Alert ids derive from (instance, label, slot), so a slot enqueued
    twice (two dispatchers, a crash between enqueue and claim) is still delivered once."""
    ctx = context.current()
    bound = ctx.plan.get(instance)
    if bound is None or not isinstance(bound.spec, ReportSpec):
        log.warning("report job for unknown report instance %s", instance)
        return "unknown-instance"
    accounts = report_accounts(bound, ctx.redis.zrange(ctx.keys.seen, 0, -1))
    pipe = ctx.redis.pipeline(transaction=False)
    for name in accounts:
        pipe.hget(ctx.keys.latest(name), "snapshot")
    raws = pipe.execute()
    snaps = {
        a: None if raw is None else Snapshot.model_validate_json(raw)
        for a, raw in zip(accounts, raws, strict=True)
    }
    alerts = report_alerts(bound, snaps, at, late, ctx.clock())
    pipe = ctx.redis.pipeline(transaction=True)
    emit(pipe, ctx.keys, alerts)
    pipe.execute()
    return "applied"
