"""Redis helpers every process uses: connections, consumer groups, snapshot publishing, safe trim."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.backoff import BackoffPolicy, backoff_delay
from shared.keys import Keys
from shared.lifecycle import Stopper
from shared.models import Snapshot

log = logging.getLogger(__name__)

REDIS_RETRIES = 3
"""Retries of a Redis command after a connection error or timeout (redis-py's default is 10);
a retried XADD can still be written twice, which every consumer tolerates (see keys.py)."""


SOCKET_TIMEOUT = 10.0
"""Seconds a Redis command may take before it fails (longer than every blocking read we issue;
rq raises it further for its own blocking dequeue)."""


def connect(url: str, *, decode: bool = True) -> redis.Redis:
    """A client for ``url`` with bounded, backed-off retries and health checks."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), REDIS_RETRIES),
        health_check_interval=30,
        socket_keepalive=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )


REDIS_BACKOFF = BackoffPolicy(minimum=0.05, maximum=1.0)
"""Delays between a process's attempts while Redis is unavailable: capped at 1 s, so every
process is working again within about 2 s of Redis coming back (a command's own retries above
take at most 0.7 s more)."""


class Outage:
    """One process loop's view of Redis availability: one log line when Redis becomes unavailable
    and one when it is back (never one per attempt), and the capped, jittered delay between
    attempts (:data:`REDIS_BACKOFF`)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self._since = 0.0

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; the seconds to wait before the next one."""
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            log.error("%s: Redis unavailable, retrying until it is back: %s", self.what, exc)
        return backoff_delay(REDIS_BACKOFF, self.failures)

    def succeeded(self) -> None:
        """Record a successful attempt (logs the recovery once)."""
        if self.failures:
            log.warning(
                "%s: Redis available again after %.1f s (%d failed attempts)",
                *(self.what, time.monotonic() - self._since, self.failures),
            )
            self.failures = 0


class Service(Protocol):
    """A process loop: ``start()`` (re)creates what it needs in Redis (consumer groups...),
    ``step()`` does one round of work. A service may also have ``behind``: True when its last
    step read a full batch (more is waiting), so :func:`ride_out` does not wait out its window."""

    def start(self) -> object: ...

    def step(self) -> object: ...


def ride_out(service: Service, stopper: Stopper, outage: Outage, batch_window: float = 0.0) -> None:
    """``while not stopping: step()``, riding out Redis outages of any length: after a Redis error
    (connection refused or lost, timeout, a group missing because Redis came back empty) it waits
    :meth:`Outage.failed`'s delay, then calls ``start()`` again before the next step, so consumer
    groups are recreated; a Redis error never ends the loop.

    ``batch_window`` (seconds): after a step that did some work (``step()`` returned a true
    value), the next one starts no sooner than this long after that one began, so work arriving
    meanwhile is taken as one batch. A step that found nothing to do is followed at once (its
    own blocking read is the wait), and so is one that left the service ``behind`` (a backlog is
    drained at full speed); a stop request ends the wait."""
    ready = False
    while not stopper.is_set():
        began = time.monotonic()
        try:
            if not ready:
                service.start()
                ready = True
            done = service.step()
        except redis.RedisError as exc:
            ready = False
            stopper.wait(outage.failed(exc))
            continue
        outage.succeeded()
        if done and batch_window > 0 and not getattr(service, "behind", False):
            stopper.wait(max(0.0, began + batch_window - time.monotonic()))


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    """Create a consumer group reading the stream from its start (and the stream itself)."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# KEYS: latest key, seen zset, stream, counters. ARGV: account, observed_at, seq, snapshot json.
# The latest snapshot only moves forward (observed_at, then seq); the stream always gets the entry.
_PUBLISH = """
local cur = redis.call('HMGET', KEYS[1], 'observed_at', 'seq')
local obs, seq = tonumber(ARGV[2]), tonumber(ARGV[3])
local newer = (not cur[1]) or obs > tonumber(cur[1]) or (obs == tonumber(cur[1]) and seq > tonumber(cur[2]))
if newer then
  redis.call('HSET', KEYS[1], 'observed_at', ARGV[2], 'seq', ARGV[3], 'snapshot', ARGV[4])
  redis.call('ZADD', KEYS[2], obs, ARGV[1])
end
redis.call('HINCRBY', KEYS[4], 'snapshots', 1)
return redis.call('XADD', KEYS[3], '*', 'account', ARGV[1], 'seq', ARGV[3], 'observed_at', ARGV[2])
"""


class Publisher:
    """Writes snapshots: the newest per account (compare-and-set) and one stream entry each.

    The stream entry carries identifiers only; the job reads ``latest:{account}`` when it starts,
    so a backlog costs no payload copies and latest wins.
    """

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        self._script = r.register_script(_PUBLISH)

    def publish(self, snapshots: Iterable[Snapshot]) -> list[str]:
        """Publish in one round trip, as one transaction: a consumer waiting on the stream (the
        dispatcher) wakes once with every snapshot of the frame, not at its first entry and
        again for the rest. Returns the stream ids."""
        pipe, k = self._r.pipeline(transaction=True), self._keys
        for snap in snapshots:
            keys = [k.latest(snap.account), k.seen, k.snapshots, k.counters]
            args = [snap.account, repr(snap.observed_at), snap.seq, snap.model_dump_json()]
            run_script(self._script, keys, args, pipe)
        return [str(x) for x in pipe.execute()]


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def safe_trim(r: redis.Redis, stream: str, maxlen: int) -> int:
    """Trim ``stream`` to about ``maxlen`` entries, never past an entry some consumer group has
    not read or not acknowledged (Redis 7.0 trims those otherwise; see pitfalls). Returns the
    number of entries removed."""
    if int(r.xlen(stream)) <= maxlen:
        return 0
    groups: Any = r.xinfo_groups(stream)
    floors = [_group_floor(r, stream, group) for group in groups]
    tail: Any = r.xrevrange(stream, count=maxlen + 1)  # ends at the newest entry we may drop
    if len(tail) <= maxlen:
        return 0
    ms, seq = _id_tuple(tail[-1][0])
    limit = min([(ms, seq + 1), *floors])
    removed: Any = r.xtrim(stream, minid=f"{limit[0]}-{limit[1]}", approximate=False)
    return int(removed)


def _group_floor(r: redis.Redis, stream: str, group: dict[str, Any]) -> tuple[int, int]:
    """The oldest id a group still needs: its oldest pending entry, or the first it has not read."""
    pending = r.xpending(stream, group["name"])
    if pending and pending.get("pending"):
        return _id_tuple(str(pending["min"]))
    ms, seq = _id_tuple(str(group["last-delivered-id"]))
    return ms, seq + 1


def run_script(script: Any, keys: list[str], args: list[Any], client: Any = None) -> Any:
    """Run a registered script (``r.register_script``) on its client, or queue it on ``client``
    (a pipeline) as EVAL of its text: redis-py's scripts in a pipeline first ask SCRIPT EXISTS,
    one more round trip per execute, and Redis caches the compiled text either way."""
    if client is None:
        return script(keys=keys, args=args)
    return client.eval(script.script, len(keys), *keys, *args)
