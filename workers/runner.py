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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from engine.checks.base import Finding, Message, ReportSpec
from engine.plan import Bound
from engine.state import INITIAL, KeyState, Policy, step
from shared import keys as K
from shared.keys import Keys
from shared.models import Alert, Snapshot, alert_id
from workers import context

log = logging.getLogger(__name__)

ERROR_KEY = "__error__"
"""State key of the check itself failing (its check_error alerts)."""
ERROR_MIN_COOLDOWN = 300.0
"""check_error alerts of one pair repeat at most this often (seconds)."""
NOW_FIELD = "_now"
HOLD_SECONDS = 60
"""A pair whose check ran into the job timeout gets no new job for this long (``hold`` key): a
check that hangs costs one worker for one timeout per minute, never every worker."""

Outcome = Literal["applied", "unchanged", "stale", "no-data", "unknown-instance"]


@dataclass(frozen=True)
class Assessment:
    states: dict[str, KeyState]
    alerts: list[Alert]


def run_check(instance: str, account: str, at: float | None = None) -> str:
    """The RQ job: evaluate one (instance, account) pair on the account's newest snapshot.

    ``at`` is the evaluation time of time-driven runs (dispatcher ticks); otherwise the time is
    the snapshot's observed time, so a replay behaves like live. One round trip reads (and clears
    the latest-wins marker first, so a frame arriving from now on queues a fresh job), one writes."""
    ctx = context.current()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.delete(ctx.keys.queued(instance, account))
    pipe.hget(ctx.keys.latest(account), "snapshot")
    pipe.hgetall(ctx.keys.state(instance, account))
    pipe.hincrby(ctx.keys.counters, K.COUNTER_EVALS, 1)
    _, raw, stored, _ = pipe.execute()
    bound = ctx.plan.get(instance)
    if bound is None:
        log.warning("job for unknown instance %s (configuration changed?)", instance)
        return "unknown-instance"
    snap = None if raw is None else Snapshot.model_validate_json(raw)
    now = at if at is not None else (snap.observed_at if snap else None)
    if now is None:
        return "no-data"
    return apply(ctx.redis, ctx.keys, bound, account, snap, now, ctx.clock, stored)


def assess(
    bound: Bound,
    account: str,
    snap: Snapshot | None,
    now: float,
    prior: Mapping[str, KeyState],
    clock: float,
    found: Sequence[Finding] | Exception | None = None,
) -> Assessment:
    """Pure: evaluate (unless the caller has the outcome of this very evaluation: its findings,
    or the exception it raised), advance every key, render the alerts of this evaluation."""
    if isinstance(found, Exception):
        return _failure(bound, account, now, prior, clock, found)
    try:
        findings = list(bound.check.evaluate(snap, bound.params, now) if found is None else found)
        states, fired, resolved = _advance(findings, prior, now, bound.policy)
        alerts = _check_alerts(bound, account, snap, now, clock, findings, fired, resolved)
    except Exception as exc:  # noqa: BLE001 - any failure of check code is reported, never raised
        return _failure(bound, account, now, prior, clock, exc)
    error_state, event = step(prior.get(ERROR_KEY, KeyState()), False, now, _error_policy(bound))
    states[ERROR_KEY] = error_state
    if event == "resolve":
        alerts.append(_error_alert(bound, account, now, clock, "resolved", "The check runs normally again."))
    return Assessment(states, alerts)


def evaluate(bound: Bound, snap: Snapshot | None, now: float) -> list[Finding] | Exception:
    """Run the check once: its findings, or the exception it raised (a timeout included)."""
    try:
        return list(bound.check.evaluate(snap, bound.params, now))
    except Exception as exc:  # noqa: BLE001 - assess turns it into a check_error
        return exc


