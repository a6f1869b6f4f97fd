"""``monitorx bench``: bare RQ against the full pipeline, same worker class and count, one run.

(a) ``rq_noop_jobs_per_s``: the MonitorX queue, job class and JSON serializer, with no-op jobs
    pre-enqueued, drained by N burst workers: the ceiling RQ itself sets on this machine.
(b) the pipeline: simulator (bench preset, all accounts of the legacy configuration) -> ingestor
    -> dispatcher -> N workers -> alerter (JSONL), every pair of the configuration enabled, with
    low-balance thresholds set so every evaluation alerts (cooldown 0) to time frames to alerts.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from monitorx.procs import Supervisor, free_port, start_redis
from shared.keys import COUNTER_COALESCED, COUNTER_EVALS, Keys
from shared.lifecycle import setup_logging
from workers.worker import make_queue

log = logging.getLogger(__name__)

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


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RssSampler:
    """Peak total resident memory of the supervised children."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.peak = 0.0

    def sample(self) -> None:
        total = 0
        for child in self.sup.children:
            try:
                total += psutil.Process(child.proc.pid).memory_info().rss
            except psutil.Error:
                continue
        self.peak = max(self.peak, total / 2**20)


def bare_rq(url: str, workers: int, kind: str, jobs: int) -> float:
    rq_conn = redis.Redis.from_url(url)
    queue = make_queue(rq_conn)
    datas = [
        queue.prepare_data(
            "workers.bench.noop", args=["bench", f"acc{i % 13}", None], result_ttl=0, meta={"prefix": "mx:"}
        )
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
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out.append((rec["delivered_at"] - rec["observed_at"]) * 1000)
    return out


def pipeline(
    url: str, tmp: Path, workers: int, kind: str, seconds: float, hz: float, legacy: Path
) -> dict[str, Any]:
    config = tmp / "bench.yaml"
    config.write_text(_bench_yaml(legacy))
    sim_port = free_port()
    jsonl = tmp / "alerts.jsonl"
    env = {
        "MONITORX_REDIS_URL": url,
        "MONITORX_GALIO_URI": f"ws://127.0.0.1:{sim_port}",
        "MONITORX_CONFIG": str(config),
        "MONITORX_ALERTS_JSONL": str(jsonl),
        "MONITORX_LOG_LEVEL": "WARNING",
        "MONITORX_RESULT_TTL": "600",
        "MONITORX_WORKER_CLASS": kind,
    }
    sup = Supervisor()
    sampler = RssSampler(sup)
    r = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys()
    try:
        sup.python("alerter", "alerter", [], env=env)
        for n in range(workers):
            sup.python(f"worker-{n}", "workers", ["--name", f"bench-{n}"], env=env)
        sup.python("dispatcher", "dispatcher", [], env=env)
        sup.python(
            "simulator",
            "simulator",
            ["--port", str(sim_port), "--scenario", "bench", "--hz", str(hz), "--accounts", "13"],
            env=env,
        )
        sup.python("ingestor", "ingestor", [], env=env)
        _wait_for_evals(r, keys, 30)
        evals0, t0 = int(r.hget(keys.counters, COUNTER_EVALS) or 0), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sampler.sample()
            time.sleep(0.25)
        evals1, t1 = int(r.hget(keys.counters, COUNTER_EVALS) or 0), time.perf_counter()
    finally:
        sup.stop_all()
    counters = r.hgetall(keys.counters)
    return {
        "evals_per_s": (evals1 - evals0) / (t1 - t0),
        "frame_to_alert_ms": _frame_to_alert(jsonl),
        "enqueue_to_start_ms": _job_delays(redis.Redis.from_url(url)),
        "coalesced": int(counters.get(COUNTER_COALESCED, 0)),
        "frames": int(counters.get("frames", 0)),
        "peak_rss_mb": sampler.peak,
    }


def _wait_for_evals(r: redis.Redis, keys: Keys, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(r.hget(keys.counters, COUNTER_EVALS) or 0) < 50:
        if time.monotonic() > deadline:
            raise RuntimeError("the pipeline produced no evaluations: see the logs above")
        time.sleep(0.1)


def _bench_yaml(legacy: Path) -> str:
    import yaml

    from monitorx.configcmd import to_yaml
    from shared.config import load

    doc = yaml.safe_load(to_yaml(load(legacy)))
    doc["checks"].update(yaml.safe_load(BENCH_CONFIG)["checks"])
    return yaml.safe_dump(doc, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="monitorx bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--class", dest="kind", choices=["simple", "fork"], default="simple")
    parser.add_argument("--jobs", type=int, default=20000, help="no-op jobs for the bare-RQ baseline")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured pipeline time")
    parser.add_argument(
        "--hz",
        type=float,
        default=20.0,
        help="simulator frames per second (enough to keep the workers saturated)",
    )
    parser.add_argument(
        "--legacy", type=Path, default=Path(__file__).resolve().parents[2] / "shared/legacy/features.json"
    )
    args = parser.parse_args(argv)
    setup_logging("INFO")
    with tempfile.TemporaryDirectory(prefix="monitorx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        sup = Supervisor()
        try:
            url = start_redis(sup, tmp)
            noop = bare_rq(url, args.workers, args.kind, args.jobs)
            log.info("bare RQ: %.0f no-op jobs/s", noop)
            redis.Redis.from_url(url).flushall()
            run = pipeline(url, tmp, args.workers, args.kind, args.seconds, args.hz, args.legacy)
        finally:
            sup.stop_all()
    f2a, e2s = run["frame_to_alert_ms"], run["enqueue_to_start_ms"]
    result = {
        "workers": args.workers,
        "worker_class": args.kind,
        "evals_per_s": round(run["evals_per_s"], 1),
        "rq_noop_jobs_per_s": round(noop, 1),
        "ratio": round(run["evals_per_s"] / noop, 3),
        "frame_to_alert_p50_ms": round(statistics.median(f2a), 1) if f2a else None,
        "frame_to_alert_p99_ms": round(_pct(f2a, 0.99), 1) if f2a else None,
        "enqueue_to_start_p99_ms": round(_pct(e2s, 0.99), 1) if e2s else None,
        "coalesced": run["coalesced"],
        "frames": run["frames"],
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
    }
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    return 0
