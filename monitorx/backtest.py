"""``monitorx backtest``: replay a recording made by ``monitorx ingest --record`` through the same
normalizer, checks and state machine as the live pipeline, offline and in virtual time, and print
the alerts that would have fired (see ``monitorx.replay`` for the semantics).

Alerts go to standard output (a table, or ``--output jsonl``: one JSON object per alert with ``at``,
the virtual time); a summary (frames, malformed, evaluations, alerts by check, wall time) goes to
standard error, with a progress bar while standard error is a terminal. Exit status: 0 after a
replay, 1 for an unreadable recording or an invalid configuration, 2 for invalid options.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from engine.plan import Plan, load_plan
from monitorx.replay import DEFAULT_TICK, Fired, Options, Replay, Stats, read_recording
from monitorx.replay_pool import ReplayPool, ShareFailed
from shared.cli import config_or_exit, config_path, instant
from shared.lifecycle import setup_logging

log = logging.getLogger(__name__)

EXIT_INPUT = 1
TABLE_WIDTHS = (23, 16, 20, 8)
"""Widths of the time, check, account and state columns."""
PARALLEL_BYTES = 64 * 2**20
"""``--jobs auto`` evaluates a recording of this size or more ahead in several processes."""
MAX_JOBS = 8
BAR_WIDTH = 30
BAR_INTERVAL = 0.1
"""Seconds between two redraws of the progress bar (at most ~10 a second)."""


# ---------------------------------------------------------------- options


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def jobs_option(text: str) -> str:
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be auto or a number >= 1: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx backtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="default: $MONITORX_CONFIG or the built-in config")
    parser.add_argument("--recording", type=Path, required=True, help="JSONL from `monitorx ingest --record`")
    parser.add_argument("--output", choices=("table", "jsonl"), default="table")
    parser.add_argument("--from", dest="start", type=instant, help="skip frames received before (ISO/unix)")
    parser.add_argument("--until", dest="end", type=instant, help="skip frames received at or after")
    parser.add_argument("--tick", type=positive, default=DEFAULT_TICK, help="virtual seconds between ticks")
    parser.add_argument(
        "--jobs",
        type=jobs_option,
        default="auto",
        help="processes evaluating the recording ahead (the fast path; 1: none; default auto: one per"
        " CPU for large recordings)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


# ---------------------------------------------------------------- output


def summary_line(fired: Fired) -> str:
    """The first line of the text that says something (a line ending with ``:`` introduces a list)."""
    lines = [line.strip() for line in fired.alert.text.splitlines() if line.strip()]
    telling = [line for line in lines if not line.endswith(":")]
    return (telling or lines or [fired.alert.title])[0]


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table_header() -> str:
    names = ("TIME (UTC)", "CHECK", "ACCOUNT", "STATE")
    return "  ".join(n.ljust(w) for n, w in zip(names, TABLE_WIDTHS, strict=True)) + "  MESSAGE"


def table_row(fired: Fired) -> str:
    a = fired.alert
    cells = (when(fired.at), a.check, a.account, a.state)
    return (
        "  ".join(c.ljust(w) for c, w in zip(cells, TABLE_WIDTHS, strict=True)) + "  " + summary_line(fired)
    )


def json_row(fired: Fired) -> str:
    return json.dumps({"at": fired.at, **fired.alert.model_dump(mode="json")})


class ProgressBar:
    """A one-line bar on a terminal, from bytes read; redrawn at most every ``interval`` seconds."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        interval: float = BAR_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._next = self.started
        self._shown = False

    def update(self, done: int) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval
        self.stream.write("\r" + self.render(done, now - self.started))
        self.stream.flush()
        self._shown = True

    def render(self, done: int, elapsed: float) -> str:
        share = min(done / self.total, 1.0)
        filled = int(share * BAR_WIDTH)
        eta = f"{elapsed / share - elapsed:.0f}s left" if share > 0 else ""
        gib = f"{done / 2**30:.2f}/{self.total / 2**30:.2f} GiB"
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share:6.1%} {gib} {eta}"

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


