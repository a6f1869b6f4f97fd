"""``monitorx bench``: two scenarios, each one run whose last printed line is one JSON object.

``--scenario saturating`` (the default): bare RQ against the full pipeline, same worker class
and count, in ``--rounds`` rounds.
(a) ``rq_noop_jobs_per_s``: the MonitorX queue, job class and JSON serializer, with ``--jobs``
    no-op jobs pre-enqueued, drained by N burst workers: the ceiling RQ itself sets on this machine.
(b) the pipeline: simulator (bench preset, all accounts of the legacy configuration) -> ingestor
    -> dispatcher -> N workers -> alerter (JSONL), every pair of the configuration enabled, with
    low-balance thresholds set so every evaluation alerts (cooldown 0) to time frames to alerts;
    ``--seconds`` measured.
Each round measures (a) and (b) back to back on an emptied Redis, (b) first in every other round,
and has its own ``ratio`` = (b) / (a). The host's speed moves within minutes (a fixed CPU loop
took from 0.22 to 0.40 s, seconds apart, on the development machine), so a ratio is only
meaningful between figures measured close together: the line printed is the round of median
ratio, with every round's ratio, evaluations and no-op jobs per second beside it.

``--scenario quiet-desk``: CPU per frame of a quiet desk, MonitorX against the prototype's way.
(a) the pipeline: simulator (quiet preset: 12 Binance accounts, still wallets, 5 Hz) ->
    ingestor -> dispatcher -> N workers -> alerter (JSONL), configured with ``QUIET_CONFIG``
    (nothing breaches, nothing fires). After ``--warmup`` frames, ``--frames`` frames are
    measured: user + system CPU (psutil) of every MonitorX process over that window divided by
    the frames the ingestor received (``monitorx_cpu_ms_per_frame``; redis-server apart, as
    ``redis_cpu_ms_per_frame``), and the counters' growth per frame (jobs, evaluations,
    coalesced jobs).
(b) the in-process baseline (:func:`in_process`): the same scenario's frames at the same times
    in one loop of one process, as the prototype runs: parse, normalize every account as the
    ingestor does, and evaluate every check the plan routes to it (``time.process_time``,
    ``baseline_cpu_ms_per_frame``); ``ratio`` = (a) / (b).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml

from engine.jobs import NOOP, make_queue
from engine.plan import Plan, load_plan
from ingestor.frames import SequenceClock, parse_frame
from monitorx.backtest_bench import LEGACY
from monitorx.configcmd import to_yaml
from monitorx.procs import Supervisor, free_port, start_redis
from shared.config import load
from shared.keys import (
    COUNTER_ALERTS,
    COUNTER_COALESCED,
    COUNTER_EVALS,
    COUNTER_FRAMES,
    COUNTER_JOBS,
    Keys,
)
from shared.lifecycle import setup_logging
from simulator.frames import FrameGenerator, preset

log = logging.getLogger(__name__)

COUNTERS = Keys().counters
"""The counters hash, under the default prefix the bench's children use."""

BENCH_CONFIG = """
version: 1
stale_after: 60
checks:
  low-balance:
    check: low_balance
    accounts: ["BINANCE-*"]
    params: {thresholds: {USDT: 1000000000, USDC: 10000, BNB: 3}}
    cooldown: 0
"""
"""Added to the legacy configuration's checks: a low balance that fires on every evaluation."""

SCENARIOS: tuple[str, ...] = ("saturating", "quiet-desk")
"""``--scenario`` choices; the first is the default."""
SATURATING_HZ = 20.0
"""Saturating scenario's default frame rate: enough to keep the workers saturated."""
SATURATING_ROUNDS = 5
"""Saturating scenario's default rounds (odd: the median is one of them)."""
SATURATING_JOBS = 3000
"""Saturating scenario's default no-op jobs per round (about 10 s of bare RQ here)."""
SATURATING_SECONDS = 10.0
"""Saturating scenario's default measured pipeline time per round."""

