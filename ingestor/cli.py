"""``monitorx ingest``: run the Galio ingestor until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidProxy, InvalidURI

from ingestor.client import GiveUp, run
from ingestor.record import Recorder
from shared.cli import EXIT_USAGE, settings_or_exit
from shared.heartbeat import Beater
from shared.lifecycle import setup_logging
from shared.redisio import connect
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_GAVE_UP = 0, 1
CONFIG_ERRORS = (InvalidURI, InvalidProxy, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitorx ingest",
        description="Receive the Galio account feed and publish normalized snapshots to Redis. "
        "Settings come from MONITORX_* environment variables and .env (see shared/settings.py).",
    )
    parser.add_argument(
        "--record", type=Path, metavar="PATH", help="append every raw frame to this JSONL file"
    )
    parser.add_argument("--uri", metavar="WS_URI", help="Galio endpoint, overriding MONITORX_GALIO_URI")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 stopped by a signal, 1 gave up on a fatal feed error, 2 invalid settings."""
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    try:
        setup_logging(settings.log_level, settings.log_format)
    except ValueError as exc:
        return _usage_error(f"invalid setting MONITORX_LOG_LEVEL: {exc}")
    try:
        recorder = None if settings.record is None else Recorder(settings.record)
    except OSError as exc:
        return _usage_error(f"cannot open the record file: {exc}")
    with recorder or contextlib.nullcontext():
        return _run(settings, recorder)


def _run(settings: IngestSettings, recorder: Recorder | None) -> int:
    r = connect(str(settings.redis_url))
    beater = Beater(r, settings.keys, "ingestor", heartbeat_name(settings))
    try:
        asyncio.run(run(settings, r, recorder=recorder, beater=beater))
    except GiveUp as exc:
        # A configuration error needs no traceback (and an invalid URI's may show user info).
        log.error("ingestor gave up: %s", exc, exc_info=not isinstance(exc.__cause__, CONFIG_ERRORS))
        return EXIT_GAVE_UP
    return EXIT_OK


def heartbeat_name(settings: IngestSettings) -> str:
    """The ingestor's name in its heartbeat: ``{feed}-{hostname}`` (one per feed and host,
    stable across restarts, like the dispatcher's and the alerter's consumer names)."""
    return f"{settings.feed_name}-{socket.gethostname()}"


def _settings(args: argparse.Namespace) -> IngestSettings:
    """IngestSettings from the environment and the command line; exits 2 naming a bad variable."""
    overrides: dict[str, Any] = {}
    if args.record is not None:
        overrides["record"] = args.record
    if args.uri is not None:
        overrides["galio_uri"] = args.uri
    return settings_or_exit(lambda: IngestSettings(**overrides))


def _usage_error(message: str) -> int:
    sys.stderr.write(f"monitorx ingest: {message}\n")
    return EXIT_USAGE