def quiet_states(
    bound: Bound, prior: Mapping[str, KeyState], now: float, verdicts: Sequence[tuple[str, bool]]
) -> dict[str, KeyState] | None:
    """Pure: the states :func:`assess` would write for an evaluation whose findings have these
    ``(key, breached)`` verdicts, when it would send no alert; None when it would send one (a
    key fires or resolves, or the check's error resolves): then only assess can tell what."""
    states: dict[str, KeyState] = {}
    policy = bound.policy
    for key, breached in verdicts:
        states[key], event = step(prior.get(key, INITIAL), breached, now, policy)
        if event is not None:
            return None
    error = prior.get(ERROR_KEY)
    if error is None:
        states[ERROR_KEY] = INITIAL  # a clear leaves the initial state as it is
        return states
    states[ERROR_KEY], event = step(error, False, now, _error_policy(bound))
    return states if event is None else None


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
    bound: Bound,
    account: str,
    state: Literal["firing", "resolved"],
    keys: list[str],
    message: Message,
    now: float,
    clock: float,
    check: str | None = None,
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


def _error_alert(
    bound: Bound, account: str, now: float, clock: float, state: Literal["firing", "resolved"], text: str
) -> Alert:
    title = (
        f"Check error: {bound.name} on {account}"
        if state == "firing"
        else f"Check recovered: {bound.name} on {account}"
    )
    severity: Literal["critical", "info"] = "critical" if state == "firing" else "info"
    message = Message(title=title, text=text, severity=severity)
    return _alert(bound, account, state, [ERROR_KEY], message, now, clock, check="check_error")


def describe_error(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


def _failure(
    bound: Bound, account: str, now: float, prior: Mapping[str, KeyState], clock: float, exc: Exception
) -> Assessment:
    log.warning("check %s on %s failed: %s", bound.name, account, describe_error(exc))
    state, event = step(prior.get(ERROR_KEY, KeyState()), True, now, _error_policy(bound))
    alerts = (
        [_error_alert(bound, account, now, clock, "firing", describe_error(exc))] if event == "fire" else []
    )
    return Assessment({ERROR_KEY: state}, alerts)


def _encode(states: Mapping[str, KeyState]) -> tuple[dict[str, str], list[str]]:
    keep = {k: json.dumps(s.to_json()) for k, s in states.items() if s != KeyState()}
    return keep, [k for k, s in states.items() if s == KeyState()]


# KEYS: state hash, alerts stream, counters. ARGV: expected _now ('' = none), new _now, the names
# of the _now field and of the alerts and check-errors counters, then n_set, field, value...,
# n_del, field..., n_alerts, alert json..., n_errors.
# Compare-and-set: applies only if nobody evaluated this pair since we read its state.
_CAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[3]) or ''
if cur ~= ARGV[1] then return 0 end
local i = 6
local n = tonumber(ARGV[i]); i = i + 1
local args = {ARGV[3], ARGV[2]}
for _ = 1, n do table.insert(args, ARGV[i]); table.insert(args, ARGV[i + 1]); i = i + 2 end
redis.call('HSET', KEYS[1], unpack(args))
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('XADD', KEYS[2], '*', 'alert', ARGV[i]); i = i + 1 end
if n > 0 then redis.call('HINCRBY', KEYS[3], ARGV[4], n) end
local errors = tonumber(ARGV[i])
if errors > 0 then redis.call('HINCRBY', KEYS[3], ARGV[5], errors) end
return 1
"""
CAS_ATTEMPTS = 20


def apply(
    r: redis.Redis,
    keys: Keys,
    bound: Bound,
    account: str,
    snap: Snapshot | None,
    now: float,
    clock: Callable[[], float] = time.time,
    stored: dict[str, str] | None = None,
) -> Outcome:
    """Assess and write the new state and alerts atomically, if no evaluation at the same or a
    later time got there first (then nothing changes: idempotent under retries and reordering).

    An evaluation that changes no state and emits nothing writes nothing (most of them: a healthy
    account, or a breach waiting out its delay or cooldown): it costs one round trip, the read."""
    key = keys.state(bound.name, account)
    cas = None
    found: list[Finding] | Exception | None = None  # the check runs once, however often we write
    for _ in range(CAS_ATTEMPTS):
        fetched: Any = r.hgetall(key) if stored is None else stored
        stored = dict(fetched)
        last = stored.pop(NOW_FIELD, None)
        if last is not None and float(last) >= now:
            return "stale"
        prior = {k: KeyState.from_json(json.loads(v)) for k, v in stored.items()}
        if found is None:
            found = evaluate(bound, snap, now)
            if isinstance(found, JobTimeoutException):
                r.set(keys.hold(bound.name, account), repr(now), ex=HOLD_SECONDS)
        result = assess(bound, account, snap, now, prior, clock(), found)
        keep, drop = _encode(result.states)
        if not result.alerts and keep == stored:
            return "unchanged"
        cas = cas or r.register_script(_CAS)
        if cas(keys=[key, keys.alerts, keys.counters], args=_cas_args(last, now, keep, drop, result.alerts)):
            return "applied"
        stored = None
    raise RuntimeError(f"state of {bound.name}/{account} kept changing under us")


def _cas_args(
    last: str | None, now: float, keep: dict[str, str], drop: list[str], alerts: list[Alert]
) -> list[str | int]:
    errors = sum(1 for a in alerts if a.check == "check_error" and a.state == "firing")
    args: list[str | int] = [
        last or "",
        repr(now),
        NOW_FIELD,
        K.COUNTER_ALERTS,
        K.COUNTER_CHECK_ERRORS,
        len(keep),
    ]
    for field_name, value in keep.items():
        args += [field_name, value]
    args += [len(drop), *drop, len(alerts), *(a.model_dump_json() for a in alerts), errors]
    return args


def on_job_failure(job: Any, connection: redis.Redis, exc_type: Any, value: Any, tb: Any) -> None:
    """RQ failure callback (a crash outside the check, a timeout, an abandoned job). It may run in
    another process, even an operator's ``rq info``: it uses only the job and the connection."""
    prefix = str(job.meta.get("prefix", K.DEFAULT_PREFIX))
    args = list(job.args or ())
    instance, account = (str(args[0]), str(args[1])) if len(args) >= 2 else ("?", "?")
    alert = Alert(
        id=alert_id("job-failed", job.id),
        check="check_error",
        instance=instance,
        account=account,
        state="firing",
        severity="critical",
        keys=(ERROR_KEY,),
        title=f"Check error: {instance} on {account}",
        text=failure_text(job.id, exc_type, value),
        observed_at=time.time(),
        emitted_at=time.time(),
    )
    keys = Keys(prefix)
    connection.xadd(keys.alerts, {"alert": alert.model_dump_json()})
    connection.hincrby(keys.counters, K.COUNTER_CHECK_ERRORS, 1)


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
    for alert in alerts:
        pipe.xadd(ctx.keys.alerts, {"alert": alert.model_dump_json()})
    pipe.hincrby(ctx.keys.counters, K.COUNTER_ALERTS, len(alerts))
    pipe.execute()
    return "applied"


