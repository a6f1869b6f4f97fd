"""Each stage of the alerter on its own: groups (add, claim, forget), pace, mute, dedup."""

from __future__ import annotations

import redis as redis_lib

from alerter.dedup import new_events, notifications, visible
from alerter.groups import Groups, claimed, member_prints, settled_fields
from alerter.inhibit import Rule, compile_rules
from alerter.mute import Mute, index_inhibitor, load_mute, rebuild_inhibitors
from alerter.pace import Pacer
from alerter.route import RouteMatch
from shared.config import DEFAULT_INHIBIT_RULES, InhibitRule
from shared.keys import Keys
from shared.models import Alert
from shared.silences import SilenceStore
from tests.test_delivery_stages import T0, alert

KEYS = Keys()
MATCH = RouteMatch("desk", ("check",), 2.0, 60.0, 3600.0, "{}")
ALONE = RouteMatch("desk", ("...",), 0.0, 0.0, 0.0, "{}")


def test_adding_an_alert_twice_changes_nothing_and_a_new_group_waits_group_wait(
    r: redis_lib.Redis,
) -> None:
    groups, a = Groups(r, KEYS), alert("OKX-B-SWAP")
    assert groups.add("g", MATCH, {"check": "delta"}, a, T0) == 1
    assert groups.add("g", MATCH, {"check": "delta"}, a, T0 + 1) == 0
    assert groups.next_due() == T0 + 2
    assert claimed(groups.claim_due(T0 + 1, lease=30)) == []
    [(key, loaded)] = claimed(groups.claim_due(T0 + 2, lease=30))
    assert key == "g" and loaded == groups.load("g")
    assert loaded is not None and list(loaded.members.values()) == [a] and list(loaded.events) == [a.id]


def test_a_change_after_a_notification_is_due_a_group_interval_after_it(r: redis_lib.Redis) -> None:
    groups = Groups(r, KEYS)
    groups.add("g", MATCH, {}, alert("OKX-B-SWAP"), T0)
    r.hset(KEYS.group("g"), "sent_at", repr(T0 + 2))
    groups.schedule("g", None)
    groups.add("g", MATCH, {}, alert("OKX-C-SWAP", at=T0 + 5), T0 + 5)
    assert groups.next_due() == T0 + 62


def test_only_one_replica_claims_a_due_group_until_its_lease_ends(r: redis_lib.Redis) -> None:
    groups = Groups(r, KEYS)
    groups.add("g", ALONE, {}, alert("OKX-B-SWAP"), T0)
    assert [k for k, _ in claimed(groups.claim_due(T0, lease=30))] == ["g"]
    assert claimed(groups.claim_due(T0 + 29, lease=30)) == []
    assert [k for k, _ in claimed(groups.claim_due(T0 + 30, lease=30))] == ["g"]


def test_forgetting_keeps_a_newer_event_and_deletes_a_group_left_empty(r: redis_lib.Redis) -> None:
    groups = Groups(r, KEYS)
    firing = alert("OKX-B-SWAP")
    groups.add("g", ALONE, {}, firing, T0)
    read = groups.load("g")
    assert read is not None
    resolved = alert("OKX-B-SWAP", state="resolved", at=T0 + 1)
    groups.add("g", ALONE, {}, resolved, T0 + 1)  # arrives while the firing one is being sent
    assert groups.forget(read, settled_fields(read, [firing])) == 0
    now = groups.load("g")
    assert now is not None and list(now.members.values()) == [resolved]
    r.set(KEYS.ref("g"), "{}")
    assert groups.forget(now, settled_fields(now, [resolved])) == 1
    assert r.exists(KEYS.group("g"), KEYS.ref("g")) == 0 and groups.next_due() is None


def test_a_channel_takes_one_message_per_interval_and_a_hold_is_never_shortened(
    r: redis_lib.Redis,
) -> None:
    pacer = Pacer(r, KEYS, interval=1.1)
    assert pacer.take("C1", T0) == 0.0
    assert pacer.take("C1", T0 + 0.5) == pacer.take("C1", T0 + 0.5) > 0.59
    assert pacer.take("C2", T0 + 0.5) == 0.0  # other channels go on
    pacer.hold("C1", T0 + 10, T0)
    pacer.hold("C1", T0 + 5, T0)
    assert abs(pacer.take("C1", T0 + 2) - 8.0) < 1e-6
    assert pacer.take("", T0) == 0.0  # "" is never paced


def fires(r: redis_lib.Redis, rules: tuple[Rule, ...], *alerts: Alert) -> None:
    """Record ``alerts`` as firing, as the router does: ``Keys.firing`` and its index."""
    pipe = r.pipeline(transaction=False)
    for a in alerts:
        pipe.hset(KEYS.firing, mapping=dict.fromkeys(member_prints(a), a.model_dump_json()))
        index_inhibitor(pipe, KEYS, rules, a.labels, member_prints(a))
    pipe.execute()


