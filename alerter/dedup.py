"""The dedup stage: what of a group a receiver has not been told, against the notification log.

The notification log is the delivery markers ``Keys.sent(receiver, alert id)`` (``sent`` or
``dead``), written when a notification is recorded. An event is new to a receiver while it has
no marker: a check's cooldown repeat and a resolution are events with ids of their own, so they
are new; the same alert written twice is not. A route repeat (``repeat_interval``) sends what
fires again without any new event.

Muted events (silenced or inhibited) are never sent; the latest state of a muted alert is sent
once it is no longer muted, if it still fires (``Alertmanager``'s behaviour after a silence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alerter.groups import Group
from alerter.mute import Mute
from alerter.notify import Notification
from shared.models import Alert


def _order(alert: Alert) -> tuple[bool, str, str, str]:
    return (alert.state != "firing", alert.account, alert.check, alert.id)


def visible(group: Group, mute: Mute) -> list[Alert]:
    """The group's alerts as a message shows them: the latest event of each member that is not
    muted, each alert once, firing first, then by account and check."""
    unique = {a.id: a for a in group.members.values() if mute.reason(a) is None}
    return sorted(unique.values(), key=_order)


def muted_events(group: Group, mute: Mute) -> list[str]:
    """The ``e:`` fields of events muted now: dropped, never sent."""
    return [f"e:{i}" for i, a in group.events.items() if mute.reason(a) is not None]


def new_events(group: Group, shown: Iterable[Alert], told: Mapping[str, bool]) -> list[Alert]:
    """Events the receiver has not been told (``told``: alert id -> has a marker), oldest first:
    pending events, then shown firing alerts without a marker (their event was muted)."""
    found = {a.id: a for a in group.events.values() if not told.get(a.id, False)}
    for alert in shown:
        if alert.state == "firing" and not told.get(alert.id, False):
            found.setdefault(alert.id, alert)
    return sorted(found.values(), key=lambda a: (a.emitted_at, a.observed_at, a.id))


def notifications(
    group: Group, shown: list[Alert], new: list[Alert], repeat: bool, version: int
) -> list[Notification]:
    """What to send: nothing when nothing is new and no repeat is due; with ``group_by: [...]``
    one notification per new event (each alert its own message, as before routing existed);
    else one for the group."""

    def note(alerts: tuple[Alert, ...], fresh: tuple[Alert, ...], again: bool, v: int) -> Notification:
        return Notification(group.key, group.receiver, group.labels, alerts, fresh, again, v)

    if group.each_alert_alone and new:
        return [note((a,), (a,), False, version + i) for i, a in enumerate(new)]
    if new:  # a replayed event whose alert the group no longer holds is shown too
        held = {a.fingerprint for a in shown}
        return [note((*shown, *(a for a in new if a.fingerprint not in held)), tuple(new), False, version)]
    firing = tuple(a for a in shown if a.state == "firing")
    return [note(firing, (), True, version)] if repeat and firing else []
