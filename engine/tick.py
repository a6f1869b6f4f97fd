"""What a tick does, written once for the dispatcher (live) and the backtest (virtual time): which
(instance, account) pairs the time-driven checks evaluate, and what happens to each report's slot."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from engine.plan import Bound, Plan
from engine.schedule import Decision, decide


def time_driven(
    plan: Plan, seen: Iterable[str], now: float, started_at: float
) -> Iterator[tuple[Bound, str]]:
    """The pairs a tick at ``now`` evaluates: each time-driven instance over every seen account
    it covers, plus its explicit accounts once unseen accounts are due (``stale_after`` seconds
    after monitoring started at ``started_at``), each instance's accounts in sorted order."""
    unseen_due = now - started_at >= plan.config.stale_after
    seen = set(seen)
    for bound in plan.on_tick():
        accounts = {a for a in seen if bound.instance.covers(a)}
        if unseen_due:
            accounts |= set(bound.instance.explicit_accounts)
        for account in sorted(accounts):
            yield bound, account


def report_decision(bound: Bound, last: float | None, now: float) -> Decision:
    """What a tick at ``now`` does with a report whose last slot handled is ``last`` (None:
    never): send a slot (on time or late), skip one, or nothing."""
    return decide(bound.schedule, last, now, bound.instance.missed)
