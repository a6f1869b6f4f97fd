"""The alert state machine of one key, pure: (state, breached, now, policy) -> (state, event).

pending -> firing -> (repeat after cooldown) -> resolved, with the legacy timings:

* ``delay`` None: the first breaching evaluation fires.
* ``delay`` a number: the first breaching evaluation only starts the clock; the first later
  breaching evaluation with ``now - since >= delay`` fires (so ``delay: 0`` fires on the second).
* ``cooldown``: a firing key fires again only when ``now - last_alert >= cooldown``.
* A clear ends ``pending``/``firing`` (a resolved event if it was firing). With
  ``forget_on_clear`` it also forgets the time of the last alert (delta, hedge); without, that
  time survives the clear, so a recovery and a new breach inside the cooldown stay silent
  (low balance, margin risk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Event = Literal["fire", "resolve"]


@dataclass(frozen=True)
class KeyState:
    since: float | None = None
    """When the current breach started (the delay clock)."""
    last_alert: float | None = None
    firing: bool = False

    def to_json(self) -> dict[str, float | bool | None]:
        return {"since": self.since, "last_alert": self.last_alert, "firing": self.firing}

    @classmethod
    def from_json(cls, data: dict[str, float | bool | None]) -> KeyState:
        since, last = data.get("since"), data.get("last_alert")
        return cls(
            since=None if since is None else float(since),
            last_alert=None if last is None else float(last),
            firing=bool(data.get("firing", False)),
        )


INITIAL = KeyState()
"""The state of a key never breached (and of one a clear has forgotten)."""


@dataclass(frozen=True)
class Policy:
    delay: float | None
    cooldown: float
    forget_on_clear: bool


def step(state: KeyState, breached: bool, now: float, policy: Policy) -> tuple[KeyState, Event | None]:
    """Advance one key by one evaluation."""
    if not breached:
        return _clear(state, policy)
    since = state.since if state.since is not None else now
    if policy.delay is not None and (state.since is None or now - since < policy.delay):
        return KeyState(since, state.last_alert, state.firing), None
    if state.last_alert is not None and now - state.last_alert < policy.cooldown:
        return KeyState(since, state.last_alert, state.firing), None
    return KeyState(since, now, True), "fire"


def _clear(state: KeyState, policy: Policy) -> tuple[KeyState, Event | None]:
    event: Event | None = "resolve" if state.firing else None
    return KeyState(last_alert=None if policy.forget_on_clear else state.last_alert), event


def at_rest(state: KeyState, forget_on_clear: bool) -> bool:
    """True when a clear leaves this key as it is and sends nothing (see ``_clear``: it resolves a
    firing key, ends the delay clock and, with ``forget_on_clear``, forgets the last alert)."""
    return not state.firing and state.since is None and (state.last_alert is None or not forget_on_clear)