QUIET_CONFIG = """
version: 1
stale_after: 60
checks:
  low-balance:
    check: low_balance
    accounts: ["BINANCE-*"]
    params: {thresholds: {USDT: 10000, USDC: 10000, BNB: 3}}
"""
"""The quiet desk's configuration: the legacy low balance over every Binance account, its
thresholds below every balance the quiet preset sends; the plan adds stale data (60 s)."""
QUIET_FEED: tuple[str, ...] = ("--scenario", "quiet", "--log-level", "WARNING")
"""The quiet desk's simulator options, before its rate and accounts."""
QUIET_HZ = 5.0
"""Quiet desk's default frame rate (Galio's)."""
QUIET_ACCOUNTS = 12
"""Quiet desk's default number of Binance accounts."""
QUIET_FRAMES = 300
"""Quiet desk's default measured frames (60 s at 5 Hz)."""
QUIET_WARMUP = 50
"""Quiet desk's default frames received before the measured window opens (start-up and the
first evaluation of every pair stay out of it)."""
MONITORX_ROLES: tuple[str, ...] = ("ingestor", "dispatcher", "workers", "alerter")
"""The processes whose CPU counts as MonitorX's (every worker under ``workers``)."""
BASELINE_PASSES = 3
"""Passes of the in-process baseline over the frames; the median is reported."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rss_mb(sup: Supervisor) -> float:
    """Total resident memory of the supervised children, in MiB."""
    total = 0
    for child in sup.children:
        try:
            total += psutil.Process(child.proc.pid).memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def bare_rq(url: str, workers: int, kind: str, jobs: int) -> float:
    rq_conn = redis.Redis.from_url(url)
    queue = make_queue(rq_conn)
    datas = [
        queue.prepare_data(NOOP, args=["bench", f"acc{i % 13}", None], result_ttl=0, meta={"prefix": "mx:"})
        for i in range(jobs)
    ]
    for start in range(0, jobs, 1000):
        pipe = rq_conn.pipeline()
        queue.enqueue_many(datas[start : start + 1000], pipeline=pipe)
        pipe.execute()
    sup = Supervisor()
    children = [
        sup.python(
            f"noop-{n}",
            "workers",
            ["--burst", "--class", kind, "--name", f"noop-{n}"],
            env={"MONITORX_REDIS_URL": url, "MONITORX_LOG_LEVEL": "WARNING"},
        )
        for n in range(workers)
    ]
    while len(queue) >= jobs:  # the clock starts with the first job taken, not with Python start-up
        time.sleep(0.001)
    began, left = time.perf_counter(), len(queue)
    for child in children:
        child.proc.wait()
    return left / (time.perf_counter() - began)


def _job_delays(r: redis.Redis) -> list[float]:
    """Milliseconds from enqueue to start of every job kept (the bench keeps results 600 s)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    delays = []
    for key in r.scan_iter("rq:job:*", count=1000):
        stamps: Any = r.hmget(key, "enqueued_at", "started_at")
        if all(stamps):
            enq, start = (datetime.strptime(bytes(v).decode(), fmt).replace(tzinfo=UTC) for v in stamps)
            delays.append((start - enq).total_seconds() * 1000)
    return delays


def _frame_to_alert(path: Path) -> list[float]:
    """Milliseconds from observation to delivery of every alert in the JSONL file."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [(rec["delivered_at"] - rec["observed_at"]) * 1000 for rec in map(json.loads, lines)]


def pipeline(url: str, redis_pid: int, tmp: Path, args: argparse.Namespace, hz: float) -> dict[str, Any]:
    """The saturated pipeline's figures; ``redis_pid``: the redis-server's, whose cores are
    reported beside the pipeline's."""
    config = tmp / "bench.yaml"
    config.write_text(_bench_yaml(args.legacy))
    r = redis.Redis.from_url(url, decode_responses=True)
    feed = ["--scenario", "bench", "--hz", str(hz), "--accounts", "13"]
    env = {"MONITORX_CONFIG": str(config), "MONITORX_RESULT_TTL": "600"}
    peak_rss = 0.0
    with running_pipeline(url, tmp, args, feed, env) as sup:
        _wait_for_counter(r, sup, COUNTER_EVALS, 50, 30)
        c0, t0, cpu0 = r.hgetall(COUNTERS), time.perf_counter(), _cpu_by_role(sup, redis_pid)
        while time.perf_counter() - t0 < args.seconds:
            peak_rss = max(peak_rss, _rss_mb(sup))
            time.sleep(0.25)
        c1, t1, cpu1 = r.hgetall(COUNTERS), time.perf_counter(), _cpu_by_role(sup, redis_pid)
    counters = r.hgetall(COUNTERS)

    def rate(name: str) -> float:
        return (int(c1.get(name, 0)) - int(c0.get(name, 0))) / (t1 - t0)

    evals_per_s = rate(COUNTER_EVALS)
    f2a, e2s = _frame_to_alert(tmp / "alerts.jsonl"), _job_delays(redis.Redis.from_url(url))
    return {
        "evals_per_s": round(evals_per_s, 1),
        "alerts_per_s": round(rate(COUNTER_ALERTS), 1),
        "frame_to_alert_p50_ms": round(statistics.median(f2a), 1) if f2a else None,
        "frame_to_alert_p99_ms": round(_pct(f2a, 0.99), 1) if f2a else None,
        "enqueue_to_start_p99_ms": round(_pct(e2s, 0.99), 1) if e2s else None,
        "coalesced": int(counters.get(COUNTER_COALESCED, 0)),
        "frames": int(counters.get(COUNTER_FRAMES, 0)),
        "peak_rss_mb": round(peak_rss, 1),
        "cores_by_process": {role: round((cpu1[role] - cpu0[role]) / (t1 - t0), 2) for role in cpu1},
    }


