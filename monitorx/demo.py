"""``monitorx demo``: the whole pipeline on an embedded default.

A private redis-server on a free port in a temporary directory, the Galio simulator with its
demo incidents (a low balance at 3 s, a 20 s pause from 8 s), the ingestor, the dispatcher, two
RQ workers and the alerter printing to the console (and to a JSONL file). Runs until Ctrl-C or
``--seconds``; then stops every child and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections import Counter
from pathlib import Path

from monitorx.procs import Supervisor, free_port, start_redis
from shared.lifecycle import Stopper, setup_logging

log = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"


def _env(redis_url: str, sim_port: int, tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {
        "MONITORX_REDIS_URL": redis_url,
        "MONITORX_GALIO_URI": f"ws://127.0.0.1:{sim_port}",
        "MONITORX_GALIO_USERNAME": DEMO_USER,
        "MONITORX_GALIO_PASSWORD": DEMO_PASSWORD,
        "MONITORX_CONSOLE": "1",
        "MONITORX_ALERTS_JSONL": str(args.jsonl or tmp / "alerts.jsonl"),
        "MONITORX_LOG_LEVEL": args.log_level,
        "MONITORX_TICK_SECONDS": "2",
    }
    if args.config:
        env["MONITORX_CONFIG"] = str(Path(args.config).resolve())
    return env


def _start(sup: Supervisor, env: dict[str, str], ports: tuple[int, int], args: argparse.Namespace) -> None:
    """The simulator (its credentials from ``env``, as the ingestor's) on ``ports[0]``, the status
    page on ``ports[1]``, alerter, workers, dispatcher and ingestor, in that order."""
    sim_port, web_port = ports
    sim_args = ["--port", str(sim_port), "--scenario", "demo", "--hz", str(args.hz)]
    sup.python("simulator", "simulator", sim_args, env=env)
    sup.python("web", "monitorx", ["web", "--port", str(web_port)], env=env)
    sup.python("alerter", "alerter", [], env=env)
    for n in range(args.workers):
        sup.python(f"worker-{n + 1}", "workers", ["--name", f"demo-worker-{n + 1}"], env=env)
    sup.python("dispatcher", "dispatcher", [], env=env)
    sup.python("ingestor", "ingestor", [], env=env)


def _summary(path: Path) -> str:
    lines = path.read_text().splitlines() if path.exists() else []
    counts = Counter(f"{record['check']} {record['state']}" for record in map(json.loads, lines))
    return ", ".join(f"{n} x {what}" for what, n in sorted(counts.items())) or "no alert was delivered"


def _watch(sup: Supervisor, stopper: Stopper, seconds: float | None) -> int:
    waited = 0.0
    while not stopper.wait(0.5):
        waited += 0.5
        if dead := sup.exited():
            log.error(
                "%s exited unexpectedly (code %s): stopping the demo", dead[0].name, dead[0].proc.returncode
            )
            return 1
        if seconds is not None and waited >= seconds:
            break
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="monitorx demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers to start (default 2)")
    parser.add_argument("--hz", type=float, default=2.0, help="simulator frames per second (default 2)")
    parser.add_argument("--config", help="configuration file (default: the built-in demo configuration)")
    parser.add_argument("--jsonl", type=Path, help="also keep delivered alerts in this JSONL file")
    parser.add_argument("--log-level", default="WARNING", help="log level of the child processes")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    stopper = Stopper().install()
    sup = Supervisor()
    with tempfile.TemporaryDirectory(prefix="monitorx-demo-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            redis_url = start_redis(sup, tmp)
            sim_port, web_port = free_port(), free_port()
            env = _env(redis_url, sim_port, tmp, args)
            _start(sup, env, (sim_port, web_port), args)
            web = f"http://127.0.0.1:{web_port}"
            print(
                f"MonitorX demo running on {redis_url} (simulated Galio on ws://127.0.0.1:{sim_port}).\n"
                f"Status page: {web}/   JSON: {web}/api/status   Prometheus metrics: {web}/metrics\n"
                f"Status in a terminal:  MONITORX_REDIS_URL={redis_url} .venv/bin/monitorx status\n"
                f"Watch the queue and workers:  .venv/bin/rq info --url {redis_url}\n"
                f"Alerts appear below; Ctrl-C stops everything.",
                flush=True,
            )
            code = _watch(sup, stopper, args.seconds)
        finally:
            codes = sup.stop_all()
        print(
            f"demo stopped (exit codes: {', '.join(f'{k}={v}' for k, v in codes.items())}); "
            f"delivered: {_summary(Path(env['MONITORX_ALERTS_JSONL']))}",
            flush=True,
        )
    return code
