"""The job class every MonitorX worker runs with: it refuses any job whose function or callback is
not registered here (rq has no allowlist of its own: a forged job in Redis could name any
importable callable). Checks themselves are data (an instance name), so plugins need no entry here."""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job

from shared.keys import COUNTER_REJECTED_JOBS, DEFAULT_PREFIX, Keys

log = logging.getLogger(__name__)

ALLOWED_FUNCTIONS = frozenset({"workers.runner.run_check", "workers.runner.run_report", "workers.bench.noop"})
"""The only job functions a MonitorX worker executes."""
ALLOWED_CALLBACKS = frozenset({"workers.runner.on_job_failure"})


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
