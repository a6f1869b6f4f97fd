"""Where pair state lives, and the one evaluation loop over it (:func:`evaluate_pair`).

A pair is one (instance, account): a state per key (``engine.state.KeyState``) and ``last``, the
time of its newest evaluation (``_now``). Two stores: :class:`RedisStore` (live: the hash
``state:{instance}:{account}``, written with its alerts in one compare-and-set script) and
:class:`MemoryStore` (the backtest: a dict and a list of alerts). Both keep the same rules:

* idempotent: an evaluation at or before the pair's ``last`` changes nothing, so a job that runs
  twice, or an older snapshot, writes nothing (``stale``);
* an evaluation that changes no state and emits nothing writes nothing (``unchanged``): live, it
  costs one round trip, the read;
* the check runs once per evaluation, however often a concurrent writer makes the write retry;
  each run is reported to the store (:meth:`PairStore.ran`: its duration, whether it raised).

:class:`RedisStore` counts in ``Keys.metrics`` (``shared.metrics``): each check run's duration
(``check_evaluation_duration_seconds``) and error (``check_evaluation_errors_total``) per check,
and the alerts it writes per check and state (``alerts_total``), inside the compare-and-set
script with the write; a run whose evaluation writes nothing leaves its metrics to
:meth:`RedisStore.flush` (one round trip).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import redis
from rq.timeouts import JobTimeoutException

from engine.alerts import alert_counts
from engine.assess import Assessment, Evaluation, assess, evaluate, pair_at_rest
from engine.inputs import Reads, gate_of, traced
from engine.plan import Bound
from engine.state import INITIAL, KeyState
from shared import keys as K
from shared import metrics as M
from shared.keys import Keys
from shared.models import Alert, Snapshot

NOW_FIELD = "_now"
"""Field of the pair's hash holding the time of its newest evaluation."""
GATE_FIELD = "_in"
"""Field of the pair's hash holding its gate (``engine.inputs.Gate``) while it is at rest."""
CAS_ATTEMPTS = 20
HOLD_SECONDS = 60
"""A pair whose check ran into the job timeout gets no new job for this long (``hold`` key): a
check that hangs costs one worker for one timeout per minute, never every worker."""

Outcome = Literal["applied", "unchanged", "stale"]
QUIET = Assessment({}, [])
"""What assessing a pair at rest on findings that breach nothing gives: nothing changes
(``engine.assess.pair_at_rest``), so assess is not called."""


@dataclass(frozen=True)
class PairRecord:
    """A pair as read: its key states, ``last`` (None: never evaluated) and ``token``, the stored
    ``_now`` text a compare-and-set expects to find unchanged ('' when absent)."""

    states: dict[str, KeyState] = field(default_factory=dict)
    last: float | None = None
    token: str = ""
    gate: str | None = None
    """The pair's gate (``engine.inputs.Gate`` JSON), present only while it is at rest."""


class PairStore(Protocol):
    """Where pair state lives: :class:`RedisStore` (live) or :class:`MemoryStore` (the backtest)."""

    def read(self, instance: str, account: str) -> PairRecord: ...

    def write(
        self,
        instance: str,
        account: str,
        prior: PairRecord,
        now: float,
        states: Mapping[str, KeyState],
        alerts: Sequence[Alert],
        gate: str | None,
    ) -> bool:
        """Apply the new states (a key back at INITIAL is deleted, keys not given are kept), set
        ``last`` to ``now`` and the gate (None: none), and emit the alerts, only if the pair is
        still as ``prior`` read it."""

    def hold(self, instance: str, account: str, now: float) -> None:
        """The pair's check timed out: no new job for it for HOLD_SECONDS (live only)."""

    def ran(self, check: str, seconds: float, failed: bool) -> None:
        """The check ``check`` ran once, for ``seconds``; ``failed``: it raised (or timed out)."""


def decode(stored: Mapping[str, str]) -> PairRecord:
    """The record in a pair's hash as Redis holds it."""
    fields = dict(stored)
    token = fields.pop(NOW_FIELD, None)
    gate = fields.pop(GATE_FIELD, None)
    states = {k: KeyState.from_json(json.loads(v)) for k, v in fields.items()}
    return PairRecord(states, None if token is None else float(token), token or "", gate)


