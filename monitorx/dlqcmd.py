"""``monitorx dlq list|replay|purge``: read, send again or drop the alerter's dead letters.

The dead-letter stream (``Keys.dead``) holds one entry per (alert, sink) pair the alerter gave up
on (``alerter.service.Delivery._give_up``: fields ``alert``, ``sink``, ``error``, ``attempts``,
``failed_at``), and one per alert entry it could not read at all (sink ``*``,
``alerter.service.ANY_SINK``).

A replay sends the alert again through the normal pipeline: in one MULTI transaction per entry it
deletes that sink's delivery marker (``Keys.sent``, ``dead`` since the give-up) and that sink's
count in ``Keys.attempts``, adds the alert JSON back to the alerts stream (field ``alert``, as the
workers emit it, and ``replay``: the sink) and deletes the dead-letter entry. The router sends a
replay only to that receiver, as an event of its group: it changes no alert's state (a replayed
firing alert that has resolved since does not fire again). Entries of unreadable alerts cannot
be replayed and are kept.

Exit status: 0 done, 2 bad input (the reason on standard error), 1 Redis unreachable.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from alerter.service import ANY_SINK
from engine.checks.fmt import utc
from shared.cli import EXIT_USAGE, instant, settings_or_exit
from shared.keys import Keys
from shared.models import Alert
from shared.redisio import connect
from shared.settings import AlertSettings

EXIT_REDIS = 1
"""Exit status when Redis cannot be reached (or answers with an error)."""
DEFAULT_LIMIT = 50
"""Entries ``dlq list`` shows without ``--limit``: the newest 50."""
ERROR_WIDTH = 60
"""Characters of the error shown per entry by ``dlq list`` (longer ones end in ``...``)."""
PAGE = 500
"""Entries read per round trip by ``--all`` and ``purge``."""
UNREADABLE = "?"
"""Shown for the check, account and state of an entry whose alert cannot be read."""

COLUMNS = ("ENTRY", "FAILED AT (UTC)", "SINK", "CHECK", "ACCOUNT", "STATE", "ATTEMPTS", "ERROR")
_ENTRY_ID = re.compile(r"\d+-\d+")


class BadInput(ValueError):
    """Input the command refuses: exit 2 with the message."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter entry; ``alert`` is None when its JSON is not a valid alert."""

    entry_id: str
    fields: dict[str, str]
    alert: Alert | None

    @classmethod
    def of(cls, entry_id: str, fields: dict[str, str]) -> DeadLetter:
        try:
            alert = Alert.model_validate_json(fields.get("alert") or "")
        except ValidationError:
            alert = None
        return cls(entry_id, fields, alert)

    @property
    def sink(self) -> str:
        return self.fields.get("sink", ANY_SINK)

    @property
    def failed_at(self) -> float:
        """``failed_at`` (the alerter's clock), else the time in the entry id."""
        try:
            return float(self.fields["failed_at"])
        except (KeyError, ValueError):
            return int(self.entry_id.split("-")[0]) / 1000

    @property
    def replayable(self) -> bool:
        return self.alert is not None and self.sink != ANY_SINK

    def describe(self) -> str:
        if self.alert is None:
            return f"{self.entry_id} (unreadable alert, sink {self.sink})"
        a = self.alert
        return f"{self.entry_id} ({a.check} {a.account} {a.state}, alert {a.id}) to {self.sink}"


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a number >= 1: {text!r}")
    return int(text)


def _entry_id(text: str) -> str:
    if not _ENTRY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a dead-letter entry id (like 1764650000000-0): {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx dlq",
        description="The alerts the alerter gave up delivering (the dead-letter stream): list them, "
        "send them again once the sink is fixed, or drop old ones.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="dead letters as a table, newest first")
    listing.add_argument(
        "--limit", type=_limit, default=DEFAULT_LIMIT, help=f"show at most N (default {DEFAULT_LIMIT})"
    )
    replay = sub.add_parser("replay", help="send dead letters again to the sink that gave up")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "ids", nargs="*", default=[], type=_entry_id, metavar="ID", help="entry ids (dlq list)"
    )
    which.add_argument("--all", action="store_true", help="every replayable entry")
    purge = sub.add_parser("purge", help="delete the entries that failed before a time")
    purge.add_argument(
        "--before",
        type=instant,
        required=True,
        metavar="T",
        help="ISO 8601 (UTC unless an offset is given) or unix seconds",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_or_exit(AlertSettings)
    r = connect(str(settings.redis_url))
    try:
        return _run(args, r, settings)
    except BadInput as exc:
        sys.stderr.write(f"monitorx dlq: {exc}\n")
        return EXIT_USAGE
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # names host and port, never the password
        sys.stderr.write(f"monitorx dlq: Redis unreachable: {exc}\n")
        return EXIT_REDIS
    except redis.RedisError as exc:
        sys.stderr.write(f"monitorx dlq: Redis error: {exc}\n")
        return EXIT_REDIS
    finally:
        r.close()


def _run(args: argparse.Namespace, r: redis.Redis, settings: AlertSettings) -> int:
    if args.action == "list":
        return _list(r, settings.keys, args.limit)
    if args.action == "replay":
        return _replay(r, settings, args.ids, args.all)
    return _purge(r, settings.keys, args.before)


# -- list ----------------------------------------------------------------------------------------


def _list(r: redis.Redis, keys: Keys, limit: int) -> int:
    """The newest ``limit`` entries as a table; on standard error how many are not shown."""
    reply: Any = r.xrevrange(keys.dead, count=limit)
    if not reply:
        print("no dead letters")
        return 0
    rows = [COLUMNS, *(_row(DeadLetter.of(str(eid), dict(f))) for eid, f in reply)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))
    total = int(r.xlen(keys.dead))
    if total > len(reply):
        sys.stderr.write(f"{len(reply)} of {total} dead letters shown (--limit)\n")
    return 0


