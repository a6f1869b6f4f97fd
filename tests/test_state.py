"""The state machine against the legacy delay and cooldown semantics (spec: common ideas)."""

from __future__ import annotations

import pytest

from engine.state import KeyState, Policy, step

DELTA = Policy(delay=60, cooldown=300, forget_on_clear=True)
STICKY = Policy(delay=None, cooldown=300, forget_on_clear=False)


def run(policy: Policy, frames: list[tuple[float, bool]]) -> list[tuple[float, str]]:
    state, events = KeyState(), []
    for now, breached in frames:
        state, event = step(state, breached, now, policy)
        if event:
            events.append((now, event))
    return events


def test_delay_starts_clock_then_fires_on_later_breach() -> None:
    assert run(DELTA, [(0, True), (30, True), (59, True), (60, True), (61, True)]) == [(60, "fire")]


def test_delay_zero_fires_on_second_breaching_frame() -> None:
    policy = Policy(delay=0, cooldown=300, forget_on_clear=True)
    assert run(policy, [(0, True), (0.5, True)]) == [(0.5, "fire")]


def test_cooldown_repeats() -> None:
    frames = [(t, True) for t in range(0, 1000, 20)]
    assert [t for t, _ in run(DELTA, frames)] == [60, 360, 660, 960]


def test_delta_clear_forgets_both_clocks() -> None:
    frames = [(0, True), (60, True), (70, False), (80, True), (100, True), (140, True)]
    # fires at 60; clear at 70 (resolve); new breach at 80 waits the delay again: fires at 140
    assert run(DELTA, frames) == [(60, "fire"), (70, "resolve"), (140, "fire")]


def test_non_breaching_frame_resets_pending_clock() -> None:
    assert run(DELTA, [(0, True), (50, False), (55, True), (100, True), (115, True)]) == [(115, "fire")]


def test_sticky_fires_at_once_and_keeps_last_alert_across_clear() -> None:
    frames = [(0, True), (10, False), (20, True), (299, True), (300, True)]
    assert run(STICKY, frames) == [(0, "fire"), (10, "resolve"), (300, "fire")]


def test_sticky_recovery_inside_cooldown_is_silent() -> None:
    assert run(STICKY, [(0, True), (100, False), (200, True)]) == [(0, "fire"), (100, "resolve")]


@pytest.mark.parametrize("state", [KeyState(), KeyState(1.0, 2.0, True), KeyState(None, 5.5, False)])
def test_json_round_trip(state: KeyState) -> None:
    assert KeyState.from_json(state.to_json()) == state
