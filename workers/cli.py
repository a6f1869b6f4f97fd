"""``monitorx worker``: an RQ worker running MonitorX check jobs (JSON serializer, allowlist)."""

from __future__ import annotations

import argparse
import logging
import uuid

from engine.plan import load_plan
from engine.reload import PlanSource
from shared.cli import config_or_exit, settings_or_exit
from shared.heartbeat import Beater
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import Outage, connect
from shared.settings import WorkerSettings
from workers.context import Context
from workers.worker import MonitorForkWorker, MonitorSimpleWorker, make_worker, run_worker

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
    parser.add_argument(
        "--name", help="worker name shown by rq info and in its heartbeat (default: a random hex id, as rq's)"
    )
    args = parser.parse_args(argv)
    settings = settings_or_exit(WorkerSettings)
    setup_logging(settings.log_level, settings.log_format)
    plan = config_or_exit(lambda: load_plan(settings.config))
    url = str(settings.redis_url)
    context = Context(connect(url), settings.keys, plan)
    source = PlanSource(settings.config, plan).install_sighup()
    kind = args.kind or settings.worker_class
    rq_connection = connect(url, decode=False)
    name = args.name or settings.name or uuid.uuid4().hex  # one name for the process's life
    beater = Beater(connect(url), settings.keys, "worker", name)  # its own client: safe to fork

    def make() -> MonitorSimpleWorker | MonitorForkWorker:
        return make_worker(kind, rq_connection, context, name=name, source=source)

    log.info("worker %s (%s) running %d instances", name, kind, len(plan.bound))
    stopper = Stopper().install()
    level = settings.log_level.upper()
    run_worker(make, stopper, Outage("worker"), burst=args.burst, level=level, beater=beater)
    return 0