def write_alerts(fired: Iterable[Fired], output: str, out: TextIO, bar: ProgressBar | None) -> Counter[str]:
    """Print every alert; returns the count per check."""
    counts: Counter[str] = Counter()
    if output == "table":
        out.write(table_header() + "\n")
    for item in fired:
        counts[item.alert.check] += 1
        if bar is not None:
            bar.clear()
        out.write((table_row(item) if output == "table" else json_row(item)) + "\n")
    return counts


def write_summary(stats: Stats, counts: Counter[str], seconds: float, err: TextIO) -> None:
    rate = stats.frames / seconds if seconds > 0 else 0.0
    err.write(
        f"backtest: {stats.frames:,} frames ({stats.outside:,} outside the window), "
        f"{stats.bad_lines:,} malformed lines, {stats.malformed_frames:,} malformed frames, "
        f"{stats.quarantined:,} quarantined accounts; {stats.snapshots:,} snapshots, "
        f"{stats.ticks:,} ticks, {stats.evaluations:,} evaluations ({stats.settled:,} settled ahead)\n"
    )
    by_check = ", ".join(f"{check} {n:,}" for check, n in sorted(counts.items())) or "none"
    err.write(f"backtest: {sum(counts.values()):,} alerts: {by_check}\n")
    err.write(f"backtest: {seconds:.2f} s wall, {rate:,.0f} frames/s\n")


# ---------------------------------------------------------------- running


def replay_items(
    plan: Plan, recording: Path, options: Options, jobs: int, bar: ProgressBar | None
) -> tuple[AbstractContextManager[object], Iterator[Fired], Callable[[], Stats]]:
    """The alerts of the replay in order, screened in this process or in ``jobs`` processes."""
    progress = bar.update if bar is not None else None
    if jobs <= 1:
        replay = Replay(plan, options)
        return (
            nullcontext(),
            replay.run(read_recording(recording, replay.stats, progress)),
            lambda: replay.stats,
        )
    pool = ReplayPool(plan, recording, options, jobs, progress)
    return pool, pool.items(), pool.stats


def default_jobs(recording: Path) -> int:
    """Processes for ``--jobs auto``: one per CPU (at most MAX_JOBS) for a recording of
    PARALLEL_BYTES or more, else 1 (starting processes would cost more than it saves)."""
    if recording.stat().st_size < PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_JOBS))


def run(plan: Plan, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options = Options(tick=args.tick, start=args.start, end=args.end)
    bar = ProgressBar(args.recording.stat().st_size, err) if err.isatty() else None
    started = time.perf_counter()
    jobs = default_jobs(args.recording) if args.jobs == "auto" else int(args.jobs)
    context, items, stats = replay_items(plan, args.recording, options, jobs, bar)
    try:
        with context:
            counts = write_alerts(items, args.output, out, bar)
        out.flush()
    except ShareFailed as exc:
        err.write(f"monitorx backtest: {exc}\n")
        return EXIT_INPUT
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    finally:
        if bar is not None:
            bar.clear()
    write_summary(stats(), counts, time.perf_counter() - started, err)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if logging.getLogger().level >= logging.WARNING:
        # check failures become check_error alerts; live logs each one, offline that floods stderr
        logging.getLogger("engine.assess").setLevel(logging.ERROR)
    args.config = config_path(args.config)
    if not args.recording.is_file():
        sys.stderr.write(f"monitorx backtest: recording not found: {args.recording}\n")
        return EXIT_INPUT
    plan = config_or_exit(lambda: load_plan(args.config))
    if args.start is not None and args.end is not None and args.end <= args.start:
        sys.stderr.write("monitorx backtest: --until must be later than --from\n")
        return 2
    if isinstance(sys.stdout, io.TextIOWrapper):  # an account name may hold a lone surrogate
        sys.stdout.reconfigure(errors="backslashreplace")
    return run(plan, args, sys.stdout, sys.stderr)
