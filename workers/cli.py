"""``monitorx worker``: an RQ worker running MonitorX check jobs (JSON serializer, allowlist)."""

from __future__ import annotations

import argparse
import logging

from shared.cli import config_or_exit, settings_or_exit
from shared.lifecycle import setup_logging
from shared.redisio import connect
from shared.settings import WorkerSettings
from workers.context import Context
from workers.plan import load_plan
from workers.reload import PlanSource
from workers.worker import make_worker

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="monitorx worker",
        description="Run check jobs from the MonitorX queue. Scale with more processes "
        "(docker compose up --scale worker=N). Settings come from MONITORX_* variables.",
    )
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument(
        "--class", dest="kind", choices=["simple", "fork"], help="worker class (default: settings)"
    )
    parser.add_argument("--name", help="worker name shown by rq info")
    args = parser.parse_args(argv)
    settings = settings_or_exit(WorkerSettings)
    setup_logging(settings.log_level, settings.log_format)
    plan = config_or_exit(lambda: load_plan(settings.config))
    url = str(settings.redis_url)
    context = Context(connect(url), settings.keys, plan)
    source = PlanSource(settings.config, plan).install_sighup()
    worker = make_worker(
        args.kind or settings.worker_class,
        connect(url, decode=False),
        context,
        name=args.name or settings.name,
        source=source,
    )
    log.info(
        "worker %s (%s) running %d instances",
        worker.name,
        args.kind or settings.worker_class,
        len(plan.bound),
    )
    worker.work(burst=args.burst, logging_level=settings.log_level.upper(), with_scheduler=False)
    return 0
