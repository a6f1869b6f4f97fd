"""The job contract between the dispatcher and the workers, written once: the names of the job
functions (the workers define them: ``workers.jobs``), the data of one job, the queue, and the job
class every worker runs with. That class refuses any job whose function or callback is not named
here (rq has no allowlist of its own: a forged job in Redis could name any importable callable).
Checks themselves are data (an instance name), so plugins need no entry here."""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq import Callback, Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from shared.keys import COUNTER_REJECTED_JOBS, DEFAULT_PREFIX, QUEUE_NAME, Keys

log = logging.getLogger(__name__)

RUN_CHECK = "workers.jobs.run_check"
"""Arguments ``(instance, account, at)``: ``at`` is the tick time of a time-driven run, else None."""
RUN_REPORT = "workers.jobs.run_report"
"""Arguments ``(instance, "*", slot, late)``."""
RUN_CANARY = "workers.jobs.run_canary"
"""Arguments ``(seq, sent_at, every)``: one dead-man's switch canary (``shared.canary``)."""
ON_FAILURE = "workers.jobs.on_job_failure"
NOOP = "workers.bench.noop"
"""The benchmark's no-op job (the bare-RQ baseline)."""
ALLOWED_FUNCTIONS = frozenset({RUN_CHECK, RUN_REPORT, RUN_CANARY, NOOP})
"""The only job functions a MonitorX worker executes."""
ALLOWED_CALLBACKS = frozenset({ON_FAILURE})
FAILURE_TTL = 3600
"""Seconds a failed job is kept for inspection (rq's default is a year)."""


def make_queue(connection: redis.Redis) -> Queue:
    """The MonitorX queue: JSON serializer, allowlisting job class. ``connection`` must not decode
    responses (rq needs bytes)."""
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer, job_class=CheckJob)


def job_data(func: str, args: list[Any], job_id: str, *, prefix: str, timeout: int, result_ttl: int) -> Any:
    """One job's data for ``Queue.enqueue_many``: every MonitorX job has these options."""
    return Queue.prepare_data(
        func,
        args=args,
        job_id=job_id,
        timeout=timeout,
        result_ttl=result_ttl,
        failure_ttl=FAILURE_TTL,
        description=" ".join(str(a) for a in args[:2]),
        meta={"prefix": prefix},
        on_failure=Callback(ON_FAILURE),
    )


class RejectedJob(RuntimeError):
    """A job named a function or callback outside the allowlist."""


class CheckJob(Job):
    """rq's Job with the allowlist enforced where the callable is resolved."""

    def _refuse(self, what: str, name: str) -> RejectedJob:
        log.error("refused job %s: %s %r is not allowed", self.id, what, name)
        prefix = str((self.meta or {}).get("prefix", DEFAULT_PREFIX))
        self.connection.hincrby(Keys(prefix).counters, COUNTER_REJECTED_JOBS, 1)
        return RejectedJob(f"{what} {name!r} is not an allowed MonitorX job function")

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS:
            raise self._refuse("function", str(name))
        return Job.func.fget(self)  # type: ignore[attr-defined]

    @property
    def failure_callback(self) -> Any:
        name = self._failure_callback_name
        if name and name not in ALLOWED_CALLBACKS:
            raise self._refuse("failure callback", name)
        return Job.failure_callback.fget(self)  # type: ignore[attr-defined]

    @property
    def success_callback(self) -> Any:
        if self._success_callback_name:
            raise self._refuse("success callback", self._success_callback_name)
        return None

    @property
    def stopped_callback(self) -> Any:
        if self._stopped_callback_name:
            raise self._refuse("stopped callback", self._stopped_callback_name)
        return None