def _row(d: DeadLetter) -> tuple[str, ...]:
    a = d.alert
    check, account, state = (a.check, a.account, a.state) if a else (UNREADABLE,) * 3
    failed = utc(d.failed_at)
    error = " ".join(d.fields.get("error", "").split())
    if len(error) > ERROR_WIDTH:
        error = error[: ERROR_WIDTH - 3] + "..."
    return (d.entry_id, failed, d.sink, check, account, state, d.fields.get("attempts", ""), error)


# -- replay --------------------------------------------------------------------------------------


def _replay(r: redis.Redis, settings: AlertSettings, ids: list[str], every: bool) -> int:
    """Replay the named entries (every one must exist and be replayable, else nothing is done and
    the reason is given) or, with ``every``, all replayable ones (the others are named and kept)."""
    letters = _all(r, settings.keys) if every else _named(r, settings.keys, ids)
    replayed = 0
    for letter in letters:
        if not letter.replayable:
            sys.stderr.write(f"kept {letter.describe()}: an unreadable alert cannot be replayed\n")
            continue
        new_id = _replay_one(r, settings.keys, letter)
        if new_id is None:
            sys.stderr.write(f"skipped {letter.entry_id}: replayed or purged meanwhile\n")
            continue
        replayed += 1
        print(f"replayed {letter.describe()} as alerts entry {new_id}")
        if time.time() - letter.failed_at > settings.sent_ttl:
            sys.stderr.write(
                f"warning: {letter.entry_id} failed more than MONITORX_SENT_TTL ({settings.sent_ttl} s) ago: "
                "the other sinks' delivery markers may be gone, so they may receive it again\n"
            )
    print(f"{replayed} dead letter(s) replayed")
    return 0


def _named(r: redis.Redis, keys: Keys, ids: list[str]) -> list[DeadLetter]:
    letters = []
    for entry_id in dict.fromkeys(ids):  # each once, in the order given
        reply: Any = r.xrange(keys.dead, entry_id, entry_id)
        if not reply:
            raise BadInput(f"no dead-letter entry {entry_id} (see monitorx dlq list)")
        letter = DeadLetter.of(entry_id, dict(reply[0][1]))
        if not letter.replayable:
            raise BadInput(f"{letter.describe()} cannot be replayed: its alert is unreadable (kept)")
        letters.append(letter)
    return letters


def _all(r: redis.Redis, keys: Keys) -> list[DeadLetter]:
    """Every entry, oldest first."""
    letters: list[DeadLetter] = []
    start = "-"
    while True:
        page: Any = r.xrange(keys.dead, start, "+", count=PAGE)
        letters += [DeadLetter.of(str(eid), dict(f)) for eid, f in page]
        if len(page) < PAGE:
            return letters
        start = f"({page[-1][0]}"


def _replay_one(r: redis.Redis, keys: Keys, letter: DeadLetter) -> str | None:
    """One entry in one MULTI transaction, under WATCH of the dead-letter stream so that two
    operators replaying the same entry send it once. Returns the new alerts entry id, or None when
    the entry is gone (replayed or purged by someone else)."""
    assert letter.alert is not None
    alert_id = letter.alert.id

    def transaction(pipe: Any) -> None:
        if not pipe.xrange(keys.dead, letter.entry_id, letter.entry_id):
            return
        pipe.multi()
        pipe.delete(keys.sent(letter.sink, alert_id))
        pipe.hdel(keys.attempts(alert_id), letter.sink)
        pipe.xadd(keys.alerts, {"alert": letter.fields["alert"], "replay": letter.sink})
        pipe.xdel(keys.dead, letter.entry_id)

    results: Any = r.transaction(transaction, keys.dead)
    return str(results[2]) if results else None


# -- purge ---------------------------------------------------------------------------------------


def _purge(r: redis.Redis, keys: Keys, before: float) -> int:
    """Delete the entries whose ``failed_at`` is before ``before``; print how many."""
    stale = [d.entry_id for d in _all(r, keys) if d.failed_at < before]
    purged = 0
    for at in range(0, len(stale), PAGE):
        purged += int(r.xdel(keys.dead, *stale[at : at + PAGE]))
    print(f"purged {purged} dead letter(s) that failed before {utc(before)} UTC")
    return 0
