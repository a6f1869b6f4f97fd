"""The RQ worker process: SimpleWorker (default) or the forking Worker, JSON serializer,
allowlisting job class, the MonitorX context set around every job, and the process's heartbeat.

The heartbeat (:class:`WorkerBeat`) is written from a daemon thread, not from rq's loop: that
loop blocks in its dequeue for minutes while the queue is empty, and a job may run longer than
the heartbeat's TTL (15 s; the job timeout is 30 s by default), so a beat from the loop would
let a busy or idle worker disappear. The thread says the process is alive and names the job in
hand; a job stuck in it is bounded by the job timeout (SimpleWorker: SIGALRM; the forking
Worker kills its work horse), after which ``current_job`` changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.exceptions import InvalidJobOperation
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from engine.jobs import CheckJob, make_queue
from engine.reload import PlanSource
from shared.heartbeat import Beater
from shared.lifecycle import Stopper
from shared.redisio import Outage
from workers.context import CURRENT, Context

log = logging.getLogger(__name__)

ABANDON_GRACE = 10
"""Seconds past a job's timeout after which a SimpleWorker's started job counts as abandoned
(the failure handling after a timeout takes well under a second)."""
REDIS_WAIT_MAX = 1.0
"""Longest wait between a worker's attempts to dequeue while Redis is unavailable (rq: 60 s)."""
REGISTRATION_CHECK = 10.0
"""Seconds between a worker's checks that Redis still holds its registration."""
MAINTENANCE_INTERVAL = 60
"""Seconds between RQ's registry clean-ups (its default is 600): abandoned jobs are retried and
reported sooner."""


class _ContextMixin:
    context: Context
    source: PlanSource | None = None
    job_in_hand: Any = None
    """The job being executed; still set after ``work()`` quit on a Redis error mid-job."""

    _registration_due: float = 0.0

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self.ensure_registered()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]

    def ensure_registered(self) -> None:
        """At most every REGISTRATION_CHECK seconds: register again if Redis lost this worker's
        registration (it came back empty), so ``rq info`` keeps showing the workers at work."""
        now = time.monotonic()
        if now < self._registration_due:
            return
        self._registration_due = now + REGISTRATION_CHECK
        worker: Any = self
        if not worker.connection.sismember(worker.redis_workers_keys, worker.key):
            worker.connection.delete(worker.key)
            worker.register_birth()
            log.warning("worker %s registered again (Redis had lost its registration)", worker.name)

    def execute_job(self, job: Any, queue: Any) -> None:
        self.job_in_hand = job
        super().execute_job(job, queue)  # type: ignore[misc]
        self.job_in_hand = None

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        if self.source is not None and self.source.refresh(self.context.redis, self.context.keys):
            self.context = replace(self.context, plan=self.source.plan)
        token = CURRENT.set(self.context)
        try:
            return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]
        finally:
            CURRENT.reset(token)


class MonitorSimpleWorker(_ContextMixin, SimpleWorker):
    """Runs each job in the worker process itself.

    Its started-job entry lives ``job timeout + ABANDON_GRACE`` seconds (rq: timeout + 60): a
    SimpleWorker stops a job at its timeout (SIGALRM), so an entry older than that means the
    worker died, and the dispatcher's clean-up reports the job within seconds."""

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        if job.timeout is None or job.timeout < 0:
            return int(super().get_heartbeat_ttl(job, working_time))
        return int(job.timeout) + ABANDON_GRACE


class MonitorForkWorker(_ContextMixin, Worker):
    """Forks a work horse per job (isolation at the cost of a fork per evaluation)."""


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
    worker.max_connection_wait_time = REDIS_WAIT_MAX
    worker.context = context
    worker.source = source
    return worker


Worker_ = MonitorSimpleWorker | MonitorForkWorker


class RqOutageFilter(logging.Filter):
    """On rq's worker logger: rq logs every failed attempt to reach Redis while it dequeues (once
    a second here); this turns them into the process's :class:`Outage` (one line when Redis is
    lost, one when the next rq line shows the worker at work again)."""

    def __init__(self, outage: Outage) -> None:
        super().__init__()
        self.outage = outage

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "could not connect to Redis instance" in message:
            self.outage.failed(ConnectionError(message.split("instance: ", 1)[-1].split(" retrying")[0]))
            return False
        self.outage.succeeded()
        return True


