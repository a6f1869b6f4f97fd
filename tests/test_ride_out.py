"""``shared.redisio.ride_out``'s batch window: after a step that did work the loop waits out the
window (so the alerter takes alerts in batches under load), after an idle step or one that left
a backlog (``behind``) it does not, and a stop request ends the wait. No Redis here: the services
only count their steps."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shared.lifecycle import Stopper
from shared.redisio import Outage, ride_out


@dataclass
class Steps:
    """A service whose steps return ``done`` and which asks the loop to stop after ``n`` steps."""

    stopper: Stopper
    n: int
    done: int
    behind: bool = False
    began: list[float] = field(default_factory=list)

    def start(self) -> Steps:
        return self

    def step(self) -> int:
        self.began.append(time.monotonic())
        if len(self.began) >= self.n:
            self.stopper.set()
        return self.done


def test_after_a_step_that_did_work_the_next_begins_a_window_after_it() -> None:
    stopper = Stopper()
    service = Steps(stopper, n=4, done=1)
    ride_out(service, stopper, Outage("test"), batch_window=0.05)
    gaps = [b - a for a, b in zip(service.began, service.began[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.05


def test_a_step_that_found_nothing_is_followed_at_once() -> None:
    stopper = Stopper()
    service = Steps(stopper, n=5, done=0)
    started = time.monotonic()
    ride_out(service, stopper, Outage("test"), batch_window=60.0)
    assert len(service.began) == 5 and time.monotonic() - started < 30  # no 60 s window waited


def test_a_stop_request_ends_the_window() -> None:
    stopper = Stopper()
    service = Steps(stopper, n=1, done=1)  # works, then asks to stop: the window is not waited
    started = time.monotonic()
    ride_out(service, stopper, Outage("test"), batch_window=60.0)
    assert len(service.began) == 1 and time.monotonic() - started < 30


def test_a_step_that_left_a_backlog_is_followed_at_once() -> None:
    stopper = Stopper()
    service = Steps(stopper, n=5, done=1, behind=True)  # each read was a full batch
    started = time.monotonic()
    ride_out(service, stopper, Outage("test"), batch_window=60.0)
    assert len(service.began) == 5 and time.monotonic() - started < 30
