"""The route tree, with Alertmanager's semantics: depth-first, first matching child unless it
continues, a node with no matching child matches itself, children inherit; group keys."""

from __future__ import annotations

import pytest

from alerter.route import Route, RouteMatch, build_route, group_key, group_labels, match_routes
from shared.config import GROUP_INTERVAL, GROUP_WAIT, REPEAT_INTERVAL, default_route, parse

TREE = """
receivers:
  desk: {slack_bot: {token_env: SLACK_BOT_TOKEN, channel: C0DESK}}
  critical: {slack_bot: {token_env: SLACK_BOT_TOKEN, channel: C0CRIT}}
  reports: {jsonl: {path: reports.jsonl}}
  treasury: {webhook: {url_env: TREASURY_HOOK}}
route:
  receiver: desk
  group_by: [check]
  group_wait: 2s
  routes:
    - matchers: ['severity="critical"']
      receiver: critical
      group_wait: 0s
      continue: true
    - matchers: ['check=~"balance_report|margin_snapshot"']
      receiver: reports
      group_by: ['...']
      repeat_interval: 1d
    - matchers: ['team="treasury"']
      receiver: treasury
      routes:
        - matchers: ['venue="OKX"']
          group_interval: 1m
    - receiver: desk
"""


@pytest.fixture(scope="module")
def tree() -> Route:
    config = parse(TREE, "delivery.yaml").check_problems()
    assert config.route is not None
    return build_route(config.route)


def receivers(tree: Route, **labels: str) -> list[str]:
    return [m.receiver for m in match_routes(tree, labels)]


def test_the_first_matching_child_takes_the_alert(tree: Route) -> None:
    assert receivers(tree, check="balance_report", account="A") == ["reports"]


def test_continue_lets_the_next_siblings_match_too(tree: Route) -> None:
    assert receivers(tree, check="low_balance", severity="critical") == ["critical", "desk"]
    assert receivers(tree, check="balance_report", severity="critical") == ["critical", "reports"]


def test_a_continue_route_alone_does_not_bring_its_parent() -> None:
    text = """
receivers: {a: {console: }, b: {console: }}
route:
  receiver: a
  routes: [{matchers: [x=1], receiver: b, continue: true}]
"""
    route = parse(text, "c.yaml").check_problems().route
    assert route is not None
    tree = build_route(route)
    assert receivers(tree, x="1") == ["b"]  # Alertmanager: a child matched, so the root does not
    assert receivers(tree, x="2") == ["a"]  # no child matched: the node itself


def test_a_node_with_no_matching_child_matches_itself(tree: Route) -> None:
    (match,) = match_routes(tree, {"team": "treasury", "venue": "BINANCE"})
    assert match.receiver == "treasury"
    assert match.route_id == '{}/{team="treasury"}'


def test_children_inherit_every_option_they_do_not_set(tree: Route) -> None:
    (match,) = match_routes(tree, {"team": "treasury", "venue": "OKX", "check": "delta"})
    assert match == RouteMatch(
        receiver="treasury",
        group_by=("check",),
        group_wait=2.0,
        group_interval=60.0,
        repeat_interval=REPEAT_INTERVAL,
        route_id='{}/{team="treasury"}/{venue="OKX"}',
    )


def test_the_root_takes_alertmanager_defaults() -> None:
    route = parse("receivers: {a: {console: }}\nroute: {receiver: a}\n", "d.yaml").check_problems().route
    assert route is not None
    (match,) = match_routes(build_route(route), {"check": "delta"})
    assert (match.group_by, match.group_wait, match.group_interval, match.repeat_interval) == (
        (),
        GROUP_WAIT,
        GROUP_INTERVAL,
        REPEAT_INTERVAL,
    )
    assert (GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL) == (30, 300, 4 * 3600)


def test_an_alert_no_route_matches_goes_to_nobody() -> None:
    text = "receivers: {a: {console: }}\nroute: {receiver: a, routes: [{matchers: [x=1], receiver: a}]}\n"
    route = parse(text, "e.yaml").check_problems().route
    assert route is not None
    tree = build_route(route)
    assert receivers(tree, x="2") == ["a"]  # the root always matches: nothing is unrouted


