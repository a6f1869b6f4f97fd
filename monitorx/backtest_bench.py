"""Benchmark of ``monitorx backtest``: a simulated day (12 Binance accounts at 5 Hz, 432,000 frames)
replayed with the legacy configuration; prints one JSON line per run.

    .venv/bin/python -m monitorx.backtest_bench                       # the day, --jobs 1 and 2
    .venv/bin/python -m monitorx.backtest_bench --frames 18000 --jobs 1    # an hour, one process

The recording is generated once with ``simulator.frames`` (steady preset, in parallel) and kept
at ``--recording`` for the next runs. ``--repeat N`` sends every simulated frame N times in a row
(a feed resending unchanged figures); the simulator itself changes every figure on every frame.
``--config`` takes another configuration (one whose thresholds make every account breach shows
the cost of real evaluations). ``--jobs 2`` and up evaluate ahead in that many processes
(``monitorx.replay_pool``), as ``monitorx backtest --jobs`` does.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from engine.plan import Plan, load_plan
from monitorx.backtest import replay_items, write_alerts
from monitorx.replay import Options
from simulator.frames import FrameGenerator, preset

DAY_FRAMES = 432_000
START = datetime(2024, 5, 1, 0, 0, 30, tzinfo=UTC).timestamp()
"""Unix time of the first frame (every report slot of the day falls inside)."""
CHUNK = 2_000
LEGACY = Path(__file__).resolve().parents[2] / "shared" / "legacy" / "features.json"


def _chunk(args: tuple[int, int, int, float, int, float]) -> bytes:
    first, stop, accounts, hz, repeat, strings = args
    generator = FrameGenerator(preset("steady", accounts=accounts, okx=False, string_share=strings))
    lines = []
    for i in range(first, stop):
        text = generator.text((i // repeat) * repeat / hz)
        lines.append(json.dumps({"received_at": START + i / hz, "frame": text}))
    return ("\n".join(lines) + "\n").encode()


def generate(path: Path, frames: int, accounts: int, hz: float, repeat: int, strings: float = 0.25) -> None:
    jobs = [(i, min(i + CHUNK, frames), accounts, hz, repeat, strings) for i in range(0, frames, CHUNK)]
    started = time.perf_counter()
    tmp = path.with_suffix(".partial")
    with mp.get_context("spawn").Pool() as pool, tmp.open("wb") as out:
        for data in pool.imap(_chunk, jobs):
            out.write(data)
    tmp.rename(path)
    took = time.perf_counter() - started
    print(f"generated {path} ({path.stat().st_size / 2**30:.2f} GiB) in {took:.0f} s", file=sys.stderr)


def timed_run(plan: Plan, recording: Path, options: Options, jobs: int) -> dict[str, object]:
    """One run as ``monitorx backtest --jobs N --output jsonl`` makes it (output discarded)."""
    started = time.perf_counter()
    context, items, replay_stats = replay_items(plan, recording, options, jobs, None)
    with context:
        counts = write_alerts(items, "jsonl", io.StringIO(), None)
    stats = replay_stats()
    seconds = time.perf_counter() - started
    return {
        "jobs": jobs,
        "frames": stats.frames,
        "seconds": round(seconds, 2),
        "frames_per_s": round(stats.frames / seconds),
        "day_seconds": round(DAY_FRAMES / (stats.frames / seconds), 1),
        "snapshots": stats.snapshots,
        "evaluations": stats.evaluations,
        "settled_ahead": stats.settled,
        "alerts": dict(sorted(counts.items())),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backtest_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=DAY_FRAMES)
    parser.add_argument("--accounts", type=int, default=12)
    parser.add_argument("--hz", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="send every simulated frame N times in a row")
    parser.add_argument(
        "--strings", type=float, default=0.25, help="share of figures sent as numeric strings (0 to 1)"
    )
    parser.add_argument(
        "--recording", type=Path, help="default: /tmp/monitorx-backtest-<frames>x<repeat>.jsonl"
    )
    parser.add_argument("--config", type=Path, default=LEGACY)
    parser.add_argument("--jobs", default="1,2", help="comma-separated process counts to time")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    suffix = "" if args.strings == 0.25 else f"-s{args.strings:g}"
    recording = args.recording or Path(f"/tmp/monitorx-backtest-{args.frames}x{args.repeat}{suffix}.jsonl")
    if not recording.exists():
        generate(recording, args.frames, args.accounts, args.hz, args.repeat, args.strings)
    plan = load_plan(args.config)
    options = Options()
    for jobs in (int(j) for j in args.jobs.split(",")):
        print(json.dumps(timed_run(plan, recording, options, jobs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