def report_accounts(bound: Bound, seen: Any) -> list[str]:
    """The instance's explicit accounts in configured order, then seen accounts its patterns cover."""
    explicit = list(bound.instance.explicit_accounts)
    extra = sorted(a for a in seen if a not in explicit and bound.instance.covers(a))
    return explicit + extra


def report_alerts(
    bound: Bound, snapshots: Mapping[str, Snapshot | None], slot: float, late: bool, clock: float
) -> list[Alert]:
    """Pure: the alerts of one report slot (a check_error alert if building it fails)."""
    spec = bound.spec
    assert isinstance(spec, ReportSpec)
    try:
        messages = list(spec.build(snapshots, bound.params, slot))
    except Exception as exc:  # noqa: BLE001 - a failing report is reported, never raised
        return [_report_error(bound, slot, clock, exc)]
    return [
        Alert(
            id=alert_id(bound.name, label, "report", repr(slot)),
            check=spec.name,
            instance=bound.name,
            account=label,
            state="firing",
            severity=message.severity,
            title=f"{message.title} (late)" if late else message.title,
            text=message.text,
            observed_at=slot,
            emitted_at=clock,
            labels={"late": "true"} if late else {},
        )
        for label, message in messages
    ]


def _report_error(bound: Bound, slot: float, clock: float, exc: Exception) -> Alert:
    log.warning("report %s failed: %s", bound.name, describe_error(exc))
    return Alert(
        id=alert_id(bound.name, "report-error", repr(slot)),
        check="check_error",
        instance=bound.name,
        account="*",
        state="firing",
        severity="critical",
        keys=(ERROR_KEY,),
        title=f"Report error: {bound.name}",
        text=describe_error(exc),
        observed_at=slot,
        emitted_at=clock,
    )
