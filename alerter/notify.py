"""What a receiver is handed, and what it must do with it.

The alerter's flush stage (``alerter.pipeline``) turns a group that is due into one
:class:`Notification` per flush and hands it to the group's receiver. A receiver formats and sends
it, or raises :class:`alerter.sinks.DeliveryError` (retryable or not, with ``Retry-After``). It
returns a :class:`MessageRef` when it can change what it sent later (Slack bot mode), else None;
the alerter keeps the ref in Redis with the group and passes it back on the group's next flush,
until the group is all resolved and notified (then a new incident starts a new message).

Receivers never touch Redis, time or state: the pipeline owns them (dedup, pacing, records).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.models import Alert


@dataclass(frozen=True)
class Notification:
    """One notification of one group to its receiver."""

    group_key: str
    """``alerter.route.group_key``: stable across restarts and replicas."""
    receiver: str
    group_labels: dict[str, str]
    """The labels the group shares (its ``group_by`` labels)."""
    alerts: tuple[Alert, ...]
    """Every alert of the group that is notified now: the latest event of each fingerprint that
    is neither silenced nor inhibited, firing ones first, then by account and check. An alert
    firing for several keys is listed once."""
    new: tuple[Alert, ...]
    """The events among ``alerts`` this receiver has not been told yet (joined, repeated by the
    check's cooldown, resolved). Empty for a route repeat (``repeat``)."""
    repeat: bool = False
    """True when nothing changed and the route's ``repeat_interval`` has passed while alerts still
    fire: ``alerts`` are sent again."""
    version: int = 1
    """1 for the first notification of an incident, then +1 on every later one."""

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.state == "firing")

    @property
    def resolved(self) -> bool:
        """Every alert of the group has resolved (the last notification of the incident)."""
        return not self.firing


@dataclass(frozen=True)
class MessageRef:
    """Where a receiver's message of a group is, to change it later (Slack: channel and ``ts``),
    plus whatever the receiver needs to remember about it (JSON-able)."""

    channel: str
    ts: str
    data: dict[str, Any] = field(default_factory=dict)


class Receiver(Protocol):
    """One destination of notifications."""

    name: str
    """The receiver's name in the configuration (legacy sinks: ``console``, ``jsonl``, ``slack``,
    ``webhook``): part of the delivery markers, never change it."""
    channel: str
    """What pacing counts against (a Slack channel; an incoming webhook: a hash of its URL);
    ``""``: not paced (console, jsonl, generic webhooks, the legacy `.env` Slack sink)."""

    def send(self, notification: Notification, ref: MessageRef | None, now: float) -> MessageRef | None:
        """Send ``notification`` (change the message ``ref`` points at when there is one), or raise
        DeliveryError. Returns the ref of the group's message now, None when nothing can be
        changed later."""
