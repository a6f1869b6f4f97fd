"""What a running job needs from its process: Redis, keys, the plan. The worker sets it around
every job (in the work horse too, for the forking worker); a job run by anything else builds it
from the environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import redis

from engine.plan import Plan, load_plan
from shared.keys import Keys
from shared.redisio import connect
from shared.settings import WorkerSettings

CURRENT: ContextVar[Context] = ContextVar("monitorx_context")
"""The context of the job in hand (a ContextVar, set per job by the worker)."""


@dataclass(frozen=True)
class Context:
    redis: redis.Redis
    keys: Keys
    plan: Plan
    clock: Callable[[], float] = field(default=time.time)


def current() -> Context:
    try:
        return CURRENT.get()
    except LookupError:
        settings = WorkerSettings()
        return Context(connect(str(settings.redis_url)), settings.keys, load_plan(settings.config))
