"""Stream trimming never drops an entry a consumer group has not read or acknowledged."""

from __future__ import annotations

import redis as redis_lib

from shared.redisio import ensure_group, safe_trim


def test_trim_keeps_unread_and_pending_entries(r: redis_lib.Redis) -> None:
    ensure_group(r, "s", "g")
    ids = [r.xadd("s", {"n": str(i)}) for i in range(50)]
    r.xreadgroup("g", "c", {"s": ">"}, count=20)  # 20 delivered, unacknowledged
    r.xack("s", "g", *ids[:10])  # 10 acknowledged: only those may go
    assert safe_trim(r, "s", maxlen=5) == 10
    assert r.xrange("s")[0][0] == ids[10]
    r.xack("s", "g", *ids[10:20])
    r.xreadgroup("g", "c", {"s": ">"})
    r.xack("s", "g", *ids[20:])
    assert safe_trim(r, "s", maxlen=5) == 35
    assert [e[0] for e in r.xrange("s")] == ids[-5:]
    assert all(fields for _, fields in r.xrange("s"))


def test_trim_below_maxlen_does_nothing(r: redis_lib.Redis) -> None:
    ensure_group(r, "s", "g")
    for i in range(3):
        r.xadd("s", {"n": str(i)})
    assert safe_trim(r, "s", maxlen=5) == 0