def evaluate_pair(
    store: PairStore,
    bound: Bound,
    account: str,
    snap: Snapshot | None,
    now: float,
    clock: Callable[[], float],
    prior: PairRecord | None = None,
    *,
    on_snapshot: bool = False,
) -> Outcome:
    """Evaluate one pair at ``now`` and store the outcome (see the module's rules). ``prior``: the
    pair as the caller already read it. ``on_snapshot``: an evaluation at the snapshot's own time
    (not a tick): for a pair at rest its inputs are traced, and its gate set if it stays at rest."""
    found: Evaluation | None = None
    reads: Reads | None = None
    for _ in range(CAS_ATTEMPTS):
        record = store.read(bound.name, account) if prior is None else prior
        prior = None
        if record.last is not None and record.last >= now:
            return "stale"
        resting = pair_at_rest(record.states, bound.check.forget_on_clear)
        if found is None:  # inputs are traced only for a pair at rest: the only kind with a gate
            found, reads = _timed_run(store, bound, snap, now, on_snapshot and resting)
            if isinstance(found, JobTimeoutException):
                store.hold(bound.name, account, now)
        quiet = resting and not isinstance(found, Exception) and not any(f.breached for f in found)
        if quiet and reads is None:  # at rest, nothing breached, no gate to set: nothing changes
            return "unchanged"
        result = QUIET if quiet else assess(bound, account, snap, now, record.states, clock(), found)
        kept = _merged(record.states, result.states)
        gate = _gate(bound, snap, reads, kept, record.gate)
        if not result.alerts and kept == record.states and gate == record.gate:
            return "unchanged"
        if store.write(bound.name, account, record, now, result.states, result.alerts, gate):
            return "applied"
    raise RuntimeError(f"state of {bound.name}/{account} kept changing under us")


def _timed_run(
    store: PairStore, bound: Bound, snap: Snapshot | None, now: float, trace: bool
) -> tuple[Evaluation, Reads | None]:
    """:func:`_run`, reported to the store (:meth:`PairStore.ran`)."""
    started = time.perf_counter()
    found, reads = _run(bound, snap, now, trace)
    store.ran(bound.check.name, time.perf_counter() - started, isinstance(found, Exception))
    return found, reads


def _run(bound: Bound, snap: Snapshot | None, now: float, trace: bool) -> tuple[Evaluation, Reads | None]:
    """Run the check, on a traced copy of the snapshot when its inputs are wanted."""
    if not trace or snap is None:
        return evaluate(bound, snap, now), None
    copy, reads = traced(snap)
    return evaluate(bound, copy, now), reads


def _merged(prior: Mapping[str, KeyState], states: Mapping[str, KeyState]) -> dict[str, KeyState]:
    """The pair's key states after a write of ``states``: INITIAL ones deleted, others kept."""
    return {k: s for k, s in {**prior, **states}.items() if s != INITIAL}


def _gate(
    bound: Bound,
    snap: Snapshot | None,
    reads: Reads | None,
    kept: Mapping[str, KeyState],
    prior: str | None,
) -> str | None:
    """The pair's gate after an evaluation: none unless every key is at rest; an evaluation on a
    snapshot of a pair at rest sets it from what it read; otherwise (a tick, or a pair coming back
    to rest, gated from its next evaluation on) an existing one stays as it is."""
    if not pair_at_rest(kept, bound.check.forget_on_clear):
        return None
    if reads is None or snap is None:
        return prior
    return gate_of(bound, snap.raw, reads).to_json()


