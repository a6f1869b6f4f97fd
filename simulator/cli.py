"""``python -m simulator`` (and ``monitorx simulate``): run a Galio-compatible feed.

Prints ``simulator listening on ws://HOST:PORT`` once the port is bound, then serves until
SIGINT/SIGTERM, ``--seconds`` or the end of the stream (``--max-frames`` reached, or a replay
without ``--loop`` done). Exit status: 0 after a clean stop, 1 when the stream or the listening
socket failed, 2 for invalid options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from simulator.frames import PRESETS, Scenario, preset
from simulator.server import ReplayOptions, SimulatorConfig, SimulatorServer

logger = logging.getLogger(__name__)


def _optional_time(text: str) -> float | None:
    """A time in seconds, or ``off``/``none`` to drop the incident."""
    if text.strip().lower() in {"off", "none"}:
        return None
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulator", description="A Galio-compatible WebSocket feed.")
    _add_server_options(parser)
    _add_scenario_options(parser)
    _add_replay_options(parser)
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 binds a free port")
    for name in ("username", "password"):
        var = f"MONITORX_GALIO_{name.upper()}"
        parser.add_argument(f"--{name}", default=os.environ.get(var) or None, help=f"default: env {var}")
    parser.add_argument("--hz", type=float, default=2.0, help="frames per second; 0 = as fast as possible")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--ping-interval", type=float, default=20.0, help="server pings; 0 = none")
    parser.add_argument("--log-level", default="INFO")


def _add_scenario_options(parser: argparse.ArgumentParser) -> None:
    keep = argparse.SUPPRESS
    parser.add_argument("--scenario", choices=PRESETS, default="demo")
    accounts_help = "Binance accounts (default: the scenario's, 3; quiet: 12)"
    parser.add_argument("--accounts", type=int, default=keep, help=accounts_help)
    parser.add_argument("--no-okx", dest="okx", action="store_false", default=keep, help="no OKX account")
    parser.add_argument("--seed", type=int, default=keep)
    for name in ("low-at", "pause-at", "delta-at"):
        parser.add_argument(f"--{name}", type=_optional_time, default=keep, help="seconds, or off")
    parser.add_argument("--pause-for", type=float, default=keep)
    parser.add_argument("--low-account", type=int, default=keep)
    parser.add_argument("--delta-account", type=int, default=keep)


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replay", type=Path, default=None, help="JSONL recording to replay")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed; 0 = as fast as possible")
    parser.add_argument("--loop", action="store_true", help="replay the recording forever")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The ``--scenario`` preset with the Scenario fields given on the command line overriding it
    (the scenario options default to absent, so a field not given keeps the preset's value)."""
    overrides = {f.name: getattr(args, f.name) for f in fields(Scenario) if hasattr(args, f.name)}
    return preset(args.scenario, **overrides)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    replay = None if args.replay is None else ReplayOptions(args.replay, speed=args.speed, loop=args.loop)
    return SimulatorConfig(
        scenario=scenario_from_args(args),
        host=args.host,
        port=args.port,
        username=args.username,
        password=args.password,
        hz=args.hz,
        max_frames=args.max_frames,
        replay=replay,
        ping_interval=args.ping_interval or None,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the simulator; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(config, args.seconds))


async def _run(config: SimulatorConfig, seconds: float | None) -> int:
    stop = asyncio.Event()
    _on_signals(stop.set)
    try:
        async with SimulatorServer(config) as server:
            print(f"simulator listening on {server.url}", flush=True)
            return await _serve(server, stop, seconds)
    except OSError as exc:
        logger.error("simulator failed: %s", exc)
        return 1


async def _serve(server: SimulatorServer, stop: asyncio.Event, seconds: float | None) -> int:
    """Wait for a signal, the time limit or the end of the stream; 1 if the stream failed."""
    stopped = asyncio.create_task(stop.wait())
    finished = asyncio.create_task(server.wait_finished())
    await asyncio.wait({stopped, finished}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, finished):
        task.cancel()
    await asyncio.gather(stopped, finished, return_exceptions=True)
    failure = None if finished.cancelled() else finished.exception()
    if failure is not None:
        logger.error("stream failed: %s", failure)
        return 1
    return 0


def _on_signals(callback: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            logger.debug("cannot handle %s here (not the main thread?)", sig.name)
