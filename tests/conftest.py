"""Shared fixtures: a real redis-server per test session on a free port, emptied per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from monitorx.procs import Supervisor, start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port (no persistence); yields its URL."""
    sup = Supervisor()
    try:
        yield start_redis(sup, tmp_path_factory.mktemp("redis"))
    finally:
        sup.stop_all()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, flushed before the test."""
    redis_lib.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def r(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def legacy_config(repo_root: Path) -> Path:
    path = repo_root.parent / "shared" / "legacy" / "features.json"
    if not path.exists():
        pytest.fail(f"the legacy configuration is expected beside the checkout at {path}")
    return path
