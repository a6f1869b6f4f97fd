"""The inhibit and silence stages: why an alert is not notified now, if it is not.

One :class:`Mute` is built per flush from the firing alerts that can inhibit (``Keys.inhibitors``),
the active silences (``shared.silences``) and the inhibit rules of the configuration, and answers
for each alert. Inhibition is asked first, as in Alertmanager's pipeline. Both are read at every
flush and every send, so a silence added or expired by any operator, and a source alert that
starts or stops firing, take effect in every alerter at its next flush.

``Keys.inhibitors`` is an index of ``Keys.firing``: fingerprint -> labels of each firing alert
that matches the source side of a rule (:func:`alerter.inhibit.can_inhibit`). The router writes
both in one round trip (:func:`index_inhibitor`) and rebuilds the index from ``Keys.firing`` at
its start (:func:`rebuild_inhibitors`: after a change of the rules, or an alerter of a version
without it). So a flush reads the few alerts that can inhibit, not every alert firing: with 800
alerts firing, reading and parsing all of them at each flush and send cost the alerter 20 ms of
CPU per alert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from alerter.groups import read_alert
from alerter.inhibit import Rule, can_inhibit, inhibitor
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


def parse_alerts(values: Iterable[str]) -> list[Alert]:
    """Alert JSONs as Alerts, unreadable ones skipped."""
    return [alert for alert in map(read_alert, values) if alert is not None]


def index_inhibitor(
    pipe: Any, keys: Keys, rules: Sequence[Rule], labels: Mapping[str, str] | None, prints: Sequence[str]
) -> None:
    """Queue on ``pipe`` the index entries of the fingerprints ``prints`` of one alert: its
    ``labels`` when it fires and can inhibit, none otherwise (``labels`` None: it resolved)."""
    if not rules:
        return
    if labels is not None and can_inhibit(labels, rules):
        pipe.hset(keys.inhibitors, mapping=dict.fromkeys(prints, _entry(labels)))
    else:
        pipe.hdel(keys.inhibitors, *prints)


def rebuild_inhibitors(r: redis.Redis, keys: Keys, rules: Sequence[Rule]) -> None:
    """Write the index again from ``Keys.firing`` for ``rules``, in a transaction that starts
    over if a replica changes what fires meanwhile."""

    def rebuild(pipe: Any) -> None:
        firing: Mapping[str, str] = pipe.hgetall(keys.firing)
        alerts = {fp: read_alert(text) for fp, text in firing.items()}
        entries = {
            fp: _entry(alert.labels)
            for fp, alert in alerts.items()
            if alert is not None and can_inhibit(alert.labels, rules)
        }
        pipe.multi()
        pipe.delete(keys.inhibitors)
        if entries:
            pipe.hset(keys.inhibitors, mapping=entries)

    r.transaction(rebuild, keys.firing)


def read_mute(pipe: Any, keys: Keys, rules: tuple[Rule, ...]) -> None:
    """Queue on ``pipe`` the reads :func:`mute_from` needs (silences; the alerts that can
    inhibit, if any rule)."""
    pipe.hgetall(keys.silences)
    if rules:
        pipe.hgetall(keys.inhibitors)


def mute_from(replies: list[Any], rules: tuple[Rule, ...], now: float) -> Mute:
    """The Mute of ``now`` from the replies of :func:`read_mute`'s reads, in order."""
    sources = tuple(_labels(text) for text in replies[1].values()) if rules else ()
    return mute_of(replies[0], tuple(s for s in sources if s is not None), rules, now)


def mute_of(
    silences: Mapping[str, str], sources: Sequence[Mapping[str, str]], rules: tuple[Rule, ...], now: float
) -> Mute:
    """The Mute of ``now`` from the silences hash as read and the labels of the firing alerts
    (all of them, or only those that can inhibit: the others never do)."""
    active = tuple(s for s in parse_silences(silences) if s.state(now) == "active")
    return Mute(tuple(sources), active, rules, now)


def _entry(labels: Mapping[str, str]) -> str:
    """An index entry: the labels as JSON (read back by :func:`_labels`)."""
    return json.dumps(dict(labels), sort_keys=True)


def _labels(text: str) -> Mapping[str, str] | None:
    """Labels of an index entry; None when unreadable (skipped)."""
    try:
        labels = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None


def load_mute(r: redis.Redis, keys: Keys, rules: tuple[Rule, ...], now: float) -> Mute:
    """The Mute of ``now``, read from Redis in one round trip."""
    pipe = r.pipeline(transaction=False)
    read_mute(pipe, keys, rules)
    return mute_from(pipe.execute(), rules, now)
