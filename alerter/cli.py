"""``monitorx alert`` (also ``python -m alerter``): deliver alerts from the stream to the sinks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import redis

from alerter.service import Alerter
from alerter.sinks import Sink, build_sinks
from shared.cli import EXIT_USAGE, settings_or_exit
from shared.lifecycle import Stopper, setup_logging
from shared.redisio import connect
from shared.settings import AlertSettings

log = logging.getLogger(__name__)

REDIS_BACKOFF = 2.0
"""Seconds to wait after a Redis error before the next step."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx alert",
        description="Deliver alerts from the MonitorX alerts stream to the configured sinks: console "
        "(MONITORX_CONSOLE), a JSONL file (MONITORX_ALERTS_JSONL), Slack (MONITORX_SLACK_WEBHOOK_URL) "
        "and an HTTP webhook (MONITORX_WEBHOOK_URL). Settings come from MONITORX_* variables.",
    )
    parser.add_argument("--console", action="store_true", help="also print each alert on standard output")
    parser.add_argument("--jsonl", type=Path, help="append delivered alerts to this JSONL file")
    parser.add_argument("--consumer", help="consumer name in the alert group (default: alert-<pid>)")
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
    """Step until stopped; a Redis outage is logged and waited out, never fatal."""
    while not stopper.is_set():
        try:
            alerter.step()
        except redis.RedisError as exc:
            log.error("redis error, retrying in %.0f s: %s", REDIS_BACKOFF, exc)
            stopper.wait(REDIS_BACKOFF)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    sinks = _sinks(settings)
    stopper = Stopper().install()
    r = connect(str(settings.redis_url))
    alerter = Alerter.from_settings(r, settings, sinks, stopping=stopper.is_set)
    log.info("alerter %s delivering to: %s", settings.consumer, ", ".join(s.name for s in sinks) or "nothing")
    run(alerter, stopper)
    try:
        alerter.close()
    except redis.RedisError as exc:
        log.warning("could not leave the consumer group: %s", exc)
    log.info("alerter %s stopped", settings.consumer)
    return 0