def test_mute_says_which_alert_inhibits_and_which_silence_silences(r: redis_lib.Redis) -> None:
    stale, delta = alert("OKX-B-SWAP", check="stale_data"), alert("OKX-B-SWAP")
    rules = compile_rules(DEFAULT_INHIBIT_RULES)
    fires(r, rules, stale)
    assert load_mute(r, KEYS, rules, T0).reason(delta) == "inhibited by stale_data on OKX-B-SWAP"
    assert load_mute(r, KEYS, rules, T0).reason(stale) is None
    silence = SilenceStore(r, KEYS).add(['check="stale_data"'], 60, "known", "ops", T0, 3600)
    mute = load_mute(r, KEYS, rules, T0)
    assert mute.reason(stale) == f"silenced by {silence.id} (known)"
    assert mute.silence_ends([stale]) == T0 + 60 and mute.silence_ends([delta]) is None


def test_only_the_alerts_that_can_inhibit_are_indexed_and_read(r: redis_lib.Redis) -> None:
    rules = compile_rules(DEFAULT_INHIBIT_RULES)
    stale = alert("OKX-B-SWAP", check="stale_data")
    others = [alert(f"OKX-{n}-SWAP") for n in range(50)]
    fires(r, rules, stale, *others)
    assert r.hlen(KEYS.firing) == 51
    assert r.hkeys(KEYS.inhibitors) == member_prints(stale)  # what a flush reads: 1 of 51
    assert load_mute(r, KEYS, rules, T0).sources == (stale.labels,)
    pipe = r.pipeline(transaction=False)
    index_inhibitor(pipe, KEYS, rules, None, member_prints(stale))  # it resolved
    pipe.execute()
    assert r.hlen(KEYS.inhibitors) == 0
    assert load_mute(r, KEYS, rules, T0).reason(others[0]) is None


def test_the_index_is_rebuilt_from_what_fires_for_the_rules_given(r: redis_lib.Redis) -> None:
    stale, delta = alert("OKX-B-SWAP", check="stale_data"), alert("OKX-B-SWAP")
    fires(r, (), stale, delta)  # no rules (or an alerter without the index): nothing indexed
    assert r.exists(KEYS.inhibitors) == 0
    rules = compile_rules(DEFAULT_INHIBIT_RULES)
    rebuild_inhibitors(r, KEYS, rules)
    assert load_mute(r, KEYS, rules, T0).reason(delta) == "inhibited by stale_data on OKX-B-SWAP"
    rule = InhibitRule(source_matchers=('check="delta"',), target_matchers=('check="x"',))
    on_delta = compile_rules([rule])
    rebuild_inhibitors(r, KEYS, on_delta)  # other rules: other sources, the old ones gone
    assert r.hkeys(KEYS.inhibitors) == member_prints(delta)


def test_each_alert_alone_is_one_notification_per_event_in_order(r: redis_lib.Redis) -> None:
    groups = Groups(r, KEYS)
    firing, resolved = alert("OKX-B-SWAP"), alert("OKX-B-SWAP", state="resolved", at=T0 + 1)
    for a in (firing, resolved):
        groups.add("g", ALONE, {}, a, a.observed_at)
    group = groups.load("g")
    assert group is not None
    quiet = Mute((), (), (), T0)
    shown = visible(group, quiet)
    new = new_events(group, shown, {})
    notes = notifications(group, shown, new, repeat=False, version=1)
    assert [(n.alerts, n.new, n.version) for n in notes] == [
        ((firing,), (firing,), 1),
        ((resolved,), (resolved,), 2),
    ]
    assert (
        notifications(group, shown, new_events(group, shown, {firing.id: True, resolved.id: True}), False, 3)
        == []
    )


def test_a_grouped_notification_shows_every_alert_and_says_what_is_new(r: redis_lib.Redis) -> None:
    groups = Groups(r, KEYS)
    b, c = alert("OKX-B-SWAP"), alert("OKX-C-SWAP", at=T0 + 1)
    groups.add("g", MATCH, {"check": "delta"}, b, T0)
    groups.add("g", MATCH, {"check": "delta"}, c, T0 + 1)
    group = groups.load("g")
    assert group is not None
    shown = visible(group, Mute((), (), (), T0))
    [note] = notifications(group, shown, new_events(group, shown, {b.id: True}), repeat=False, version=2)
    assert note.alerts == (b, c) and note.new == (c,) and not note.repeat
    [again] = notifications(group, shown, [], repeat=True, version=3)
    assert again.repeat and again.new == () and again.alerts == (b, c)