# KEYS: state hash, alerts stream, counters, metrics. ARGV: expected _now ('' = none), new _now,
# the names of the _now field and of the alerts and check-errors counters, then n_set, field,
# value..., n_del, field..., n_alerts, alert json..., n_errors, then the metrics increments
# (shared.metrics.Pending.args): n_ints, field, by..., n_floats, field, by....
# Compare-and-set: applies only if nobody evaluated this pair since we read its state.
_CAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[3]) or ''
if cur ~= ARGV[1] then return 0 end
local i = 6
local n = tonumber(ARGV[i]); i = i + 1
local args = {ARGV[3], ARGV[2]}
for _ = 1, n do table.insert(args, ARGV[i]); table.insert(args, ARGV[i + 1]); i = i + 2 end
redis.call('HSET', KEYS[1], unpack(args))
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HDEL', KEYS[1], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('XADD', KEYS[2], '*', 'alert', ARGV[i]); i = i + 1 end
if n > 0 then redis.call('HINCRBY', KEYS[3], ARGV[4], n) end
local errors = tonumber(ARGV[i]); i = i + 1
if errors > 0 then redis.call('HINCRBY', KEYS[3], ARGV[5], errors) end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HINCRBYFLOAT', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2 end
return 1
"""


class RedisStore:
    """Pair state in Redis (``state:{instance}:{account}``); alerts to the alerts stream, written
    with the state and the metrics in one script. One per job: :attr:`pending` holds the metrics
    of its check runs until a write or :meth:`flush` sends them."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        self._cas: Any = r.register_script(_CAS)
        self.pending = M.Pending()

    def read(self, instance: str, account: str) -> PairRecord:
        stored: Any = self._r.hgetall(self._keys.state(instance, account))
        return decode(stored)

    def write(
        self,
        instance: str,
        account: str,
        prior: PairRecord,
        now: float,
        states: Mapping[str, KeyState],
        alerts: Sequence[Alert],
        gate: str | None,
    ) -> bool:
        keys = [
            self._keys.state(instance, account),
            self._keys.alerts,
            self._keys.counters,
            self._keys.metrics,
        ]
        metrics = M.Pending(dict(self.pending.ints), dict(self.pending.floats))
        for (check, state), n in alert_counts(alerts).items():
            M.count(metrics, self._keys, M.ALERTS, {"check": check, "state": state}, n)
        args = _cas_args(prior.token, now, states, alerts, gate) + metrics.args()
        applied = bool(self._cas(keys=keys, args=args))
        if applied:  # the run's metrics went with the write
            self.pending.clear()
        return applied

    def hold(self, instance: str, account: str, now: float) -> None:
        self._r.set(self._keys.hold(instance, account), repr(now), ex=HOLD_SECONDS)

    def ran(self, check: str, seconds: float, failed: bool) -> None:
        labels = {"check": check}
        M.observe(self.pending, self._keys, M.CHECK_DURATION, labels, seconds, M.CHECK_DURATION_BUCKETS)
        if failed:
            M.count(self.pending, self._keys, M.CHECK_ERRORS, labels)

    def flush(self) -> None:
        """Send the metrics no write carried, in one round trip (none when there are none)."""
        if self.pending:
            pipe = self._r.pipeline(transaction=False)
            self.pending.send(pipe, self._keys)
            pipe.execute()


def _cas_args(
    token: str, now: float, states: Mapping[str, KeyState], alerts: Sequence[Alert], gate: str | None
) -> list[str | int]:
    keep = {k: json.dumps(s.to_json()) for k, s in states.items() if s != INITIAL}
    drop = [k for k, s in states.items() if s == INITIAL]
    if gate is None:
        drop.append(GATE_FIELD)
    else:
        keep[GATE_FIELD] = gate
    errors = sum(1 for a in alerts if a.check == "check_error" and a.state == "firing")
    args: list[str | int] = [token, repr(now), NOW_FIELD, K.COUNTER_ALERTS, K.COUNTER_CHECK_ERRORS, len(keep)]
    for name, value in keep.items():
        args += [name, value]
    args += [len(drop), *drop, len(alerts), *(a.model_dump_json() for a in alerts), errors]
    return args


class MemoryStore:
    """Pair state in a dict and alerts in a list (``alerts``): the backtest's store (a write always
    applies; a hold does nothing)."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairRecord] = {}
        self.alerts: list[Alert] = []

    def read(self, instance: str, account: str) -> PairRecord:
        return self.pairs.get((instance, account)) or PairRecord()

    def write(
        self,
        instance: str,
        account: str,
        prior: PairRecord,
        now: float,
        states: Mapping[str, KeyState],
        alerts: Sequence[Alert],
        gate: str | None,
    ) -> bool:
        self.pairs[(instance, account)] = PairRecord(_merged(prior.states, states), now, repr(now), gate)
        self.alerts.extend(alerts)
        return True

    def hold(self, instance: str, account: str, now: float) -> None:
        return None

    def ran(self, check: str, seconds: float, failed: bool) -> None:
        return None
