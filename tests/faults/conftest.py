"""Fixtures of the fault suite: a Slack stand-in, breakable Redis servers and fast pipelines."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import FAST_ENV, FaultRedis, Pipelines, RedisFactory
from tests.pipeline import Pipeline
from tests.slack_standin import SlackStandin


@pytest.fixture
def slack() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[RedisFactory]:
    """Make private redis-servers a test may break; each is stopped at teardown."""
    made: list[FaultRedis] = []

    def make(appendonly: bool = False, password: str | None = None) -> FaultRedis:
        server = FaultRedis(tmp_path / f"redis-{len(made) + 1}", appendonly=appendonly, password=password)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def fault_redis(make_redis: RedisFactory) -> FaultRedis:
    """A private redis-server without persistence (``make_redis(appendonly=True)`` for AOF)."""
    return make_redis()


@pytest.fixture
def pipelines(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipelines]:
    """Make pipelines with the fault suite's short intervals (FAST_ENV, then the call's ``env``),
    on ``redis_url`` (default: the session's Redis, flushed); every process of each is stopped
    at teardown."""
    made: list[Pipeline] = []

    def make(
        config: Path | None = None,
        *,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Pipeline:
        url = redis_url or str(request.getfixturevalue("redis_url"))
        workdir = tmp_path / f"run-{len(made) + 1}"
        pipeline = Pipeline(workdir, url, config, env={**FAST_ENV, **(env or {})}, **kwargs)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()
