"""The framework around a check: it picks the snapshot and the time, runs the pure functions,
advances the state machine and writes the new state and the alerts in one transaction.

Idempotent by construction: every pair's state remembers the time of its newest evaluation
(``_now``) and refuses an evaluation at the same or an older time, so a job that runs twice (RQ
retries abandoned jobs) or an older snapshot changes nothing; alert ids are derived from the event,
so even a duplicate that got through is recognised by the alerter.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from shared import keys as K
from shared.keys import Keys
from shared.models import Alert, Snapshot, alert_id
from shared.redisio import latest
from workers import context
from workers.checks.base import Finding, Message
from workers.plan import Bound
from workers.state import KeyState, Policy, step

log = logging.getLogger(__name__)

ERROR_KEY = "__error__"
"""State key of the check itself failing (its check_error alerts)."""
ERROR_MIN_COOLDOWN = 300.0
"""check_error alerts of one pair repeat at most this often (seconds)."""
NOW_FIELD = "_now"

Outcome = Literal["applied", "stale", "no-data", "unknown-instance"]


@dataclass(frozen=True)
class Assessment:
    states: dict[str, KeyState]
    alerts: list[Alert]


def run_check(instance: str, account: str, at: float | None = None) -> str:
    """The RQ job: evaluate one (instance, account) pair on the account's newest snapshot.

    ``at`` is the evaluation time of time-driven runs (dispatcher ticks); otherwise the time is
    the snapshot's observed time, so a replay behaves like live."""
    ctx = context.current()
    ctx.redis.delete(ctx.keys.queued(instance, account))  # from here on a newer frame queues a new job
    bound = ctx.plan.get(instance)
    if bound is None:
        log.warning("job for unknown instance %s (configuration changed?)", instance)
        return "unknown-instance"
    snap = latest(ctx.redis, ctx.keys, account)
    now = at if at is not None else (snap.observed_at if snap else None)
    if now is None:
        return "no-data"
    return apply(ctx.redis, ctx.keys, bound, account, snap, now, ctx.clock)


def assess(
    bound: Bound, account: str, snap: Snapshot | None, now: float, prior: Mapping[str, KeyState], clock: float
) -> Assessment:
    """Pure: evaluate, advance every key, render the alerts of this evaluation."""
    try:
        findings = list(bound.check.evaluate(snap, bound.params, now))
        states, fired, resolved = _advance(findings, prior, now, bound.policy)
        alerts = _check_alerts(bound, account, snap, now, clock, findings, fired, resolved)
    except Exception as exc:  # noqa: BLE001 - any failure of check code is reported, never raised
        return _failure(bound, account, now, prior, clock, exc)
    error_state, event = step(prior.get(ERROR_KEY, KeyState()), False, now, _error_policy(bound))
    states[ERROR_KEY] = error_state
    if event == "resolve":
        alerts.append(_error_alert(bound, account, now, clock, "resolved", "The check runs normally again."))
    return Assessment(states, alerts)


def _advance(
    findings: list[Finding], prior: Mapping[str, KeyState], now: float, policy: Policy
) -> tuple[dict[str, KeyState], list[Finding], list[str]]:
    states: dict[str, KeyState] = {}
    fired: list[Finding] = []
    resolved: list[str] = []
    for finding in findings:
        states[finding.key], event = step(prior.get(finding.key, KeyState()), finding.breached, now, policy)
        if event == "fire":
            fired.append(finding)
        elif event == "resolve":
            resolved.append(finding.key)
    return states, fired, resolved


def _check_alerts(
    bound: Bound,
    account: str,
    snap: Snapshot | None,
    now: float,
    clock: float,
    findings: list[Finding],
    fired: list[Finding],
    resolved: list[str],
) -> list[Alert]:
    alerts = []
    if fired:
        message = bound.check.render(account, snap, bound.params, fired)
        alerts.append(_alert(bound, account, "firing", [f.key for f in fired], message, now, clock))
    if resolved and bound.send_resolved:
        message = Message(
            title=f"Resolved: {bound.check.name} on {account}",
            text=f"Back to normal: {', '.join(resolved)}.",
            severity="info",
        )
        alerts.append(_alert(bound, account, "resolved", resolved, message, now, clock))
    return alerts


def _alert(
    bound: Bound, account: str, state: Literal["firing", "resolved"], keys: list[str], message: Message,
    now: float, clock: float, check: str | None = None,
) -> Alert:
    check = check or bound.check.name
    return Alert(
        id=alert_id(bound.name, account, check, state, *keys, repr(now)),
        check=check,
        instance=bound.name,
        account=account,
        state=state,
        severity=message.severity,
        keys=tuple(keys),
        title=message.title,
        text=message.text,
        observed_at=now,
        emitted_at=clock,
    )


