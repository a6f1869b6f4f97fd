"""One evaluation of one (instance, account) pair, pure: run the check, advance the state machine
of every key, render the alerts. Also the alerts of a report slot and of a failed job.

A check that raises (or times out) never raises here: it becomes a ``check_error`` alert for
that pair, with its own key (``ERROR_KEY``) and a cooldown of at least ``ERROR_MIN_COOLDOWN``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from engine.alerts import make_alert
from engine.checks.base import Finding, Message, ReportSpec
from engine.plan import Bound
from engine.state import KeyState, Policy, at_rest, step
from shared.models import Alert, Snapshot

log = logging.getLogger(__name__)

ERROR_KEY = "__error__"
"""State key of the check itself failing (its check_error alerts)."""
ERROR_MIN_COOLDOWN = 300.0
"""check_error alerts of one pair repeat at most this often (seconds)."""

Evaluation = Sequence[Finding] | Exception
"""What running a check gave: its findings, or the exception it raised."""


@dataclass(frozen=True)
class Assessment:
    states: dict[str, KeyState]
    alerts: list[Alert]


def pair_at_rest(states: Mapping[str, KeyState], forget_on_clear: bool) -> bool:
    """Every key of a pair at rest (``engine.state.at_rest``; its check's error key never forgets):
    an evaluation that breaches nothing and raises nothing changes nothing."""
    return all(at_rest(s, forget_on_clear and key != ERROR_KEY) for key, s in states.items())


def evaluate(bound: Bound, snap: Snapshot | None, now: float) -> list[Finding] | Exception:
    """Run the check once: its findings, or the exception it raised (a timeout included)."""
    try:
        return list(bound.check.evaluate(snap, bound.params, now))
    except Exception as exc:  # noqa: BLE001 - assess turns it into a check_error
        return exc


def assess(
    bound: Bound,
    account: str,
    snap: Snapshot | None,
    now: float,
    prior: Mapping[str, KeyState],
    clock: float,
    found: Evaluation,
) -> Assessment:
    """Pure: given the outcome of one evaluation (:func:`evaluate`: its findings, or the exception
    it raised), advance every key and render the alerts of this evaluation."""
    if isinstance(found, Exception):
        return _failure(bound, account, now, prior, clock, found)
    try:
        states, fired, resolved = _advance(found, prior, now, bound.policy)
        alerts = _check_alerts(bound, account, snap, now, clock, fired, resolved)
    except Exception as exc:  # noqa: BLE001 - any failure of check code is reported, never raised
        return _failure(bound, account, now, prior, clock, exc)
    error_state, event = step(prior.get(ERROR_KEY, KeyState()), False, now, _error_policy(bound))
    states[ERROR_KEY] = error_state
    if event == "resolve":
        alerts.append(_error_alert(bound, account, now, clock, "resolved", "The check runs normally again."))
    return Assessment(states, alerts)


def _advance(
    findings: Sequence[Finding], prior: Mapping[str, KeyState], now: float, policy: Policy
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
    return make_alert(
        instance=bound.name,
        check=check or bound.check.name,
        account=account,
        state=state,
        message=message,
        observed_at=now,
        emitted_at=clock,
        keys=keys,
        config_labels=bound.labels_for(account),
    )


def _error_policy(bound: Bound) -> Policy:
    return Policy(delay=None, cooldown=max(bound.policy.cooldown, ERROR_MIN_COOLDOWN), forget_on_clear=False)


def _error_alert(
    bound: Bound, account: str, now: float, clock: float, state: Literal["firing", "resolved"], text: str
) -> Alert:
    firing = state == "firing"
    title = f"Check {'error' if firing else 'recovered'}: {bound.name} on {account}"
    message = Message(title=title, text=text, severity="critical" if firing else "info")
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


# ---------------------------------------------------------------- reports


def report_accounts(bound: Bound, seen: Any) -> list[str]:
    """The instance's explicit accounts in configured order, then seen accounts its patterns cover."""
    explicit = list(bound.instance.explicit_accounts)
    extra = sorted(a for a in seen if a not in explicit and bound.instance.covers(a))
    return explicit + extra


def report_alerts(
    bound: Bound, snapshots: Mapping[str, Snapshot | None], slot: float, late: bool, clock: float
) -> list[Alert]:
    """Pure: the alerts of one report slot (a check_error alert if building it fails). Their ids
    derive from (instance, label, slot): a slot enqueued twice is still delivered once."""
    spec = bound.spec
    assert isinstance(spec, ReportSpec)
    try:
        messages = list(spec.build(snapshots, bound.params, slot))
    except Exception as exc:  # noqa: BLE001 - a failing report is reported, never raised
        return [_report_error(bound, slot, clock, exc)]
    return [
        make_alert(
            instance=bound.name,
            check=spec.name,
            account=label,
            state="firing",
            message=replace(message, title=f"{message.title} (late)") if late else message,
            observed_at=slot,
            emitted_at=clock,
            labels={"late": "true"} if late else {},
            config_labels=bound.labels_for(label),
            event=(bound.name, label, "report", repr(slot)),
        )
        for label, message in messages
    ]


def _report_error(bound: Bound, slot: float, clock: float, exc: Exception) -> Alert:
    log.warning("report %s failed: %s", bound.name, describe_error(exc))
    return make_alert(
        instance=bound.name,
        check="check_error",
        account="*",
        state="firing",
        message=Message(f"Report error: {bound.name}", describe_error(exc), "critical"),
        observed_at=slot,
        emitted_at=clock,
        keys=(ERROR_KEY,),
        config_labels=bound.labels_for("*"),
        event=(bound.name, "report-error", repr(slot)),
    )


# ---------------------------------------------------------------- failed jobs


def job_failure_alert(job_id: str, instance: str, account: str, reason: str, now: float) -> Alert:
    """The check_error of a job that failed outside the check (a worker died, a crash in the
    framework); one per job. Only the built-in labels: the failure callback may run without the
    configuration (``workers.jobs.on_job_failure``)."""
    return make_alert(
        instance=instance,
        check="check_error",
        account=account,
        state="firing",
        message=Message(f"Check error: {instance} on {account}", reason, "critical"),
        observed_at=now,
        emitted_at=now,
        keys=(ERROR_KEY,),
        event=("job-failed", job_id),
    )