class WorkerBeat:
    """The worker's heartbeat, written by a daemon thread at once and then every
    ``beater.every`` seconds, with the details ``{"current_job": id of the job in hand, or
    None}`` of the worker :attr:`worker` (the one rq runs now). A Redis error skips a beat (the
    heartbeat ages; it expires if Redis stays away). :meth:`stop` ends the thread, then deletes
    the heartbeat."""

    def __init__(self, beater: Beater) -> None:
        self.beater = beater
        self.worker: Worker_ | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {beater.name}", daemon=True)

    def start(self) -> WorkerBeat:
        self._thread.start()
        return self

    def details(self) -> dict[str, Any]:
        job = None if self.worker is None else self.worker.job_in_hand
        return {"current_job": None if job is None else str(job.id)}

    def _run(self) -> None:
        while True:
            try:
                self.beater.beat(self.details(), force=True)
            except redis.RedisError as exc:
                log.debug("heartbeat of %s not written: %s", self.beater.name, exc)
            if self._done.wait(self.beater.every):
                return

    def stop(self) -> None:
        """A clean stop: no beat after this returns, and the heartbeat is gone."""
        self._done.set()
        self._thread.join()
        self.beater.stop()


def run_worker(
    make: Callable[[], Worker_],
    stopper: Stopper,
    outage: Outage,
    *,
    burst: bool = False,
    level: str = "INFO",
    beater: Beater | None = None,
) -> None:
    """Run workers until SIGTERM/SIGINT, riding out Redis outages of any length.

    rq's own loop waits out a refused connection while it dequeues (at most REDIS_WAIT_MAX
    between attempts here) but quits on a Redis error anywhere else (heartbeat, maintenance, a
    job's bookkeeping). When it quits without being asked to, this waits until Redis answers
    (capped backoff, one log line per outage), marks the old registration dead and starts a new
    worker under the same name: the process never exits on a Redis outage. With a ``beater``,
    a :class:`WorkerBeat` writes the heartbeat meanwhile and deletes it on return."""
    logging.getLogger("rq.worker").addFilter(RqOutageFilter(outage))
    beat = None if beater is None else WorkerBeat(beater).start()
    try:
        _work(make, stopper, outage, burst, level, beat)
    finally:
        if beat is not None:
            beat.stop()


def _work(
    make: Callable[[], Worker_],
    stopper: Stopper,
    outage: Outage,
    burst: bool,
    level: str,
    beat: WorkerBeat | None,
) -> None:
    while not stopper.is_set():
        worker = make()
        if beat is not None:
            beat.worker = worker
        try:
            worker.work(burst=burst, logging_level=level, with_scheduler=False)
        except redis.RedisError as exc:
            outage.failed(exc)
        stopper.install()  # rq's handlers are in place only while work() runs
        if burst or _asked_to_stop(worker):
            return
        _await_redis(worker, stopper, outage)


def _asked_to_stop(worker: Worker_) -> bool:
    """Whether rq's work() returned on SIGTERM/SIGINT: rq records the request's date (an idle
    worker stops by raising StopRequested, without setting ``_stop_requested``)."""
    return bool(worker._stop_requested or getattr(worker, "_shutdown_requested_date", None))


def _await_redis(worker: Worker_, stopper: Stopper, outage: Outage) -> None:
    """Until Redis answers again: then retire the quit worker's registration (so its name can be
    registered anew) and return."""
    while not stopper.is_set():
        try:
            worker.connection.ping()
            worker.register_death()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            stopper.wait(outage.failed(exc))
            continue
        outage.succeeded()
        log.warning("worker %s quit on a Redis error: starting it again", worker.name)
        retire_interrupted(worker)
        return


def retire_interrupted(worker: Worker_) -> None:
    """Delete the job a Redis outage interrupted (left STARTED), so it is not later reported as
    abandoned by a dead worker: the worker is alive, and the pair's next snapshot or tick
    evaluates it again (its latest-wins marker no longer holds it)."""
    job, worker.job_in_hand = worker.job_in_hand, None
    try:
        if job is None or job.get_status(refresh=True) != JobStatus.STARTED:
            return
    except InvalidJobOperation:  # Redis came back without the job (an older AOF, or empty)
        return
    job.delete()
    log.warning(
        "job %s was interrupted by the Redis outage; its pair is evaluated again on its next snapshot", job.id
    )