def test_the_default_route_sends_each_alert_to_every_sink_at_once() -> None:
    tree = build_route(default_route(["console", "jsonl", "slack"]))
    labels = {"check": "delta", "account": "BINANCE-AAZ01-UM", "key": "BTC"}
    matches = match_routes(tree, labels)
    assert [m.receiver for m in matches] == ["console", "jsonl", "slack"]
    for m in matches:
        assert (m.group_by, m.group_wait, m.group_interval, m.repeat_interval) == (("...",), 0, 0, 0)
    other = {**labels, "key": "ETH"}
    assert group_key(matches[2], labels) != group_key(matches[2], other)  # each alert its own group


def test_the_default_route_without_sinks_matches_nothing() -> None:
    assert match_routes(build_route(default_route([])), {"check": "delta"}) == []


def test_group_labels_are_the_group_by_labels_the_alert_has(tree: Route) -> None:
    (match,) = match_routes(tree, {"check": "delta", "account": "A"})
    assert group_labels(match, {"check": "delta", "account": "A"}) == {"check": "delta"}
    assert group_labels(match, {"account": "A"}) == {}  # a missing label is left out


def test_alerts_of_one_group_share_a_key_and_other_groups_do_not(tree: Route) -> None:
    def key(**labels: str) -> str:
        (match,) = match_routes(tree, labels)
        return group_key(match, labels)

    first = key(check="low_balance", account="BINANCE-AAZ01-UM")
    assert first == '{}/{}:"desk":{check="low_balance"}'  # the last, catch-all child
    assert key(check="low_balance", account="BINANCE-AAZ12-UM") == first
    assert key(check="delta", account="BINANCE-AAZ01-UM") != first


def test_the_same_alert_on_two_routes_is_in_two_groups(tree: Route) -> None:
    labels = {"check": "low_balance", "severity": "critical"}
    keys = [group_key(m, labels) for m in match_routes(tree, labels)]
    assert keys == [
        '{}/{severity="critical"}:"critical":{check="low_balance"}',
        '{}/{}:"desk":{check="low_balance"}',
    ]


def test_group_keys_do_not_depend_on_route_order_or_matcher_order() -> None:
    first = """
receivers: {a: {console: }, b: {console: }}
route:
  receiver: a
  routes:
    - {matchers: [x=1, y=2], receiver: b}
    - {matchers: [z=3], receiver: a}
"""
    second = """
receivers: {a: {console: }, b: {console: }}
route:
  receiver: a
  routes:
    - {matchers: [z=3], receiver: a}
    - {matchers: ['y="2"', x=1], receiver: b}
"""
    labels = {"x": "1", "y": "2"}
    keys = []
    for text in (first, second):
        route = parse(text, "o.yaml").check_problems().route
        assert route is not None
        (match,) = match_routes(build_route(route), labels)
        keys.append(group_key(match, labels))
    assert keys[0] == keys[1] == '{}/{x="1",y="2"}:"b":{}'


def test_label_values_are_quoted_so_keys_cannot_collide() -> None:
    match = RouteMatch("r", ("a", "b"), 0, 0, 0, "{}")
    assert group_key(match, {"a": 'x",b="y'}) != group_key(match, {"a": "x", "b": "y"})
    assert group_key(match, {"a": 'x"'}) == '{}:"r":{a="x\\""}'


def test_regex_matchers_match_the_whole_value() -> None:
    text = """
receivers: {a: {console: }, b: {console: }}
route: {receiver: a, routes: [{matchers: ['account=~"BINANCE-.*"'], receiver: b}]}
"""
    route = parse(text, "r.yaml").check_problems().route
    assert route is not None
    tree = build_route(route)
    assert receivers(tree, account="BINANCE-AAZ01-UM") == ["b"]
    assert receivers(tree, account="X-BINANCE-1") == ["a"]
