"""``monitorx silence add|list|expire``: mute alerts by label for a while, with a reason.

Silences are stored in Redis (:mod:`shared.silences`) and take effect in every alerter at once.
Exit status: 0 done, 2 bad input (the reason on standard error), 1 Redis unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import redis

from engine.checks.fmt import utc
from shared.cli import EXIT_USAGE, settings_or_exit
from shared.config import parse_duration
from shared.redisio import connect
from shared.settings import SilenceSettings
from shared.silences import SILENCE_RETENTION, Silence, SilenceStore, format_duration

EXIT_REDIS = 1
"""Exit status when Redis cannot be reached."""

COLUMNS = ("ID", "STATE", "ENDS (UTC)", "BY", "MATCHERS", "REASON")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx silence",
        description="Mute the alerts whose labels match, for a while, with a reason. Labels: check, "
        "instance, account, venue, severity, key and those the configuration attaches.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="silence alerts matching every MATCHER; prints the new id")
    add.add_argument(
        "matchers", nargs="+", metavar="MATCHER", help="name=value, name!=value, name=~regex, name!~regex"
    )
    add.add_argument("--for", dest="duration", type=_duration, required=True, help="e.g. 90s, 30m, 2h, 1d")
    add.add_argument("--reason", required=True, help="why (shown to everyone listing silences)")
    add.add_argument("--by", default=os.environ.get("USER", ""), help="who (default: $USER)")
    listing = sub.add_parser("list", help="active silences as a table")
    listing.add_argument(
        "--all",
        action="store_true",
        help=f"also expired silences (kept {format_duration(SILENCE_RETENTION)} after their end)",
    )
    sub.add_parser("expire", help="end a silence now").add_argument("id", metavar="ID")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(SilenceSettings)
    store = SilenceStore(connect(str(settings.redis_url)), settings.keys)
    try:
        return _run(args, store, settings.silence_max_hours * 3600, time.time())
    except ValueError as exc:
        sys.stderr.write(f"monitorx silence: {exc}\n")
        return EXIT_USAGE
    except redis.RedisError as exc:  # the message names host and port, never the password
        sys.stderr.write(f"monitorx silence: Redis unreachable: {exc}\n")
        return EXIT_REDIS


def _run(args: argparse.Namespace, store: SilenceStore, max_duration: float, now: float) -> int:
    if args.action == "add":
        return _add(args, store, max_duration, now)
    if args.action == "list":
        return _list(store, now, args.all)
    return _expire(store, args.id, now)


def _add(args: argparse.Namespace, store: SilenceStore, max_duration: float, now: float) -> int:
    """Print the new silence's id on standard output, a summary on standard error."""
    if not args.by.strip():
        raise ValueError("who sets the silence is required: pass --by NAME ($USER is unset)")
    if args.duration > max_duration:
        raise ValueError(
            f"--for {format_duration(args.duration)} is longer than the maximum, "
            f"{format_duration(max_duration)} (MONITORX_SILENCE_MAX_HOURS)"
        )
    silence = store.add(args.matchers, args.duration, args.reason, args.by, now, max_duration)
    print(silence.id)
    sys.stderr.write(f"silenced until {utc(silence.ends_at)} UTC: {', '.join(silence.matchers)}\n")
    return 0


def _list(store: SilenceStore, now: float, include_expired: bool) -> int:
    silences = store.list(now, include_expired)
    if not silences:
        print("no silences" if include_expired else "no active silences")
        return 0
    rows = [COLUMNS, *(_row(s, now) for s in silences)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    return 0


def _row(s: Silence, now: float) -> tuple[str, ...]:
    left = s.ends_at - now
    relative = f"in {format_duration(left)}" if left > 0 else f"{format_duration(-left)} ago"
    ends = f"{utc(s.ends_at)} ({relative})"
    return (s.id, s.state(now), ends, s.by, ", ".join(s.matchers), " ".join(s.reason.split()))


def _expire(store: SilenceStore, silence_id: str, now: float) -> int:
    if store.expire(silence_id, now):
        print(f"expired {silence_id}")
        return 0
    if store.get(silence_id) is None:
        raise ValueError(f"no silence with id {silence_id!r} (see monitorx silence list --all)")
    print(f"{silence_id} had already expired")
    return 0
