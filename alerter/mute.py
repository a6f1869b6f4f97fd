"""The inhibit and silence stages: why an alert is not notified now, if it is not.

One :class:`Mute` is built per flush from what fires now (``Keys.firing``), the active silences
(``shared.silences``) and the inhibit rules of the configuration, and answers for each alert.
Inhibition is asked first, as in Alertmanager's pipeline. Both are read at every flush and every
send, so a silence added or expired by any operator, and a source alert that starts or stops
firing, take effect in every alerter at its next flush.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from alerter.groups import read_alert
from alerter.inhibit import Rule, inhibitor
from shared.keys import Keys
from shared.models import Alert
from shared.silences import Silence, parse_silences


@dataclass(frozen=True)
class Mute:
    """What mutes alerts at one instant."""

    sources: tuple[Mapping[str, str], ...]
    """Labels of every alert firing now (inhibition sources)."""
    silences: tuple[Silence, ...]
    """The silences active now."""
    rules: tuple[Rule, ...]
    now: float

    def reason(self, alert: Alert) -> str | None:
        """``inhibited by check=... account=...``, ``silenced by ID (reason)``, or None: notify."""
        source = inhibitor(alert.labels, self.sources, self.rules)
        if source is not None:
            return f"inhibited by {source.get('check', '?')} on {source.get('account', '?')}"
        found = [s for s in self.silences if s.mutes(alert.labels, self.now)]
        return f"silenced by {found[0].id} ({found[0].reason})" if found else None

    def silence_ends(self, alerts: Sequence[Alert]) -> float | None:
        """The earliest end of a silence muting one of ``alerts`` (when to look again)."""
        ends = [s.ends_at for s in self.silences for a in alerts if s.mutes(a.labels, self.now)]
        return min(ends, default=None)


def firing_alerts(r: redis.Redis, keys: Keys) -> list[Alert]:
    """Every alert firing now, per fingerprint (unreadable entries are skipped)."""
    raw: Mapping[str, str] = r.hgetall(keys.firing)  # type: ignore[assignment]
    return parse_alerts(raw.values())


def parse_alerts(values: Iterable[str]) -> list[Alert]:
    """Alert JSONs as Alerts, unreadable ones skipped."""
    return [alert for alert in map(read_alert, values) if alert is not None]


def read_mute(pipe: Any, keys: Keys, rules: tuple[Rule, ...]) -> None:
    """Queue on ``pipe`` the reads :func:`mute_from` needs (silences; firing alerts if any rule)."""
    pipe.hgetall(keys.silences)
    if rules:
        pipe.hgetall(keys.firing)


def mute_from(replies: list[Any], rules: tuple[Rule, ...], now: float) -> Mute:
    """The Mute of ``now`` from the replies of :func:`read_mute`'s reads, in order."""
    silences = tuple(s for s in parse_silences(replies[0]) if s.state(now) == "active")
    sources = tuple(a.labels for a in parse_alerts(replies[1].values())) if rules else ()
    return Mute(sources, silences, rules, now)


def load_mute(r: redis.Redis, keys: Keys, rules: tuple[Rule, ...], now: float) -> Mute:
    """The Mute of ``now``, read from Redis in one round trip."""
    pipe = r.pipeline(transaction=False)
    read_mute(pipe, keys, rules)
    return mute_from(pipe.execute(), rules, now)
