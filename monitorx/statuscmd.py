"""``monitorx status [--json] [--config PATH]``: is MonitorX working, and if not, what is wrong.

Prints the problems first (:func:`monitorx.status.problems`, worst first), then the processes and
their heartbeats, the consumer groups (pending, undelivered, how far behind), the job queue, the
alerts firing now (silenced, inhibited), dead letters, quarantined frames, the feeds, the stale
accounts and the counters. ``--json`` prints the :class:`monitorx.status.Status` as JSON with two
more members, ``problems`` (the list of lines) and ``healthy``.

The configuration (``--config``, else ``$MONITORX_CONFIG``, else the built-in one) gives
``stale_after`` and the inhibit rules.

Exit status: 0 healthy, 1 at least one problem (or an invalid configuration), 2 bad input,
3 Redis unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

from engine.checks.fmt import utc
from engine.plan import load_config
from monitorx.status import Status, problems, read_status
from shared.cli import config_or_exit, config_path, settings_or_exit
from shared.redisio import connect
from shared.settings import CommonSettings

EXIT_PROBLEMS = 1
"""Exit status when :func:`monitorx.status.problems` finds anything."""
EXIT_REDIS = 3
"""Exit status when Redis cannot be reached (or answers with an error)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx status",
        description="What is wrong first, then processes, stream lag, queue, alerts, dead letters, "
        "feeds and stale accounts. Exit 0 healthy, 1 problems, 3 Redis unreachable.",
    )
    parser.add_argument("--json", action="store_true", help="the status model as JSON (for scripts)")
    parser.add_argument("--config", type=Path, help="configuration file (default: $MONITORX_CONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(CommonSettings)
    path = config_path(args.config)
    config = config_or_exit(lambda: load_config(path))
    r = connect(str(settings.redis_url))
    try:
        status = read_status(r, settings.keys, config, time.time())
    except redis.RedisError as exc:  # the message names host and port, never the password
        sys.stderr.write(f"monitorx status: Redis unreachable: {exc}\n")
        return EXIT_REDIS
    finally:
        r.close()
    found = problems(status)
    if args.json:
        print(json.dumps(as_json(status, found)))
    else:
        print("\n".join(render(status, found)))
    return EXIT_PROBLEMS if found else 0


def as_json(status: Status, found: list[str]) -> dict[str, Any]:
    """What ``--json`` prints (and the web view's ``/api/status`` answers): the status model as
    JSON plus ``problems`` (``found``) and ``healthy`` (no problem)."""
    return {**status.model_dump(mode="json"), "problems": found, "healthy": not found}


def render(status: Status, found: list[str]) -> list[str]:
    """The readable summary, problems first."""
    head = f"MonitorX at {utc(status.at)} UTC: " + (f"{len(found)} problem(s)" if found else "healthy")
    lines = [head, *(f"  ! {p}" for p in found), ""]
    lines += _section(
        "PROCESSES", ("ROLE", "NAME", "HOST", "PID", "VERSION", "LAST STEP"), _processes(status)
    )
    lines += _section(
        "CONSUMER GROUPS",
        ("STREAM", "GROUP", "CONSUMERS", "PENDING", "UNDELIVERED", "BEHIND"),
        _groups(status),
    )
    q = status.queue
    lines += [
        f"QUEUE {q.name}: {q.depth} waiting, {q.started} started, {q.failed} failed",
        f"ALERTS: {status.firing} firing ({status.silenced} silenced, {status.inhibited} inhibited)",
        f"DEAD LETTERS: {status.dead_letters}   QUARANTINED FRAMES: {status.quarantined}",
        f"CANARY: {_canary(status)}",
        f"CONFIG RELOAD: {_reload(status)}",
        "",
    ]
    lines += _section("FEEDS", ("FEED", "STATE", "SINCE (UTC)", "REASON"), _feeds(status))
    stale = [a for a in status.accounts if a.stale]
    lines.append(
        f"ACCOUNTS: {len(status.accounts)}, {len(stale)} stale (no data for over {status.stale_after:g} s)"
    )
    lines += [f"  {a.account}  {a.age_s:.0f} s old" for a in stale]
    counters = "  ".join(f"{k}={v}" for k, v in sorted(status.counters.items()))
    return [*lines, f"COUNTERS: {counters or '-'}"]


def _canary(status: Status) -> str:
    c = status.canary
    if c is None:
        return "none came through (off, or not yet)"
    late = " OVERDUE" if c.overdue else ""
    return f"last arrived {c.age_s:.0f} s ago, round trip {c.round_trip_s:.2f} s, every {c.every:g} s{late}"


def _reload(status: Status) -> str:
    x = status.reload
    if x is None:
        return "none since the processes started"
    result = f"taken ({x.instances} instances)" if x.ok else "REFUSED: " + (x.error.splitlines() or ["?"])[0]
    return f"{utc(x.at)} UTC of {x.file} by {x.by}: {result}"


def _processes(status: Status) -> list[tuple[str, ...]]:
    return [
        (
            b.role,
            b.name,
            b.host,
            str(b.pid),
            b.version,
            f"{p.age_s:.0f} s ago" + ("" if p.fresh else " (stale)"),
        )
        for p in status.processes
        for b in (p.heartbeat,)
    ]


def _groups(status: Status) -> list[tuple[str, ...]]:
    return [
        (
            g.stream,
            g.group,
            str(g.consumers),
            str(g.pending),
            "?" if g.lag is None else str(g.lag),
            f"{g.behind_s:.0f} s",
        )
        for g in status.groups
    ]


def _feeds(status: Status) -> list[tuple[str, ...]]:
    return [(f.name, f.state, "" if f.since is None else utc(f.since), f.reason) for f in status.feeds]


def _section(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A titled table of aligned columns (``none`` when empty), then a blank line."""
    if not rows:
        return [f"{title}: none", ""]
    everything = [columns, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(columns))]
    table = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in everything
    ]
    return [title, *table, ""]
