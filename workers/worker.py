"""The RQ worker process: SimpleWorker (default) or the forking Worker, JSON serializer,
allowlisting job class, and the MonitorX context set around every job."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from shared.keys import QUEUE_NAME
from workers.context import CURRENT, Context
from workers.jobs import CheckJob
from workers.reload import PlanSource

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 60
"""Seconds between RQ's registry clean-ups (its default is 600): abandoned jobs are retried and
reported sooner."""


class _ContextMixin:
    context: Context
    source: PlanSource | None = None

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        if self.source is not None and self.source.refresh(self.context.redis, self.context.keys):
            self.context = replace(self.context, plan=self.source.plan)
        token = CURRENT.set(self.context)
        try:
            return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            CURRENT.reset(token)


class MonitorSimpleWorker(_ContextMixin, SimpleWorker):
    """Runs each job in the worker process itself."""


class MonitorForkWorker(_ContextMixin, Worker):
    """Forks a work horse per job (isolation at the cost of a fork per evaluation)."""


def make_queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer, job_class=CheckJob)


def make_worker(
    kind: str,
    rq_connection: redis.Redis,
    context: Context,
    name: str | None = None,
    source: PlanSource | None = None,
) -> MonitorSimpleWorker | MonitorForkWorker:
    """A worker on the MonitorX queue. ``rq_connection`` must not decode responses (rq needs bytes)."""
    cls = MonitorSimpleWorker if kind == "simple" else MonitorForkWorker
    worker = cls(
        [make_queue(rq_connection)],
        name=name,
        connection=rq_connection,
        job_class=CheckJob,
        serializer=JSONSerializer,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )
    worker.context = context
    worker.source = source
    return worker
