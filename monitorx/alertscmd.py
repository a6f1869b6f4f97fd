"""``monitorx alerts [--silenced] [--inhibited]`` and ``monitorx alerts log``.

``alerts``: what fires now (the alerter's ``Keys.firing``), and for each alert why it is or is not
being notified, decided by the alerter's own stages (``alerter.mute``, read through
:func:`monitorx.status.firing_now`, as ``monitorx status`` counts them: inhibited by which alert,
silenced by which silence; else, per receiver its route sends it to, ``notified`` when the
receiver's delivery marker is there, ``waiting`` while the group's timers or a rest hold it).
Like ``amtool alert query``; ``--silenced`` / ``--inhibited`` show only those.

``alerts log``: the newest send attempts (``Keys.sendlog``): receiver, group, status, latency,
alerts, error.

The route tree and inhibit rules come from the configuration (``--config``, else
``$MONITORX_CONFIG``, else the built-in one), the receivers of the default route from the
alerter's settings. Exit status: 0, 2 bad input, 1 Redis unreachable.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from alerter.inhibit import compile_rules
from alerter.receivers import legacy_receivers
from alerter.route import Route, build_route, match_routes
from engine.checks.fmt import utc
from engine.plan import load_config
from monitorx.status import FiringAlert, firing_now
from shared.cli import EXIT_USAGE, config_or_exit, config_path, settings_or_exit
from shared.config import Config, default_route
from shared.keys import Keys
from shared.models import Alert
from shared.redisio import connect
from shared.settings import AlertSettings

EXIT_REDIS = 1
"""Exit status when Redis cannot be reached."""
LOG_LIMIT = 20
"""Send attempts ``alerts log`` shows by default."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx alerts",
        description="What fires now and why each alert is or is not notified; `log`: the send attempts.",
    )
    parser.add_argument("--config", type=Path, help="configuration file (default: $MONITORX_CONFIG)")
    parser.add_argument("--silenced", action="store_true", help="only the silenced alerts")
    parser.add_argument("--inhibited", action="store_true", help="only the inhibited alerts")
    sub = parser.add_subparsers(dest="action")
    log = sub.add_parser("log", help="the newest send attempts, newest first")
    log.add_argument("--limit", type=int, default=LOG_LIMIT, help=f"how many (default {LOG_LIMIT})")
    log.add_argument("--receiver", help="only this receiver's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(AlertSettings)
    r = connect(str(settings.redis_url))
    try:
        if args.action == "log":
            return _log(r, settings.keys, args.limit, args.receiver)
        path = config_path(args.config)
        config = config_or_exit(lambda: load_config(path))
        return _alerts(r, settings, config, args.silenced, args.inhibited, time.time())
    except ValueError as exc:
        sys.stderr.write(f"monitorx alerts: {exc}\n")
        return EXIT_USAGE
    except redis.RedisError as exc:  # the message names host and port, never the password
        sys.stderr.write(f"monitorx alerts: Redis unreachable: {exc}\n")
        return EXIT_REDIS


def receiver_names(config: Config, settings: AlertSettings) -> list[str]:
    """The receivers the alerter would deliver to (no secret is read)."""
    if config.route is not None:
        return list(config.receivers)
    return [x.name for x in legacy_receivers(settings)]


def _alerts(
    r: redis.Redis, settings: AlertSettings, config: Config, silenced: bool, inhibited: bool, now: float
) -> int:
    node = config.route or default_route(receiver_names(config, settings))
    route = build_route(node)
    alerts = firing_now(r, settings.keys, compile_rules(config.inhibit_rules), now)
    if silenced or inhibited:
        wanted = (("silenced",) if silenced else ()) + (("inhibited",) if inhibited else ())
        alerts = [a for a in alerts if a.mark in wanted]
    if not alerts:
        print("nothing fires" if not (silenced or inhibited) else "no such alert fires")
        return 0
    _table(
        ("SINCE (UTC)", "SEVERITY", "CHECK", "ACCOUNT", "KEY", "STATUS"),
        [_row(r, settings.keys, route, a) for a in alerts],
    )
    return 0


def _row(r: redis.Redis, keys: Keys, route: Route, firing: FiringAlert) -> tuple[str, ...]:
    alert = firing.alert
    return (
        utc(alert.observed_at),
        alert.severity,
        alert.check,
        alert.account,
        ",".join(alert.keys),
        firing.muted or _delivery(r, keys, route, alert),
    )


def _delivery(r: redis.Redis, keys: Keys, route: Route, alert: Alert) -> str:
    """``notified: desk; waiting: ops`` per receiver of the routes that take the alert."""
    receivers = list(dict.fromkeys(m.receiver for m in match_routes(route, alert.labels)))
    if not receivers:
        return "routed to no receiver"
    markers: Any = r.mget([keys.sent(name, alert.id) for name in receivers])
    told = [n for n, m in zip(receivers, markers, strict=True) if m == "sent"]
    dead = [n for n, m in zip(receivers, markers, strict=True) if m == "dead"]
    waiting = [n for n in receivers if n not in told and n not in dead]
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (("notified", told), ("gave up", dead), ("waiting", waiting))
        if names
    ]
    return "; ".join(parts)


def _log(r: redis.Redis, keys: Keys, limit: int, receiver: str | None) -> int:
    if limit < 1:
        raise ValueError("--limit must be at least 1")
    entries: Any = r.xrevrange(keys.sendlog, count=limit if receiver is None else None)
    found = [f for _, f in entries if receiver is None or f.get("receiver") == receiver][:limit]
    if not found:
        print("no send attempt recorded")
        return 0
    rows = [
        (
            utc(float(f.get("at", 0))),
            f.get("receiver", ""),
            f.get("status", ""),
            f"{f.get('latency_ms', '')} ms",
            f.get("alerts", ""),
            f.get("group", ""),
            f.get("error", ""),
        )
        for f in found
    ]
    _table(("AT (UTC)", "RECEIVER", "STATUS", "LATENCY", "ALERTS", "GROUP", "ERROR"), rows)
    return 0


def _table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Aligned columns; the last one as is."""
    everything = [columns, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(columns) - 1)]
    for row in everything:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip())
