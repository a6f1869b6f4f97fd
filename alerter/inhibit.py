"""Inhibition: an alert is not notified while another alert that makes it moot is firing.
Alertmanager's rule (``inhibit/inhibit.go``): a target alert (matching a rule's
``target_matchers``) is inhibited by a firing source alert (matching its ``source_matchers``) when
both have the same values of the rule's ``equal`` labels (a missing label counts as ``""``). A
source that also matches the target side never inhibits a target that also matches the source
side, so an alert never inhibits itself nor its own kind. On top of Alertmanager: alerts whose
``check`` is in ``shared.config.NEVER_INHIBITED`` (``check_error``, ``config_error``) are never
inhibited, whatever the rules say.

Pure functions over labels: which alerts are firing is the caller's to know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.config import NEVER_INHIBITED, InhibitRule
from shared.matchers import Matcher, matches_all, parse_matchers

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Rule:
    """An inhibit rule with its matchers compiled."""

    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


def compile_rules(rules: Iterable[InhibitRule]) -> tuple[Rule, ...]:
    """The rules of a configuration (validated by ``shared.config``: every matcher parses), in order."""
    return tuple(
        Rule(r.name, parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), r.equal)
        for r in rules
    )


def inhibitor(labels: Labels, firing_sources: Sequence[Labels], rules: Iterable[Rule]) -> Labels | None:
    """The labels of the first firing alert that inhibits an alert with ``labels`` (rules in
    order, then ``firing_sources`` in order), or None when nothing does. ``firing_sources`` are
    the labels of the alerts firing now (the alert itself may be among them)."""
    if labels.get("check", "") in NEVER_INHIBITED:
        return None
    for rule in rules:
        if not matches_all(rule.target, labels):
            continue
        found = _source_for(rule, labels, firing_sources)
        if found is not None:
            return found
    return None


def _source_for(rule: Rule, labels: Labels, firing: Sequence[Labels]) -> Labels | None:
    """A firing source of ``rule`` with the same ``equal`` values as the target ``labels``;
    when the target matches the source side too, sources matching both sides do not count."""
    two_sided = matches_all(rule.source, labels)
    for source in firing:
        if not matches_all(rule.source, source) or not _equal(rule.equal, labels, source):
            continue
        if two_sided and matches_all(rule.target, source):
            continue
        return source
    return None


def _equal(names: Iterable[str], a: Labels, b: Labels) -> bool:
    """Whether ``a`` and ``b`` agree on every label of ``names`` (missing: ``""``)."""
    return all(a.get(n, "") == b.get(n, "") for n in names)


def can_inhibit(labels: Labels, rules: Iterable[Rule]) -> bool:
    """Whether an alert with ``labels`` matches the source side of some rule: only such firing
    alerts are looked at as sources (``alerter.mute``'s index, ``Keys.inhibitors``)."""
    return any(matches_all(rule.source, labels) for rule in rules)


def inhibited(labels: Labels, firing_sources: Sequence[Labels], rules: Iterable[Rule]) -> bool:
    """Whether an alert with ``labels`` is inhibited now (see :func:`inhibitor`)."""
    return inhibitor(labels, firing_sources, rules) is not None
