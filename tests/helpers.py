"""Test helpers: free ports, polling with deadlines, subprocess management."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from monitorx.procs import free_port  # one implementation, shared with the demo and the bench

T = TypeVar("T")

__all__ = ["alerts_of", "free_port", "in_process", "wait_until"]


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def in_process(url: str, plan: Any, **dispatcher_options: Any) -> tuple[Any, Any, Any]:
    """A started dispatcher, a SimpleWorker (run it with ``work(burst=True)``) and a snapshot
    publisher on one Redis: the pipeline minus the sockets, for tests that call ``step()``."""
    from dispatcher.service import Dispatcher
    from shared.keys import Keys
    from shared.redisio import Publisher, connect
    from workers.context import Context
    from workers.worker import make_worker

    keys = Keys()
    r = connect(url)
    options = {"consumer": "d1", "block_ms": 10, **dispatcher_options}
    d = Dispatcher(r=r, rq_connection=connect(url, decode=False), keys=keys, plan=plan, **options).start()
    worker = make_worker("simple", connect(url, decode=False), Context(r, keys, plan))
    return d, worker, Publisher(r, keys)


def alerts_of(r: Any, check: str | None = None) -> list[Any]:
    """Every alert on the alerts stream (of one check, when given)."""
    from shared.keys import Keys
    from shared.models import Alert

    found = [Alert.model_validate_json(f["alert"]) for _, f in r.xrange(Keys().alerts) if "alert" in f]
    return [a for a in found if check is None or a.check == check]
