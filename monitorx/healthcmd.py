"""``monitorx health --role ROLE``: the healthcheck of one service (compose ``healthcheck``).

Exit status 0 only when a process of ROLE on this host (``socket.gethostname()``, as the
heartbeat records it) has a fresh heartbeat (:mod:`shared.heartbeat`); 1 otherwise, Redis
unreachable included (the reason on standard error); 2 bad input. Reads the heartbeats only
(:func:`engine.health.read_processes`), so it is cheap enough to run every few seconds.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import redis

from engine.health import fresh_processes, read_processes
from shared.cli import settings_or_exit
from shared.heartbeat import ROLES
from shared.redisio import connect
from shared.settings import CommonSettings

EXIT_UNHEALTHY = 1
"""No fresh heartbeat of the role on this host, or Redis unreachable."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx health",
        description="Exit 0 when a process of ROLE on this host has a fresh heartbeat, else 1.",
    )
    parser.add_argument("--role", required=True, choices=ROLES, help="the process role to look for")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(CommonSettings)
    r = connect(str(settings.redis_url))
    try:
        processes = read_processes(r, settings.keys, time.time())
    except redis.RedisError as exc:  # the message names host and port, never the password
        sys.stderr.write(f"monitorx health: Redis unreachable: {exc}\n")
        return EXIT_UNHEALTHY
    finally:
        r.close()
    host = socket.gethostname()
    mine = fresh_processes(processes, args.role, host)
    if not mine:
        sys.stderr.write(f"monitorx health: no {args.role} on {host} with a fresh heartbeat\n")
        return EXIT_UNHEALTHY
    print(f"{args.role} {mine[0].heartbeat.name} on {host}: last step {mine[0].age_s:.0f} s ago")
    return 0
