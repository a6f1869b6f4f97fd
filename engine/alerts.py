"""The one place that builds an :class:`~shared.models.Alert`.

An alert's id derives from its event, so the same event always gets the same id and the alerter
delivers it once, however often it is written: by default from (instance, account, check, state,
keys..., time of the evaluation); events of their own kind (a report slot, a failed job, a refused
configuration file) pass the parts that identify them as ``event``.

An alert's identity across its events is its ``fingerprint`` (``shared.models.fingerprint`` of
instance, account and keys), and everything routing, silences and inhibition match on is its
``labels`` (see :func:`make_alert`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from engine.checks.base import Message
from shared import metrics as M
from shared.keys import COUNTER_ALERTS, COUNTER_CHECK_ERRORS, Keys
from shared.models import Alert, AlertState, alert_id, fingerprint


def make_alert(
    *,
    instance: str,
    check: str,
    account: str,
    state: AlertState,
    message: Message,
    observed_at: float,
    emitted_at: float,
    keys: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    config_labels: Mapping[str, str] | None = None,
    event: Sequence[object] | None = None,
) -> Alert:
    """An alert of ``check`` about ``account``: ``observed_at`` is the time of the evaluation (or
    of the event), ``emitted_at`` the wall clock of the process writing it.

    Its labels are the full set: ``config_labels`` (those the configuration attaches,
    ``engine.plan.Bound.labels_for``), then the caller's ``labels`` (which win over them), then
    the built-in ones (which win over both, ``shared.models.BUILTIN_LABELS``): ``check``,
    ``instance``, ``account``, ``venue`` (:func:`venue_of`; left out when empty), ``severity``
    and ``key`` (the keys joined by ``,``; left out when there are none)."""
    parts = event if event is not None else (instance, account, check, state, *keys, repr(observed_at))
    key = ",".join(keys)
    builtin = _builtin_labels(check, instance, account, message.severity, key)
    return Alert(
        id=alert_id(*parts),
        check=check,
        instance=instance,
        account=account,
        state=state,
        severity=message.severity,
        keys=tuple(keys),
        title=message.title,
        text=message.text,
        observed_at=observed_at,
        emitted_at=emitted_at,
        labels={**builtin, **(config_labels or {}), **(labels or {}), **builtin},  # built-ins listed first
        fingerprint=fingerprint(instance, account, key),
    )


def _builtin_labels(check: str, instance: str, account: str, severity: str, key: str) -> dict[str, str]:
    labels = {"check": check, "instance": instance, "account": account}
    venue = venue_of(account)
    if venue:
        labels["venue"] = venue
    labels["severity"] = severity
    if key:
        labels["key"] = key
    return labels


def venue_of(account: str) -> str:
    """The venue of an account id: its first ``-``-separated part, lower-cased
    (``BINANCE-AAZ01-UM`` -> ``binance``, ``OKX-...`` -> ``okx``); empty for an id without a
    ``-`` (a report's ``*``, a feed name) or starting with one."""
    head, dash, _ = account.partition("-")
    return head.lower() if dash else ""


def emit(client: Any, keys: Keys, alerts: Sequence[Alert]) -> None:
    """Add alerts to the alerts stream (field ``alert``: the Alert JSON) and count them
    (``alerts_emitted``, ``check_errors`` for firing check errors, and ``alerts_total`` per check
    and state: :func:`alert_counts`), on a Redis client or on a pipeline the caller executes.
    (Check evaluations write theirs inside the pair's compare-and-set script, ``engine.store``,
    with the same fields and counters.)"""
    for alert in alerts:
        client.xadd(keys.alerts, {"alert": alert.model_dump_json()})
    errors = sum(1 for a in alerts if a.check == "check_error" and a.state == "firing")
    if alerts:
        client.hincrby(keys.counters, COUNTER_ALERTS, len(alerts))
    if errors:
        client.hincrby(keys.counters, COUNTER_CHECK_ERRORS, errors)
    for (check, state), n in alert_counts(alerts).items():
        M.count(client, keys, M.ALERTS, {"check": check, "state": state}, n)


def alert_counts(alerts: Sequence[Alert]) -> Counter[tuple[str, str]]:
    """How many of the alerts per (check, state): the labels of ``alerts_total``."""
    return Counter((a.check, a.state) for a in alerts)
