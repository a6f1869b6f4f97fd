"""The route tree: which receivers hear about an alert, and how its notifications are grouped and
timed. Alertmanager's semantics (``dispatch/route.go``):

* a node matches an alert when all its matchers match the alert's labels (none: every alert);
* the walk is depth-first and left to right: the first matching child takes the alert, unless it
  has ``continue``, in which case the next siblings are tried too; a node none of whose children
  matched is itself the match;
* a child inherits from its parent every option it does not set (``receiver``, ``group_by``,
  ``group_wait``, ``group_interval``, ``repeat_interval``); the root inherits the defaults of
  ``shared.config`` (30 s, 5 m, 4 h, one group).

Group keys are stable across restarts and replicas (they are Redis keys and Slack metadata): a
route is identified by its matchers from the root down (Alertmanager's route key), not by its
position, so adding or reordering routes keeps the groups of the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from shared.config import GROUP_BY_ALL, GROUP_INTERVAL, GROUP_WAIT, REPEAT_INTERVAL, RouteNode
from shared.matchers import Matcher, matches_all, parse_matcher

Labels = Mapping[str, str]


@dataclass(frozen=True)
class RouteMatch:
    """What a matching route decides for an alert: the receiver and the grouping options."""

    receiver: str
    group_by: tuple[str, ...]
    """Sorted label names, or ``("...",)`` for every label (each alert its own group)."""
    group_wait: float
    group_interval: float
    repeat_interval: float
    route_id: str
    """The matchers from the root to the route, ``{}/{severity="critical"}``: stable while the
    matchers are (Alertmanager's route key; siblings with equal matchers share it)."""


@dataclass(frozen=True)
class Route:
    """A node of the tree with its matchers compiled and its options resolved (inherited)."""

    matchers: tuple[Matcher, ...]
    receiver: str | None
    """None only in a tree without a receiver at its root (``default_route`` with no sink)."""
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool
    route_id: str
    routes: tuple[Route, ...]


_ROOT_PARENT = Route(
    matchers=(),
    receiver=None,
    group_by=(),
    group_wait=GROUP_WAIT,
    group_interval=GROUP_INTERVAL,
    repeat_interval=REPEAT_INTERVAL,
    continue_=False,
    route_id="",
    routes=(),
)
"""What the root inherits: no receiver, one group (``group_by: []``), Alertmanager's timers."""


def build_route(node: RouteNode, parent: Route | None = None) -> Route:
    """The tree of ``node`` (validated by ``shared.config``: every matcher parses), each option
    it does not set taken from ``parent`` (for the root: :data:`_ROOT_PARENT`)."""
    base = parent if parent is not None else _ROOT_PARENT
    matchers = tuple(sorted((parse_matcher(t) for t in node.matchers), key=str))
    own_id = "{" + ",".join(map(str, matchers)) + "}"
    resolved = Route(
        matchers=matchers,
        receiver=node.receiver if node.receiver is not None else base.receiver,
        group_by=tuple(sorted(node.group_by)) if node.group_by is not None else base.group_by,
        group_wait=_either(node.group_wait, base.group_wait),
        group_interval=_either(node.group_interval, base.group_interval),
        repeat_interval=_either(node.repeat_interval, base.repeat_interval),
        continue_=node.continue_,
        route_id=own_id if parent is None else f"{parent.route_id}/{own_id}",
        routes=(),
    )
    return replace(resolved, routes=tuple(build_route(child, resolved) for child in node.routes))


def _either(own: float | None, inherited: float) -> float:
    """A timer as the node sets it, else as inherited."""
    return own if own is not None else inherited


def match_routes(route: Route, labels: Labels) -> list[RouteMatch]:
    """The routes that take an alert with ``labels``, in tree order (depth-first, left to right;
    the first matching child unless it continues; a node with no matching child matches itself).
    A match without a receiver (only in a tree with no sink) is left out, so no receiver means an
    empty list. Two matches may name the same receiver (two routes sending there)."""
    return [_as_match(r, r.receiver) for r in _matching(route, labels) if r.receiver is not None]


def _matching(route: Route, labels: Labels) -> list[Route]:
    """Alertmanager's ``Route.Match``: the matching nodes under and including ``route``."""
    if not matches_all(route.matchers, labels):
        return []
    found: list[Route] = []
    for child in route.routes:
        matched = _matching(child, labels)
        found.extend(matched)
        if matched and not child.continue_:
            break
    return found or [route]


def _as_match(route: Route, receiver: str) -> RouteMatch:
    return RouteMatch(
        receiver=receiver,
        group_by=route.group_by,
        group_wait=route.group_wait,
        group_interval=route.group_interval,
        repeat_interval=route.repeat_interval,
        route_id=route.route_id,
    )


def group_labels(match: RouteMatch, labels: Labels) -> dict[str, str]:
    """The labels that decide an alert's group: those of ``group_by`` the alert has (a missing
    label is left out, as in Alertmanager), or all of them for ``...``."""
    if match.group_by == (GROUP_BY_ALL,):
        return dict(labels)
    return {name: labels[name] for name in match.group_by if name in labels}


def group_key(match: RouteMatch, labels: Labels) -> str:
    """The key of the group an alert with ``labels`` joins on the route ``match``:
    ``{route id}:"{receiver}":{group labels}``, e.g.
    ``{}/{severity="critical"}:"desk":{check="delta"}`` (values quoted, so no two groups share a
    key). Equal for every alert of the group, different for any other group, route or receiver;
    it depends only on the configuration's matchers and receiver names and on label values, so
    every replica and every restart computes the same key."""
    grouped = group_labels(match, labels)
    rendered = ",".join(f"{name}={_quoted(grouped[name])}" for name in sorted(grouped))
    return f"{match.route_id}:{_quoted(match.receiver)}:{{{rendered}}}"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
