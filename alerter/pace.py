"""The pace stage: at most one message per PACE_INTERVAL per channel, and a ``Retry-After``
honoured per channel, shared by every alerter replica through Redis (``Keys.pace(channel)``: the
unix time before which nothing is posted there).

A receiver whose channel is not free rests until it is (its notices wait on its stream, and the
changes of a group meanwhile merge into one message); other channels and receivers go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from shared.keys import Keys
from shared.redisio import run_script

PACE_INTERVAL = 1.1
"""Seconds between two messages to one channel: Slack allows one per second per channel; the
tenth on top keeps messages that leave one second apart from arriving closer together."""
PACE_TTL = 3600
"""Seconds a channel's pace key lives after it was last set (a Retry-After may extend it)."""

# KEYS: pace key. ARGV: now, now + interval, ttl. Returns the seconds to wait (as text), "0"
# when the channel was free: then it is taken until now + interval.
_TAKE = """
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
if free > now then return tostring(free - now) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return '0'
"""

# KEYS: pace key. ARGV: until, ttl. The channel is not free before ``until`` (never shortened).
_HOLD = """
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > free then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""


@dataclass
class Pacer:
    r: redis.Redis
    keys: Keys
    interval: float = PACE_INTERVAL
    _take: Any = field(init=False, repr=False)
    _hold: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._take = self.r.register_script(_TAKE)
        self._hold = self.r.register_script(_HOLD)

    def take(self, channel: str, now: float) -> float:
        """Take the channel for one message: 0.0 when it was free, else the seconds to wait
        (nothing is taken then). A channel ``""`` is never paced."""
        if not channel:
            return 0.0
        args = [repr(now), repr(now + self.interval), PACE_TTL]
        return float(run_script(self._take, [self.keys.pace(channel)], args))

    def hold(self, channel: str, until: float, now: float, client: Any = None) -> None:
        """Nothing goes to the channel before ``until`` (a 429's Retry-After; the end of a send of
        several writes), in every replica; queued on ``client`` when given."""
        if channel:
            ttl = PACE_TTL + max(0, int(until - now))
            run_script(self._hold, [self.keys.pace(channel)], [repr(until), ttl], client)
