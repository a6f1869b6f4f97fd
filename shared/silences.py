"""Silences: an operator mutes the alerts whose labels match, for a while, with a reason.

Model as Alertmanager's (``silence/silence.go``): a silence has label matchers
(:mod:`shared.matchers`, all must match), a start, an end, a reason (its comment) and an author.
At time ``now`` it is *pending* before ``starts_at``, *active* from ``starts_at`` up to, not
including, ``ends_at``, and *expired* from ``ends_at`` on; only an active silence mutes. Expiring
a silence sets its end to now, so it stops muting at once; it stays listed (``--all``) for
:data:`SILENCE_RETENTION`, then is dropped.

Every silence lives in one Redis hash (``Keys.silences``: id -> Silence JSON), so a silence added
by any operator is seen by every alerter at its next read; nothing is cached in a process.
Times are unix seconds (float), like every other time in MonitorX.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from shared.keys import Keys
from shared.matchers import Matcher, matches_all, matches_empty, parse_matcher, parse_matchers

log = logging.getLogger(__name__)

SILENCE_RETENTION = 5 * 86400.0
"""Seconds an expired silence is kept (``silence list --all`` shows it) after its end before
``add`` or ``list`` drop it: 5 days, Alertmanager's default ``--data.retention`` of 120 h."""

DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
"""Units of :func:`format_duration`, largest first."""

SilenceState = Literal["pending", "active", "expired"]

# KEYS: the alerter's groups zset. ARGV: now. Every group due later is due now: the alerter
# looks at it again at once, so what the expired silence muted is notified without waiting.
_WAKE = """
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  redis.call('ZADD', KEYS[1], ARGV[1], key)
end
return 1
"""


def format_duration(seconds: float) -> str:
    """Whole seconds as the shortest ``1d2h3m4s``-style text (``0s`` for zero or less)."""
    left, parts = max(round(seconds), 0), []
    for unit, size in DURATION_UNITS.items():
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


class Silence(BaseModel):
    """One silence. ``matchers`` are matcher texts in canonical form (``name="value"``): validating
    a Silence parses every one (a bad one, or none at all, is a validation error) and rewrites
    it canonically. ``ends_at`` is never before ``starts_at``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    matchers: tuple[str, ...]
    starts_at: float
    ends_at: float
    reason: str
    by: str
    created_at: float

    @field_validator("matchers")
    @classmethod
    def _canonical(cls, texts: tuple[str, ...]) -> tuple[str, ...]:
        if not texts:
            raise ValueError("at least one matcher is required")
        return tuple(str(m) for m in parse_matchers(texts))

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends_at < self.starts_at:
            raise ValueError("ends_at is before starts_at")
        return self

    @cached_property
    def compiled(self) -> tuple[Matcher, ...]:
        """The matchers, parsed (and their regexes compiled) once per object."""
        return parse_matchers(self.matchers)

    def state(self, now: float) -> SilenceState:
        """Pending before ``starts_at``, active until ``ends_at`` (excluded), expired from then."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence is active at ``now`` and every one of its matchers matches."""
        return self.state(now) == "active" and matches_all(self.compiled, labels)


def validate_request(
    matchers: Sequence[str], duration: float, reason: str, by: str, max_duration: float
) -> tuple[Matcher, ...]:
    """Check a new silence's inputs; return its parsed matchers. Raises ValueError naming the first
    problem: no matcher, a bad matcher, only matchers that also match a missing label (they would
    mute everything), a duration not in (0, max_duration], a blank reason or author."""
    if isinstance(matchers, str):
        raise ValueError("matchers must be a sequence of matcher texts, not one string")
    if not matchers:
        raise ValueError("a silence needs at least one matcher, e.g. account=BINANCE-AAZ12-UM")
    parsed = tuple(parse_matcher(m) for m in matchers)
    if all(matches_empty(m) for m in parsed):
        raise ValueError(
            "these matchers also match alerts without those labels and would silence every alert: "
            "add one that requires a value"
        )
    if not 0 < duration <= max_duration:
        raise ValueError(
            f"the duration must be more than 0 and at most {format_duration(max_duration)}, "
            f"not {format_duration(duration) if duration > 0 else f'{duration:g}s'}"
        )
    if not reason.strip():
        raise ValueError("a reason is required")
    if not by.strip():
        raise ValueError("the author (by) is required")
    return parsed