def _cpu_by_role(sup: Supervisor, redis_pid: int) -> dict[str, float]:
    """CPU seconds so far of each child, the workers summed, and of redis-server: how the cores
    were shared."""
    cpu: dict[str, float] = {"redis": _cpu_seconds(redis_pid)}
    for child in sup.children:
        role = "workers" if child.name.startswith("worker-") else child.name
        cpu[role] = cpu.get(role, 0.0) + _cpu_seconds(child.proc.pid)
    return cpu


@contextmanager
def running_pipeline(
    url: str, tmp: Path, args: argparse.Namespace, feed: Sequence[str], env: dict[str, str]
) -> Iterator[Supervisor]:
    """Alerter (JSONL sink ``tmp/alerts.jsonl``), ``args.workers`` workers of class ``args.kind``,
    dispatcher, simulator (``feed``: its scenario options) and ingestor, in that order, with ``env``
    added; all stopped, newest first, on the way out."""
    sim_port = free_port()
    env = {
        "MONITORX_REDIS_URL": url,
        "MONITORX_GALIO_URI": f"ws://127.0.0.1:{sim_port}",
        "MONITORX_ALERTS_JSONL": str(tmp / "alerts.jsonl"),
        "MONITORX_LOG_LEVEL": "WARNING",
        "MONITORX_WORKER_CLASS": args.kind,
        **env,
    }
    sup = Supervisor()
    try:
        sup.python("alerter", "alerter", [], env=env)
        for n in range(args.workers):
            sup.python(f"worker-{n}", "workers", ["--name", f"bench-{n}"], env=env)
        sup.python("dispatcher", "dispatcher", [], env=env)
        sup.python("simulator", "simulator", ["--port", str(sim_port), *feed], env=env)
        sup.python("ingestor", "ingestor", [], env=env)
        yield sup
    finally:
        sup.stop_all()


