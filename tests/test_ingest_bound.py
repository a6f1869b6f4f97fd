"""Issue 9 item 7: every account of a frame reaches Redis, however many there are, and while
Redis is away memory is bounded by accounts (the newest snapshot of each), never by cutting some."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis as redis_lib

from ingestor.ingest import Ingestor
from shared.keys import Keys
from shared.redisio import connect
from tests.helpers import free_port
from tests.test_ingestor import redis_server

KEYS = Keys()


def wide_frame(accounts: int, value: float) -> str:
    return json.dumps(
        {"pos": {f"BINANCE-W{i:05d}-UM": {"USDTwalletBalance": value} for i in range(accounts)}}
    )


def test_a_frame_with_50000_accounts_publishes_every_account(
    redis_url: str, r: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ingestor = Ingestor(connect(redis_url), KEYS, stream_maxlen=200_000)
    with caplog.at_level(logging.WARNING):
        parsed = ingestor.accept(wide_frame(50_000, 5.0), 100.0)
        published = ingestor.flush()
    assert published and len(parsed.snapshots) == 50_000
    assert r.zcard(KEYS.seen) == 50_000
    assert r.xlen(KEYS.snapshots) == 50_000
    assert not [rec for rec in caplog.records if "Redis" in rec.getMessage()]  # Redis was healthy


def test_redis_away_keeps_the_newest_snapshot_of_every_account(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    ingestor = Ingestor(connect(url), KEYS, stream_maxlen=100_000, max_pending=100)
    for value in (1.0, 2.0):  # 2 frames x 300 accounts while Redis is down
        ingestor.accept(wide_frame(300, value), 100.0 + value)
        assert not ingestor.flush()
    assert ingestor.pending == 300  # coalesced per account, no account dropped
    with redis_server(port, tmp_path):
        assert ingestor.flush()
        r = redis_lib.Redis.from_url(url, decode_responses=True)
        assert r.zcard(KEYS.seen) == 300
        assert {
            json.loads(v)["raw"]["USDTwalletBalance"]
            for v in r.hmget(KEYS.latest("BINANCE-W00299-UM"), "snapshot")
        } == {2.0}
