"""``monitorx alert`` (also ``python -m alerter``): deliver alerts from the stream to the sinks."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

import redis

from alerter.service import Alerter, sink_group
from alerter.sinks import Sink, build_sinks
from shared.cli import EXIT_USAGE, settings_or_exit
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import Outage, connect, ride_out
from shared.settings import AlertSettings

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx alert",
        description="Deliver alerts from the MonitorX alerts stream to the configured sinks: console "
        "(MONITORX_CONSOLE), a JSONL file (MONITORX_ALERTS_JSONL), Slack (MONITORX_SLACK_WEBHOOK_URL) "
        "and an HTTP webhook (MONITORX_WEBHOOK_URL). Settings come from MONITORX_* variables.",
    )
    parser.add_argument("--console", action="store_true", help="also print each alert on standard output")
    parser.add_argument("--jsonl", type=Path, help="append delivered alerts to this JSONL file")
    parser.add_argument(
        "--consumer",
        help="consumer name in the alert groups, keep it stable across restarts "
        "(default: MONITORX_CONSUMER, else alert-<hostname>)",
    )
    return parser


def _settings(args: argparse.Namespace) -> AlertSettings:
    settings = settings_or_exit(AlertSettings)
    overrides: dict[str, object] = {}
    if args.console:
        overrides["console"] = True
    if args.jsonl is not None:
        overrides["alerts_jsonl"] = args.jsonl
    if args.consumer:
        overrides["consumer"] = args.consumer
    return settings.model_copy(update=overrides)


def _sinks(settings: AlertSettings) -> list[Sink]:
    try:
        sinks = build_sinks(settings)
    except ValueError as exc:
        sys.stderr.write(f"invalid setting: {exc}\n")  # the message never holds the URL
        raise SystemExit(EXIT_USAGE) from None
    if not sinks:
        log.warning(
            "no sink configured (MONITORX_CONSOLE, MONITORX_ALERTS_JSONL, MONITORX_SLACK_WEBHOOK_URL, "
            "MONITORX_WEBHOOK_URL or --console): alerts stay queued on the stream, undelivered"
        )
    return sinks


def run(alerter: Alerter, stopper: Stopper) -> None:
    """Step until stopped, riding out Redis outages of any length (``shared.redisio.ride_out``):
    one log line when Redis goes away and one when it is back, and after every Redis error
    ``start()`` again, which recreates the consumer group of a Redis that came back empty."""
    ride_out(alerter, stopper, Outage(f"alerter {alerter.group}"))


def run_all(alerters: list[Alerter], stopper: Stopper) -> None:
    """One delivery loop per sink, each in its own thread (the first in this one), so a sink that
    hangs or is down never delays the others. All stop together on SIGTERM/SIGINT, each after the
    entry in hand."""
    threads = [threading.Thread(target=run, args=(a, stopper), name=f"sink-{a.group}") for a in alerters[1:]]
    for thread in threads:
        thread.start()
    if alerters:
        run(alerters[0], stopper)
    else:
        while not stopper.wait(1.0):  # nothing to deliver to: idle until told to stop
            continue
    for thread in threads:
        thread.join()


def _close(alerter: Alerter) -> None:
    try:
        alerter.close()
    except redis.RedisError as exc:
        log.warning("could not leave the consumer group %s: %s", alerter.group, exc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    sinks = _sinks(settings)
    stopper = Stopper().install()
    r = connect(str(settings.redis_url))
    alerters = [
        Alerter.from_settings(r, settings, [sink], stopping=stopper.is_set, group=sink_group(sink.name))
        for sink in sinks
    ]
    log.info("alerter %s delivering to: %s", settings.consumer, ", ".join(s.name for s in sinks) or "nothing")
    run_all(alerters, stopper)
    for alerter in alerters:
        _close(alerter)
    log.info("alerter %s stopped", settings.consumer)
    return 0