class SilenceStore:
    """The silences of one MonitorX deployment, in the Redis hash ``keys.silences``. ``r`` must
    decode responses to ``str`` (as :func:`shared.redisio.connect` does by default)."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self._r = r
        self._key = keys.silences
        self._groups = keys.groups

    def add(
        self, matchers: Sequence[str], duration: float, reason: str, by: str, now: float, max_duration: float
    ) -> Silence:
        """Store a new silence, active from ``now`` for ``duration`` seconds, with a new random id
        (uuid4), and return it. Inputs are checked first (:func:`validate_request`): a ValueError
        writes nothing. Also drops silences expired more than SILENCE_RETENTION ago."""
        parsed = validate_request(matchers, duration, reason, by, max_duration)
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=tuple(str(m) for m in parsed),
            starts_at=now,
            ends_at=now + duration,
            reason=reason.strip(),
            by=by.strip(),
            created_at=now,
        )
        self._r.hset(self._key, silence.id, silence.model_dump_json())
        self._drop_old(self._load(), now)
        return silence

    def get(self, silence_id: str) -> Silence | None:
        """The silence with this id, or None if there is none (or its entry is malformed)."""
        raw = self._r.hget(self._key, silence_id)
        return None if raw is None else _parse(silence_id, str(raw))

    def list(self, now: float, include_expired: bool = False) -> builtins.list[Silence]:
        """Pending and active silences (and expired ones still retained, with ``include_expired``),
        oldest first. Drops silences expired more than SILENCE_RETENTION ago."""
        kept = self._drop_old(self._load(), now)
        return [s for s in kept if include_expired or s.state(now) != "expired"]

    def expire(self, silence_id: str, now: float) -> bool:
        """End the silence now: from ``now`` on it mutes nothing, and every alerter looks at its
        groups again at once (what the silence held back is notified now). True if it was
        pending or active; False if there is no such silence or it had already expired (then
        nothing changes)."""
        found = self.get(silence_id)
        if found is None or found.state(now) == "expired":
            return False
        ended = found.model_copy(update={"starts_at": min(found.starts_at, now), "ends_at": now})
        self._r.hset(self._key, silence_id, ended.model_dump_json())
        self._r.eval(_WAKE, 1, self._groups, repr(now))
        return True

    def silencing(self, labels: Mapping[str, str], now: float) -> builtins.list[Silence]:
        """The silences muting an alert with these labels at ``now`` (active, every matcher
        matching), oldest first; empty if it is not silenced. Reads Redis on every call, writes
        nothing."""
        return [s for s in self.active(now) if matches_all(s.compiled, labels)]

    def active(self, now: float) -> builtins.list[Silence]:
        """The silences active at ``now``, oldest first, in one read that writes nothing: a stage
        handling many alerts reads once and asks each silence :meth:`Silence.mutes`."""
        return [s for s in self._load() if s.state(now) == "active"]

    def _load(self) -> builtins.list[Silence]:
        """Every stored silence, oldest first (``created_at``, then ``id``); a malformed entry is
        logged and skipped, so it mutes nothing."""
        stored: dict[str, str] = self._r.hgetall(self._key)  # type: ignore[assignment]
        return parse_silences(stored)

    def _drop_old(self, silences: builtins.list[Silence], now: float) -> builtins.list[Silence]:
        """Delete the silences that ended more than SILENCE_RETENTION before ``now``; return the rest."""
        old = [s.id for s in silences if s.ends_at + SILENCE_RETENTION <= now]
        if old:
            self._r.hdel(self._key, *old)
        return [s for s in silences if s.id not in old]


def parse_silences(stored: Mapping[str, str]) -> builtins.list[Silence]:
    """The silences of the hash ``Keys.silences`` as read (id -> JSON), oldest first
    (``created_at``, then ``id``); a malformed entry is logged and skipped, so it mutes nothing."""
    parsed = (_parse(silence_id, raw) for silence_id, raw in stored.items())
    return sorted((s for s in parsed if s is not None), key=lambda s: (s.created_at, s.id))


def _parse(silence_id: str, raw: str) -> Silence | None:
    try:
        return Silence.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("ignoring malformed silence %s: %s", silence_id, exc.errors()[0]["msg"])
        return None