def _bench_yaml(legacy: Path) -> str:
    doc = yaml.safe_load(to_yaml(load(legacy)))
    doc["checks"].update(yaml.safe_load(BENCH_CONFIG)["checks"])
    return yaml.safe_dump(doc, sort_keys=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default=SCENARIOS[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--class", dest="kind", choices=["simple", "fork"], default="simple")
    saturating = parser.add_argument_group("saturating")
    saturating.add_argument(
        "--rounds", type=int, default=SATURATING_ROUNDS, help="rounds of bare RQ and pipeline"
    )
    saturating.add_argument(
        "--jobs", type=int, default=SATURATING_JOBS, help="no-op jobs of the bare-RQ baseline, per round"
    )
    saturating.add_argument(
        "--seconds", type=float, default=SATURATING_SECONDS, help="measured pipeline time, per round"
    )
    parser.add_argument(
        "--hz",
        type=float,
        default=None,
        help=f"simulator frames per second (default: {SATURATING_HZ:g} saturating, enough to keep the "
        f"workers saturated; {QUIET_HZ:g} quiet-desk)",
    )
    parser.add_argument("--legacy", type=Path, default=LEGACY)
    quiet = parser.add_argument_group("quiet-desk")
    quiet.add_argument("--accounts", type=int, default=QUIET_ACCOUNTS, help="Binance accounts")
    quiet.add_argument("--frames", type=int, default=QUIET_FRAMES, help="frames measured")
    quiet.add_argument("--warmup", type=int, default=QUIET_WARMUP, help="frames received before measuring")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO")
    result = quiet_desk(args) if args.scenario == "quiet-desk" else saturating(args)
    print(json.dumps(result), flush=True)
    return 0


def saturating(args: argparse.Namespace) -> dict[str, Any]:
    """The default scenario's figures: ``args.rounds`` rounds of bare RQ and the saturated
    pipeline; the round of median ratio, with every round's figures in brief."""
    hz = SATURATING_HZ if args.hz is None else args.hz
    with tempfile.TemporaryDirectory(prefix="monitorx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        sup = Supervisor()
        try:
            url = start_redis(sup, tmp)
            pid = sup.children[-1].proc.pid
            rounds = [
                one_round(url, pid, tmp / f"round-{n}", args, hz, n % 2 == 1) for n in range(args.rounds)
            ]
        finally:
            sup.stop_all()
    ratios = [r["ratio"] for r in rounds]
    median = rounds[ratios.index(statistics.median_low(ratios))]
    return {
        **median,
        "rounds": len(rounds),
        "ratios": ratios,
        "evals_per_s_by_round": [r["evals_per_s"] for r in rounds],
        "rq_noop_jobs_per_s_by_round": [r["rq_noop_jobs_per_s"] for r in rounds],
    }


def one_round(
    url: str, redis_pid: int, tmp: Path, args: argparse.Namespace, hz: float, pipeline_first: bool
) -> dict[str, Any]:
    """Bare RQ and the pipeline back to back (``pipeline_first``: in that order), each on an
    emptied Redis; the pipeline's figures with the no-op rate and the ratio."""
    tmp.mkdir()
    figures: dict[str, Any] = {}
    noop = 0.0
    for part in ("pipeline", "bare") if pipeline_first else ("bare", "pipeline"):
        redis.Redis.from_url(url).flushall()
        if part == "bare":
            noop = bare_rq(url, args.workers, args.kind, args.jobs)
        else:
            figures = pipeline(url, redis_pid, tmp, args, hz)
    log.info("round: bare RQ %.0f no-op jobs/s, pipeline %.0f evaluations/s", noop, figures["evals_per_s"])
    evals = figures.pop("evals_per_s")
    return {
        "workers": args.workers,
        "worker_class": args.kind,
        "evals_per_s": evals,
        "rq_noop_jobs_per_s": round(noop, 1),
        "ratio": round(evals / noop, 3),
        **figures,
    }


# the quiet desk


def quiet_desk(args: argparse.Namespace) -> dict[str, Any]:
    """The quiet-desk scenario's figures: the pipeline's window, then the in-process baseline
    (median of ``BASELINE_PASSES`` passes) over the same frames, with the same plan."""
    hz = QUIET_HZ if args.hz is None else args.hz
    with tempfile.TemporaryDirectory(prefix="monitorx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        config = tmp / "quiet.yaml"
        config.write_text(QUIET_CONFIG)
        sup = Supervisor()
        try:
            url = start_redis(sup, tmp)
            window = quiet_pipeline(url, sup.children[-1].proc.pid, tmp, args, hz, config)
        finally:
            sup.stop_all()
        plan = load_plan(config)
    texts = quiet_frames(args.accounts, hz, args.warmup, args.frames)
    baseline = statistics.median(in_process(texts, plan).cpu_ms_per_frame for _ in range(BASELINE_PASSES))
    return _quiet_figures(args, hz, window, baseline)


@dataclass(frozen=True)
class Reading:
    """CPU seconds of each MonitorX role and of redis-server, and the counters, at one moment."""

    cpu: dict[str, float]
    redis_cpu: float
    counters: dict[str, int]

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)


def quiet_pipeline(
    url: str, redis_pid: int, tmp: Path, args: argparse.Namespace, hz: float, config: Path
) -> tuple[Reading, Reading]:
    """Readings at the start and the end of the measured window: it opens once the ingestor has
    counted ``args.warmup`` frames and closes ``args.frames`` frames later."""
    r = redis.Redis.from_url(url, decode_responses=True)
    feed = [*QUIET_FEED, "--hz", str(hz), "--accounts", str(args.accounts)]
    with running_pipeline(url, tmp, args, feed, {"MONITORX_CONFIG": str(config)}) as sup:
        _wait_for_counter(r, sup, COUNTER_FRAMES, args.warmup, 60 + args.warmup / hz)
        before = _read(sup, redis_pid, r)
        end = before.counter(COUNTER_FRAMES) + args.frames
        _wait_for_counter(r, sup, COUNTER_FRAMES, end, 30 + 2 * args.frames / hz)
        return before, _read(sup, redis_pid, r)


def _wait_for_counter(r: redis.Redis, sup: Supervisor, counter: str, count: int, timeout: float) -> None:
    """Until the counters hash holds ``count`` of ``counter``; raises if a child exits or time
    runs out."""
    deadline = time.monotonic() + timeout
    while int(r.hget(COUNTERS, counter) or 0) < count:
        if exited := sup.exited():
            raise RuntimeError(f"{', '.join(c.name for c in exited)} exited: see the logs above")
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} {counter} within {timeout:.0f} s: see the logs above")
        time.sleep(0.1)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, and of the children it has waited for (a fork worker's
    work horses)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _read(sup: Supervisor, redis_pid: int, r: redis.Redis) -> Reading:
    cpu = dict.fromkeys(MONITORX_ROLES, 0.0)
    for child in sup.children:
        role = "workers" if child.name.startswith("worker-") else child.name
        if role in cpu:
            cpu[role] += _cpu_seconds(child.proc.pid)
    counters: dict[str, str] = r.hgetall(COUNTERS)  # type: ignore[assignment]
    return Reading(cpu, _cpu_seconds(redis_pid), {name: int(n) for name, n in counters.items()})


def quiet_frames(accounts: int, hz: float, first: int, count: int) -> list[str]:
    """The quiet preset's frames as the simulator sends them at ``hz``: ticks ``first`` to
    ``first + count`` (the measured window opens after about ``first`` frames)."""
    generator = FrameGenerator(preset("quiet", accounts=accounts))
    texts = (generator.text(tick / hz) for tick in range(first, first + count))
    return [text for text in texts if text is not None]


@dataclass(frozen=True)
class BaselineRun:
    """One pass of :func:`in_process`."""

    cpu_ms_per_frame: float
    frames: int
    evaluations: int
    """Check evaluations, one per (account, routed check) of every frame."""
    breached: int
    """Breached findings among them."""


def in_process(texts: Sequence[str], plan: Plan) -> BaselineRun:
    """The prototype's way, timed with ``time.process_time``: one loop in this process over
    ``texts``; each frame is parsed and its accounts normalized by ``ingestor.frames.parse_frame``
    (as the ingestor does), then every check the plan routes to each account's snapshot is
    evaluated with the plan's params at the snapshot's time. No state, no alerts, no I/O."""
    clock = SequenceClock()
    evaluations = breached = 0
    began = time.process_time()
    for text in texts:
        for snap in parse_frame(text, time.time(), clock.next).snapshots:
            for bound in plan.for_snapshot(snap.account):
                findings = bound.check.evaluate(snap, bound.params, snap.observed_at)
                evaluations += 1
                breached += sum(finding.breached for finding in findings)
    took_ms = (time.process_time() - began) * 1000
    return BaselineRun(took_ms / max(1, len(texts)), len(texts), evaluations, breached)


def _quiet_figures(
    args: argparse.Namespace, hz: float, window: tuple[Reading, Reading], baseline: float
) -> dict[str, Any]:
    before, after = window
    frames = max(1, after.counter(COUNTER_FRAMES) - before.counter(COUNTER_FRAMES))
    cpu = {role: (after.cpu[role] - before.cpu[role]) * 1000 / frames for role in MONITORX_ROLES}
    monitorx = sum(cpu.values())

    def per_frame(name: str) -> float:
        return round((after.counter(name) - before.counter(name)) / frames, 2)

    return {
        "scenario": "quiet-desk",
        "accounts": args.accounts,
        "hz": hz,
        "frames": frames,
        "workers": args.workers,
        "worker_class": args.kind,
        "monitorx_cpu_ms_per_frame": round(monitorx, 2),
        "cpu_ms_per_frame_by_process": {role: round(ms, 2) for role, ms in cpu.items()},
        "redis_cpu_ms_per_frame": round((after.redis_cpu - before.redis_cpu) * 1000 / frames, 2),
        "baseline_cpu_ms_per_frame": round(baseline, 3),
        "ratio": round(monitorx / baseline, 1) if baseline > 0 else None,
        "jobs_enqueued_per_frame": per_frame(COUNTER_JOBS),
        "evaluations_per_frame": per_frame(COUNTER_EVALS),
        "coalesced_per_frame": per_frame(COUNTER_COALESCED),
        "alerts_emitted": after.counter(COUNTER_ALERTS) - before.counter(COUNTER_ALERTS),
        "frame_to_alert_p99_ms": None,  # nothing fires on a quiet desk
    }