def _error_policy(bound: Bound) -> Policy:
    return Policy(delay=None, cooldown=max(bound.policy.cooldown, ERROR_MIN_COOLDOWN), forget_on_clear=False)


def _error_alert(bound: Bound, account: str, now: float, clock: float, state: Literal["firing", "resolved"],
                 text: str) -> Alert:
    title = f"Check error: {bound.name} on {account}" if state == "firing" else f"Check recovered: {bound.name} on {account}"
    severity: Literal["critical", "info"] = "critical" if state == "firing" else "info"
    message = Message(title=title, text=text, severity=severity)
    return _alert(bound, account, state, [ERROR_KEY], message, now, clock, check="check_error")


def describe_error(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _failure(bound: Bound, account: str, now: float, prior: Mapping[str, KeyState], clock: float,
             exc: Exception) -> Assessment:
    log.warning("check %s on %s failed: %s", bound.name, account, describe_error(exc))
    state, event = step(prior.get(ERROR_KEY, KeyState()), True, now, _error_policy(bound))
    alerts = [_error_alert(bound, account, now, clock, "firing", describe_error(exc))] if event == "fire" else []
    return Assessment({ERROR_KEY: state}, alerts)


def _encode(states: Mapping[str, KeyState]) -> tuple[dict[str, str], list[str]]:
    keep = {k: json.dumps(s.to_json()) for k, s in states.items() if s != KeyState()}
    return keep, [k for k, s in states.items() if s == KeyState()]


def apply(
    r: redis.Redis, keys: Keys, bound: Bound, account: str, snap: Snapshot | None, now: float,
    clock: Any = time.time,
) -> Outcome:
    """Assess and write the new state and alerts atomically (WATCH/MULTI on the pair's state)."""
    key = keys.state(bound.name, account)
    with r.pipeline() as pipe:
        while True:
            try:
                return _apply_once(pipe, keys, key, bound, account, snap, now, clock())
            except redis.WatchError:
                continue


def _apply_once(pipe: Any, keys: Keys, key: str, bound: Bound, account: str, snap: Snapshot | None, now: float,
                clock: float) -> Outcome:
    pipe.watch(key)
    stored: dict[str, str] = pipe.hgetall(key)
    last = stored.pop(NOW_FIELD, None)
    if last is not None and float(last) >= now:
        pipe.reset()
        return "stale"
    prior = {k: KeyState.from_json(json.loads(v)) for k, v in stored.items()}
    result = assess(bound, account, snap, now, prior, clock)
    keep, drop = _encode(result.states)
    pipe.multi()
    pipe.hset(key, mapping={NOW_FIELD: repr(now), **keep})
    if drop:
        pipe.hdel(key, *drop)
    for alert in result.alerts:
        pipe.xadd(keys.alerts, {"alert": alert.model_dump_json()})
    pipe.hincrby(keys.counters, K.COUNTER_EVALS, 1)
    if result.alerts:
        pipe.hincrby(keys.counters, K.COUNTER_ALERTS, len(result.alerts))
    pipe.execute()
    return "applied"


def on_job_failure(job: Any, connection: redis.Redis, exc_type: Any, value: Any, tb: Any) -> None:
    """RQ failure callback (a crash outside the check, a timeout, an abandoned job). It may run in
    another process, even an operator's ``rq info``: it uses only the job and the connection."""
    prefix = str(job.meta.get("prefix", K.DEFAULT_PREFIX))
    args = list(job.args or ())
    instance, account = (str(args[0]), str(args[1])) if len(args) >= 2 else ("?", "?")
    reason = "the job was abandoned (worker lost)" if value is None else f"{getattr(exc_type, '__name__', exc_type)}: {value}"
    alert = Alert(
        id=alert_id("job-failed", job.id),
        check="check_error",
        instance=instance,
        account=account,
        state="firing",
        severity="critical",
        keys=(ERROR_KEY,),
        title=f"Check error: {instance} on {account}",
        text=f"Job {job.id} failed: {reason}",
        observed_at=time.time(),
        emitted_at=time.time(),
    )
    keys = Keys(prefix)
    connection.xadd(keys.alerts, {"alert": alert.model_dump_json()})
    connection.hincrby(keys.counters, K.COUNTER_CHECK_ERRORS, 1)
